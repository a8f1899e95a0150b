"""`kb reproduce --all --launcher submitit` and `kb sweep --launcher submitit`: one job per paper (or per swept
method) on a Slurm cluster (or local processes), collected into the same summary and files as a local run.

submitit (the optional `cluster` extra) submits `batch.run_one` once per paper as a Slurm job array; each job
loads the model, runs its paper and, with `--commit`, writes `reproductions/<paper>.json` itself (the checkout
must be on a file system the nodes share). The command waits for the jobs and prints the usual summary; a job
that failed or was cancelled fails its paper, not the others. Without Slurm (`sbatch` not found) submitit runs
the jobs as local processes (`KB_SUBMITIT_CLUSTER=local` forces that; the tests use it). Papers do not share a
dense baseline across jobs: each job measures its own.

A sweep runs one job per method (`sweep_one`): each job measures the dense model and its method at every value,
and `run_sweep_submitit` joins them into one `kb.results.Sweep` (the dense run of the first job; every job's
dense numbers must agree with it, else the sweep fails: jobs on different hardware would mix baselines), with the
content hash of all the methods' code, as `kb sweep` would write it.

Settings (environment): `KB_SUBMITIT_FOLDER` (job logs and pickles; default `results/submitit` in the checkout),
`KB_SUBMITIT_CLUSTER` (`slurm`, `local` or `debug`; default: Slurm when available), `KB_SLURM_PARTITION`,
`KB_SLURM_TIME_MIN` (per job, default 120), `KB_SLURM_CPUS` (per job, default 4), `KB_SLURM_MEM_GB` (default 16),
`KB_SLURM_PARALLEL` (jobs of the array running at once, default 16).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kb.errors import KBError
from kb.results import SCHEMA_VERSION, Sweep

from .batch import PaperResult, run_one
from .runner import Log, RunOptions, stderr_log

EXTRA_HINT = "install the optional extra: .venv/bin/pip install -e '.[cluster]'"
CLUSTERS = ("slurm", "local", "debug")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise KBError(f"${name} must be a positive integer, got {value!r}")
    return int(value)


def job_folder() -> Path:
    """Where submitit keeps job logs and pickles: `$KB_SUBMITIT_FOLDER`, else `results/submitit` in the checkout."""
    from kb.paths import repo_root

    return Path(os.environ.get("KB_SUBMITIT_FOLDER") or repo_root() / "results" / "submitit")


def executor(folder: Path) -> Any:
    """A submitit executor configured from the environment (see the module docstring)."""
    try:
        import submitit
    except ImportError:
        raise KBError(f"--launcher submitit needs submitit, which is not installed; {EXTRA_HINT}") from None
    cluster = os.environ.get("KB_SUBMITIT_CLUSTER", "").strip() or None
    if cluster is not None and cluster not in CLUSTERS:
        raise KBError(f"$KB_SUBMITIT_CLUSTER must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    params: dict[str, Any] = {  # every setting is checked before submitit creates its folder
        "name": "kb-reproduce",
        "timeout_min": _env_int("KB_SLURM_TIME_MIN", 120),
        "cpus_per_task": _env_int("KB_SLURM_CPUS", 4),
        "mem_gb": _env_int("KB_SLURM_MEM_GB", 16),
        "slurm_array_parallelism": _env_int("KB_SLURM_PARALLEL", 16),
    }
    if os.environ.get("KB_SLURM_PARTITION"):
        params["slurm_partition"] = os.environ["KB_SLURM_PARTITION"]
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(**params)
    return ex


def run_submitit(
    papers: list[str],
    explicit: dict[str, Any],
    *,
    folder: Path,
    commit_dir: Path | None = None,
    log: Log = stderr_log,
) -> list[PaperResult]:
    """Every paper as one job of an array; results in paper order, as `batch.run_all` returns them."""
    ex = executor(folder)
    threads = explicit.get("threads") or _env_int("KB_SLURM_CPUS", 4)
    options = {**explicit, "threads": threads}
    target = str(commit_dir) if commit_dir is not None else None
    n = len(papers)
    jobs = ex.map_array(run_one, papers, [options] * n, [target] * n)
    log(f"kb: submitted {n} job(s) through submitit ({ex.cluster}); logs in {folder}")
    start = time.perf_counter()
    results: list[PaperResult] = []
    for paper, job in zip(papers, jobs, strict=True):
        try:
            row = job.result()
        except Exception as exc:  # noqa: BLE001 - a failed or cancelled job fails its paper, not the others
            first = str(exc).strip().splitlines()
            reason = first[-1] if first else type(exc).__name__
            results.append(
                PaperResult(paper, time.perf_counter() - start, error=f"job {job.job_id}: {reason}")
            )
            log(f"kb: {paper}: FAILED (job {job.job_id})")
            continue
        results.append(PaperResult.from_row(row))
        log(f"kb: {paper}: {results[-1].verdict} (job {job.job_id})")
    return results


def sweep_one(name: str, method: str, axis: str, values: list[Any], options: dict[str, Any], probe: bool,
              speed: bool) -> str:  # fmt: skip
    """One method's part of a sweep in a fresh process (a cluster job): the partial `Sweep` as JSON."""
    from .report import to_json
    from .runner import sweep

    return to_json(sweep(name, [method], axis, values, RunOptions(**options), probe=probe, speed=speed))  # type: ignore[arg-type]


def join_sweeps(name: str, methods: list[str], values: list[Any], parts: list[Sweep]) -> Sweep:
    """One sweep from one part per method (in `methods` order), ordered as a local `kb sweep` orders its runs."""
    from .. import registry

    first = parts[0]
    dense = first.runs[0]
    for method, part in zip(methods, parts, strict=True):
        if part.runs[0].metrics.ppl != dense.metrics.ppl or part.dataset != first.dataset:
            ppl = part.runs[0].metrics.ppl
            raise KBError(f"the job of {method} measured another dense baseline (perplexity {ppl} against "
                          f"{dense.metrics.ppl}): its node differs; rerun")  # fmt: skip
    by_label = {r.label: r for part in parts for r in part.runs[1:]}
    runs = [dense, *(by_label[f"{m}@{v}"] for v in values for m in methods)]
    return Sweep(
        schema_version=SCHEMA_VERSION, name=name, model=first.model, axis=first.axis, values=first.values,
        methods=methods, dataset=first.dataset, config=first.config, versions=first.versions,
        total_seconds=round(sum(p.total_seconds or 0.0 for p in parts), 2), runs=runs,
        code=registry.sweep_code(methods), produced=first.produced, machine=first.machine,
    )  # fmt: skip


def run_sweep_submitit(
    name: str,
    methods: list[str],
    axis: str,
    values: list[Any],
    options: RunOptions,
    *,
    probe: bool,
    speed: bool,
    folder: Path,
    log: Log = stderr_log,
) -> Sweep:
    """`kb sweep --launcher submitit`: one job per method, joined (`join_sweeps`); any failed job fails the sweep."""
    import dataclasses

    ex = executor(folder)
    fields = dataclasses.asdict(options)
    fields["threads"] = options.threads or _env_int("KB_SLURM_CPUS", 4)
    n = len(methods)
    jobs = ex.map_array(sweep_one, [name] * n, methods, [axis] * n, [values] * n, [fields] * n, [probe] * n,
                        [speed] * n)  # fmt: skip
    log(f"kb: submitted {n} sweep job(s), one per method, through submitit ({ex.cluster}); logs in {folder}")
    parts = []
    for method, job in zip(methods, jobs, strict=True):
        try:
            parts.append(Sweep.model_validate_json(job.result()))
        except Exception as exc:  # noqa: BLE001 - one line naming the job, whatever it raised
            lines = str(exc).strip().splitlines()
            raise KBError(f"sweep job of {method} ({job.job_id}) failed: {lines[-1] if lines else type(exc).__name__}"
                          ) from None  # fmt: skip
        log(f"kb: {method}: done (job {job.job_id})")
    return join_sweeps(name, methods, values, parts)
