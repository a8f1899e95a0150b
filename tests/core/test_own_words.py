"""Own words: no take-away, note, key finding or challenge note shares 8 or more consecutive words with the seed
documents the project started from. Titles, author lists, venue names and links are facts and do
not count. The seeds live outside the repository (CI puts a read-only `shared/` beside the
checkout); without them the check is skipped, not failed."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kb.store import load_kb

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(os.environ.get("KB_SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
RUN = 8  # words in a row that count as copying
VENUE_NAMES = [  # long venue names that may legitimately appear word for word
    "Findings of the Association for Computational Linguistics",
    "International Conference on Learning Representations",
    "International Conference on Machine Learning",
    "Advances in Neural Information Processing Systems",
    "Proceedings of the VLDB Endowment",
    "Conference on Machine Learning and Systems",
    "Transactions on Machine Learning Research",
    "ICML 2024 Workshop on Theoretical Foundations of Foundation Models",
    "ICLR Workshop on Mathematical and Empirical Understanding of Foundation Models",
]
_URL = re.compile(r"https?://\S+")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", _URL.sub(" ", text).lower())


def runs(ws: list[str], n: int = RUN) -> set[tuple[str, ...]]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def copied_runs(text: str, seed_runs: set, exempt: set) -> list[str]:
    """The 8-word runs of `text` that also occur in a seed, except those inside an exempt phrase."""
    return sorted(" ".join(r) for r in runs(words(text)) & seed_runs - exempt)


def exempt_runs(kb) -> set[tuple[str, ...]]:
    phrases = list(VENUE_NAMES)
    for p in kb.papers:
        phrases += [p.title, ", ".join(p.authors), " ".join(p.authors), " and ".join(p.authors)]
        phrases += [e.title for e in p.earlier_versions]
    return {r for phrase in phrases for r in runs(words(phrase))}


def test_detector_finds_an_eight_word_copy_and_allows_seven_and_titles():
    seed = runs(words("Pruning removes the redundant weights of a network while keeping its accuracy high."))
    exempt = runs(words("the redundant weights of a network while keeping its accuracy"))
    copied = "In short it removes the redundant weights of a network while keeping quality."
    assert copied_runs(copied, seed, set()) == [
        "removes the redundant weights of a network while",
        "the redundant weights of a network while keeping",
    ]
    assert copied_runs("It removes the redundant weights of a network, then stops.", seed, set()) == []
    assert (
        copied_runs(copied, seed, exempt | runs(words("removes the redundant weights of a network while")))
        == []
    )
    assert (
        copied_runs(
            "See https://example.org/pruning/removes/the/redundant/weights/of/a/network/while", seed, set()
        )
        == []
    )


def _texts(kb):
    for rec in kb.records:
        yield rec.file, "takeaway", rec.paper.takeaway
        if rec.paper.notes:
            yield rec.file, "notes", rec.paper.notes
        for i, finding in enumerate(rec.paper.findings):
            yield rec.file, f"findings[{i}].claim", finding.claim
    for note_id, text in sorted(kb.challenges.items()):
        yield f"challenge/{note_id}.md", "challenge", text


def test_records_and_notes_are_in_our_own_words():
    seed_files = sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []
    if not seed_files:
        pytest.skip(
            f"seed documents not found in {SEEDS} (CI places shared/ beside the checkout; "
            "or set KB_SEEDS_DIR)"
        )
    seed_runs = set().union(*(runs(words(f.read_text(encoding="utf-8"))) for f in seed_files))
    kb = load_kb(ROOT)
    exempt = exempt_runs(kb)
    found = [
        f"{file}: {field}: shares {RUN}+ words with a seed: '{run}'"
        for file, field, text in _texts(kb)
        for run in copied_runs(text, seed_runs, exempt)[:1]
    ]
    assert found == [], "\n".join(found)
