"""`kb reproduce --all --launcher submitit`: one job per paper through submitit, here its local executor (fresh
processes, as on a cluster node), collected into the same results and summary as a local run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kb.errors import KBError
from kb.results import Reproduction, Sweep
from kb_cli.main import main
from reference_impls.harness.batch import run_papers
from reference_impls.harness.launcher import run_submitit

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]
EXPLICIT = {"model": "random-llama", "nsamples": 4, "seqlen": 64, "eval_tokens": 256}


@pytest.fixture
def local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KB_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("KB_SLURM_CPUS", "1")
    # the jobs are new interpreters: they import this checkout, as nodes sharing its file system would
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return tmp_path / "jobs"


def _metrics(record: Reproduction) -> list[dict]:
    return [{k: v for k, v in r.metrics.model_dump().items() if k != "speed"} for r in record.runs]


def test_jobs_write_what_a_local_run_writes(local_cluster: Path, tmp_path: Path) -> None:
    jobs_dir, local_dir = tmp_path / "from-jobs", tmp_path / "local"
    jobs_dir.mkdir()
    local_dir.mkdir()
    lines: list[str] = []
    remote = run_submitit(["sparsegpt", "wanda"], EXPLICIT, folder=local_cluster, commit_dir=jobs_dir,
                          log=lines.append)  # fmt: skip
    assert [r.paper for r in remote] == ["sparsegpt", "wanda"] and all(r.record for r in remote)
    assert any("submitted 2 job(s)" in line for line in lines)
    local = run_papers(["sparsegpt", "wanda"], EXPLICIT, commit_dir=local_dir, log=lambda _m: None)
    for job, here in zip(remote, local, strict=True):
        written = Reproduction.model_validate_json(
            (jobs_dir / f"{job.paper}.json").read_text(encoding="utf-8")
        )
        assert written.claim.verdict == job.verdict == here.verdict
        assert _metrics(written) == _metrics(here.record)  # same numbers as in this process
        assert written.code == here.record.code and written.machine.threads == 1


def test_a_failed_paper_fails_alone(local_cluster: Path) -> None:
    results = run_submitit(["shortgpt", "wanda"], {**EXPLICIT}, folder=local_cluster, log=lambda _m: None)
    by = {r.paper: r for r in results}
    assert by["wanda"].record is not None and by["wanda"].error is None
    assert by["shortgpt"].record is None and "layers" in by["shortgpt"].error  # 6 layers of a 2-layer model


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["reproduce", "wanda", "--launcher", "submitit"], {}, "--launcher go with --all"),
        (
            ["reproduce", "--all", "--launcher", "submitit", "--jobs", "2"],
            {},
            "--jobs is for --launcher local",
        ),
        (["reproduce", "--all", "--launcher", "submitit"], {"KB_SUBMITIT_CLUSTER": "pbs"}, "must be one of"),
        (["reproduce", "--all", "--launcher", "submitit"], {"KB_SLURM_CPUS": "two"}, "positive integer"),
    ],
)
def test_bad_settings_are_one_line(argv, env, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KB_SUBMITIT_FOLDER", str(tmp_path / "jobs"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([*argv, *SMALL, "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "jobs").exists()


def test_missing_extra_names_it(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.setenv("KB_SUBMITIT_FOLDER", str(tmp_path / "jobs"))
    assert main(["reproduce", "--all", "--launcher", "submitit", *SMALL, "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -e '.[cluster]'" in err and len(err.splitlines()) == 1


def test_sweep_jobs_join_into_the_local_sweep(local_cluster: Path, tmp_path: Path) -> None:
    """`kb sweep --launcher submitit`: one job per method, joined into the sweep a local run writes (same runs in
    the same order, same numbers, the hash of all the methods' code)."""
    values = ["--sparsity", "0.3,0.6"]
    here, jobs = tmp_path / "local.json", tmp_path / "jobs.json"
    small = [*SMALL, "--name", "both"]
    assert main(["sweep", "magnitude", "wanda", *values, *small, "--json", str(here)]) == 0
    assert (
        main(["sweep", "magnitude", "wanda", *values, *small, "--launcher", "submitit", "--json", str(jobs)])
        == 0
    )
    local = Sweep.model_validate_json(here.read_text(encoding="utf-8"))
    joined = Sweep.model_validate_json(jobs.read_text(encoding="utf-8"))
    assert [r.label for r in joined.runs] == [r.label for r in local.runs] == [
        "dense", "magnitude@0.3", "wanda@0.3", "magnitude@0.6", "wanda@0.6"]  # fmt: skip
    assert [r.metrics.ppl for r in joined.runs] == [r.metrics.ppl for r in local.runs]
    assert joined.code == local.code and joined.methods == ["magnitude", "wanda"]
    assert joined.machine is not None and joined.machine.threads == 1


def test_join_refuses_jobs_with_different_baselines(local_cluster: Path) -> None:
    from reference_impls.harness.launcher import join_sweeps
    from reference_impls.harness.runner import sweep, sweep_options

    options = sweep_options(["magnitude"], EXPLICIT)
    part = sweep("x", ["magnitude"], "sparsity", [0.5], options, log=lambda _m: None)
    dense = part.runs[0].model_copy(update={"metrics": part.runs[0].metrics.model_copy(update={"ppl": 1.0})})
    other = part.model_copy(update={"runs": [dense, *part.runs[1:]]})
    with pytest.raises(KBError, match="measured another dense baseline"):
        join_sweeps("x", ["magnitude", "magnitude"], [0.5], [part, other])
