"""The GitHub workflows name only files that exist, every job has a time limit, and the test jobs cover the
Python versions the project declares (a cache key over a missing file never changes; a job without a limit can
hang for six hours)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
_HASHED = re.compile(r"hashFiles\(([^)]*)\)")
_SCRIPT = re.compile(r"\b(scripts/[\w./-]+|\.ci/[\w./-]+)")


def _runs(job: dict) -> list[str]:
    return [str(step.get("run", "")) for step in job.get("steps", [])]


def test_every_path_a_workflow_names_exists() -> None:
    assert WORKFLOWS
    for wf in WORKFLOWS:
        text = wf.read_text(encoding="utf-8")
        for args in _HASHED.findall(text):
            for path in re.findall(r"'([^']+)'", args):
                assert list(ROOT.glob(path)), f"{wf.name}: hashFiles names {path}, which does not exist"
        for path in _SCRIPT.findall(text):
            assert (ROOT / path).exists(), f"{wf.name}: names {path}, which does not exist"


def test_every_job_has_a_time_limit() -> None:
    for wf in WORKFLOWS:
        jobs = yaml.safe_load(wf.read_text(encoding="utf-8"))["jobs"]
        for name, job in jobs.items():
            assert isinstance(job.get("timeout-minutes"), int), (
                f"{wf.name}: job {name} has no timeout-minutes"
            )


def test_fast_tests_run_on_the_oldest_and_newest_python_and_slow_tests_once() -> None:
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))["jobs"]
    fast, slow = jobs["tests-fast"], jobs["tests-slow"]
    assert fast["strategy"]["matrix"]["python"] == ["3.10", "3.12"]
    assert any('-m "not slow"' in r for r in _runs(fast)) and any("-m slow" in r for r in _runs(slow))
    declared = re.search(
        r'requires-python = ">=(3\.\d+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert declared and declared.group(1) == fast["strategy"]["matrix"]["python"][0]
