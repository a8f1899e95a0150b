"""The verdict issue's pre-registered list (data/verdict-preregistration.yaml): written from the committed results
before anything changed, it names which claims run several calibration draws. Its entries must stay consistent
with its own rule, and every claim it names must have a committed result."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_entry_follows_the_rule_and_names_a_committed_result() -> None:
    data = yaml.safe_load((ROOT / "data" / "verdict-preregistration.yaml").read_text(encoding="utf-8"))
    assert data["threshold"] == 0.10 and data["draws_when_within"] >= 3
    committed = {p.stem for p in (ROOT / "reproductions").glob("*.json")}
    assert data["claims"] and set(data["claims"]) <= committed
    for paper, entry in data["claims"].items():
        assert entry["within"] == (abs(entry["margin"]) < data["threshold"]), paper
        assert entry["part"].strip(), paper
