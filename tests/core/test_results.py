"""The shared result model: what the harness writes is what the site reads, non-finite numbers included."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from kb.results import Reproduction

_SIZE = {"params_total": 10, "params_non_embedding": 6, "params_decoder": 6, "weight_bytes": 40,
         "decoder_sparsity": 0.0, "layers": 2}  # fmt: skip


def _record(ppl: float) -> dict:
    return {
        "paper": "wanda", "model": "m",
        "dataset": {"corpus": "c", "calibration": {"samples": 1, "seqlen": 8, "tokens": 8, "stream_tokens": 9},
                    "evaluation": {"windows": 1, "seqlen": 8, "tokens": 8, "stream_tokens": 9}},
        "runs": [{"label": "dense", "kind": "dense", "metrics": {"ppl": ppl, "size": _SIZE}}],
        "claim": {"statement": "s", "holds": False},
    }  # fmt: skip


def test_non_finite_numbers_round_trip_as_strings():
    rec = Reproduction.model_validate(_record(math.inf))
    text = rec.model_dump_json()
    assert json.loads(text)["runs"][0]["metrics"]["ppl"] == "inf"
    assert Reproduction.model_validate_json(text).runs[0].metrics.ppl == math.inf


def test_unknown_fields_and_kinds_are_rejected():
    bad = _record(3.0)
    bad["runs"][0]["metrics"]["perplexity"] = 3.0
    with pytest.raises(ValidationError, match="perplexity"):
        Reproduction.model_validate(bad)
    bad = _record(3.0)
    bad["runs"][0]["kind"] = "magic"
    with pytest.raises(ValidationError):
        Reproduction.model_validate(bad)
