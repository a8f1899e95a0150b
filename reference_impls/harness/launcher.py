"""`kb reproduce --all --launcher submitit`: one job per paper on a Slurm cluster (or local processes), collected
into the same summary and committed files as a local run.

submitit (the optional `cluster` extra) submits `batch.run_one` once per paper as a Slurm job array; each job
loads the model, runs its paper and, with `--commit`, writes `reproductions/<paper>.json` itself (the checkout
must be on a file system the nodes share). The command waits for the jobs and prints the usual summary; a job
that failed or was cancelled fails its paper, not the others. Without Slurm (`sbatch` not found) submitit runs
the jobs as local processes (`KB_SUBMITIT_CLUSTER=local` forces that; the tests use it). Papers do not share a
dense baseline across jobs: each job measures its own.

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

from .batch import PaperResult, run_one
from .runner import Log, stderr_log

EXTRA_HINT = "install the optional extra: .venv/bin/pip install -e '.[cluster]'"
CLUSTERS = ("slurm", "local", "debug")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise KBError(f"${name} must be a positive integer, got {value!r}")
    return int(value)


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
