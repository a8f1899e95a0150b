"""Fixed numerics for fingerprints: a fresh interpreter with MKL's reproducible branch, AVX2 kernels and one
thread computes the same bits whatever instruction set MKL would otherwise pick on this machine."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from kb.results import Reproduction
from reference_impls.harness import steady_numerics as steady

ROOT = Path(__file__).resolve().parents[2]


def test_the_child_interpreter_starts_with_every_fixed_setting(capfd):
    code = "import os, sys; print(' '.join(k + '=' + os.environ.get(k, '-') for k in sys.argv[1:]))"
    assert steady._run(code, sorted(steady.STEADY_ENV)) == 0
    printed = capfd.readouterr().out.split()
    assert sorted(printed) == sorted(f"{k}={v}" for k, v in steady.STEADY_ENV.items())
    assert steady.STEADY_ENV["MKL_CBWR"] == "COMPATIBLE" and steady.STEADY_ENV["OMP_NUM_THREADS"] == "1"


def test_a_failing_child_passes_its_exit_status_and_its_error_on(capfd):
    assert steady._run("import sys; print('said before failing', file=sys.stderr); sys.exit(3)", []) == 3
    assert "said before failing" in capfd.readouterr().err


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="MKL's branches are x86-64's"
)
def test_sparsegpt_gets_the_same_fingerprint_whatever_instruction_set_mkl_would_pick(monkeypatch):
    """SparseGPT's fingerprint is the most sensitive to MKL's kernels (its Hessian inverses): without the fixed
    numerics an AVX2 branch and an AVX-512 branch give different books on one machine."""
    if steady.is_steady():
        pytest.skip("this interpreter already has the fixed numerics: nothing to vary")
    record = Reproduction.model_validate_json(
        (ROOT / "reproductions" / "sparsegpt.json").read_text(encoding="utf-8")
    )
    digests = []
    for isa in ("SSE4_2", "AVX2", "AVX512"):
        monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", isa)  # what MKL may use when it picks by itself
        fp, payload = steady.measure_record(record)
        assert payload["version"] == fp.version == 3
        digests.append(fp.digest)
    assert len(set(digests)) == 1, digests
