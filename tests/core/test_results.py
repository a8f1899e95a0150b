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
        "claim": {"statement": "s", "verdict": "does not hold"},
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


def test_figures_round_trip_and_reject_ragged_series():
    rec = _record(3.0)
    rec["figures"] = [{"key": "sweep", "title": "t", "x_label": "sparsity", "y_label": "ppl",
                       "series": [{"label": "magnitude", "x": [0.1, 0.5], "y": [3.0, math.inf]}]}]  # fmt: skip
    back = Reproduction.model_validate_json(Reproduction.model_validate(rec).model_dump_json())
    assert back.figures[0].series[0].y == [3.0, math.inf]
    rec["figures"][0]["series"][0]["y"] = [3.0]
    with pytest.raises(ValidationError, match="2 x values but 1 y values"):
        Reproduction.model_validate(rec)
    rec["figures"][0]["series"][0]["y"] = [3.0, 4.0]
    rec["figures"][0]["key"] = "Bad Key"
    with pytest.raises(ValidationError, match="key"):
        Reproduction.model_validate(rec)
