"""CI re-runs a small fixed set of committed claims on the real model and checks the committed verdict.

`kb build --check` already says whether a committed result was produced by today's code (its content hash); this
says whether today's code, run afresh, still gives that result. The set is small so that CI stays within its time
budget (Wanda: about a minute warm, two cold with the model conversion, on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.results import Reproduction
from kb_cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLAIMS = ("wanda",)  # fixed: cheap and decisive (magnitude collapses, Wanda does not)


@pytest.mark.parametrize("paper", CLAIMS)
def test_a_fresh_run_gives_the_committed_verdict(paper: str, tmp_path: Path, capsys) -> None:
    committed = Reproduction.model_validate_json(
        (REPO / "reproductions" / f"{paper}.json").read_text("utf-8")
    )
    out = tmp_path / f"{paper}.json"
    argv = ["reproduce", paper, "--model", committed.model, "--json", str(out)]
    if committed.config.get("all_runs"):
        argv.append("--all-runs")
    rc = main(argv)
    capsys.readouterr()
    fresh = Reproduction.model_validate_json(out.read_text("utf-8"))
    assert rc == (0 if fresh.claim.holds else 1)
    assert (fresh.claim.verdict, fresh.claim.statement) == (
        committed.claim.verdict,
        committed.claim.statement,
    ), f"committed: {committed.claim.reason}; fresh: {fresh.claim.reason}"
    assert [r.label for r in fresh.runs] == [r.label for r in committed.runs]
    for new, old in zip(fresh.runs, committed.runs, strict=True):
        # the same data, code and model: the numbers agree up to floating-point order (threads, CPU kernels)
        if old.metrics.ppl is not None:
            assert new.metrics.ppl == pytest.approx(old.metrics.ppl, rel=0.05), new.label
        assert new.metrics.size.decoder_sparsity == pytest.approx(old.metrics.size.decoder_sparsity, abs=1e-3)
