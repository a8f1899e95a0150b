"""Own words: no take-away, note, key finding or challenge note shares 8 or more consecutive words with
the documents it was written from. Titles, author lists, venue names and links are facts and do not
count.

Two kinds of source are checked, with the same word runs (`kb.ownwords`):

* the seed documents the project started from. They live outside the repository (CI puts a
  read-only `shared/` beside the checkout); without them that check is skipped, not failed;
* the official READMEs of the repositories each record cites. Their text is not in the repository
  either: `data/readme-shingles.json` holds salted hashes of their 8-word runs (built by
  `scripts/readme_shingles.py`), and each record's runs are hashed and looked up in those of the
  READMEs it cites. Without the file that check is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kb.ownwords import (
    FINGERPRINTS,
    RUN,
    cited_repos,
    copied_hashed_runs,
    copied_runs,
    load_fingerprints,
    run_hash,
    runs,
    words,
)
from kb.store import load_kb

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(os.environ.get("KB_SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
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


def test_hashed_detector_finds_an_eight_word_copy_of_a_readme_and_allows_seven_and_titles():
    readme = "Pruning removes the redundant weights of a network while keeping its accuracy high."
    salt = "test-salt"
    hashes = {run_hash(r, salt) for r in runs(words(readme))}
    assert all(len(h) == 16 for h in hashes)
    copied = "In short it removes the redundant weights of a network while keeping quality."
    assert copied_hashed_runs(copied, hashes, set(), salt) == [
        "removes the redundant weights of a network while",
        "the redundant weights of a network while keeping",
    ]
    assert (
        copied_hashed_runs("It removes the redundant weights of a network, then stops.", hashes, set(), salt)
        == []
    )
    title = runs(words("removes the redundant weights of a network while keeping"))
    assert copied_hashed_runs(copied, hashes, title, salt) == []
    # another salt gives other hashes: nothing matches, so the salt in the file must be the one used
    assert copied_hashed_runs(copied, hashes, set(), "other-salt") == []


def _record_texts(rec):
    yield rec.file, "takeaway", rec.paper.takeaway
    if rec.paper.notes:
        yield rec.file, "notes", rec.paper.notes
    for i, finding in enumerate(rec.paper.findings):
        yield rec.file, f"findings[{i}].claim", finding.claim


def _texts(kb):
    for rec in kb.records:
        yield from _record_texts(rec)
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


def test_records_do_not_copy_the_readmes_they_cite():
    path = ROOT / FINGERPRINTS
    if not path.is_file():
        pytest.skip(f"{FINGERPRINTS} not found (build it with scripts/readme_shingles.py)")
    prints = load_fingerprints(path)
    assert prints.run == RUN, f"{FINGERPRINTS} counts {prints.run}-word runs; rebuild it"
    kb = load_kb(ROOT)
    exempt = exempt_runs(kb)
    found = []
    for rec in kb.records:
        hashes = prints.for_repos(cited_repos(rec.paper))
        if not hashes:
            continue
        texts = list(_record_texts(rec))
        if rec.paper.id in kb.challenges:
            texts.append((f"challenge/{rec.paper.id}.md", "challenge", kb.challenges[rec.paper.id]))
        for file, field, text in texts:
            for run in copied_hashed_runs(text, hashes, exempt, prints.salt)[:1]:
                found.append(f"{file}: {field}: shares {RUN}+ words with a README it cites: '{run}'")
    assert found == [], "\n".join(found)
