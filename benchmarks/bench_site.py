"""Benchmark (not a test): validate, render and build the site for N synthetic records.

    .venv/bin/python benchmarks/bench_site.py                 # 1,000 and 10,000 records
    .venv/bin/python benchmarks/bench_site.py --sizes 1000 --mkdocs-up-to 1000

Writes a throwaway knowledge base (the real vocabulary, synthetic records and challenge notes) under a
temporary directory and times each stage separately:
  load       read and parse the YAML records (`kb.store.load_kb`)
  checks     cross-record checks (`kb.checks.check_all`; only up to --checks-up-to records)
  render     template data + every page and export in memory (`site_builder.build.render_all`)
  write      write the generated docs folder
  mkdocs     `mkdocs build --strict` of that folder (only up to --mkdocs-up-to records; slow)
Targets on 2 cores at 10,000 records: validation (load + checks) <= 5 s, rendering (render + write) <= 20 s,
growing linearly. Numbers go to stdout as a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "sparse",
    "pruning",
    "layer",
    "head",
    "token",
    "calibration",
    "outlier",
    "low-rank",
    "depth",
    "width",
    "gradient",
    "hessian",
    "mask",
    "budget",
    "distillation",
    "recovery",
    "kernel",
    "cache",
    "attention",
    "expert",
    "router",
    "block",
    "channel",
    "quantised",
    "dynamic",
    "global",
    "local",
)
MODELINE = "# yaml-language-server: $schema=../schema/paper.schema.json\n"


def synthetic_record(i: int, rng: random.Random, vocab) -> dict:
    def pick(axis: str, k: int = 1) -> list[str]:
        ids = [v.id for v in vocab[axis].values]
        return rng.sample(ids, k)

    year = rng.choice((2022, 2023, 2024, 2025))
    title = " ".join(rng.choice(WORDS) for _ in range(7)).capitalize() + f" number {i}"
    return {
        "id": f"synthetic-{i:05d}",
        "title": title,
        "authors": [f"Author {rng.randrange(5000)}" for _ in range(rng.randint(1, 6))],
        "year": year,
        "venue": {
            "name": rng.choice(("ICLR", "NeurIPS", "ICML", "ACL", "arXiv")),
            "year": year + rng.randint(0, 1),
            "kind": "conference",
        },
        "scope": "weight-pruning",
        "identifiers": {"arxiv": f"{(year % 100):02d}{rng.randint(1, 12):02d}.{i:05d}"},
        "links": {
            "paper": f"https://arxiv.org/abs/{i}",
            "code": [{"url": f"https://github.com/example/repo-{i}", "official": True}],
        },
        "tags": {
            "type": pick("type", rng.randint(1, 2)),
            "criteria": pick("criteria"),
            "budget": pick("budget"),
            "data": pick("data"),
            "retrain": pick("retrain"),
            "weight": pick("weight"),
        },
        "takeaway": f"Synthetic take-away {i}: " + " ".join(rng.choice(WORDS) for _ in range(25)) + ".",
    }


def make_kb(root: Path, n: int) -> None:
    from kb.vocab import load_vocabulary

    vocab = load_vocabulary(REPO / "concepts")
    shutil.copytree(REPO / "concepts", root / "concepts")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "docs").mkdir()
    shutil.copy(REPO / "docs" / "about.md", root / "docs" / "about.md")
    (root / "papers").mkdir()
    (root / "challenge").mkdir()
    rng = random.Random(n)
    for i in range(n):
        rec = synthetic_record(i, rng, vocab)
        (root / "papers" / f"{rec['id']}.yaml").write_text(MODELINE + yaml.safe_dump(rec, sort_keys=False))
        (root / "challenge" / f"{rec['id']}.md").write_text(
            f"Synthetic challenge note {i}: " + " ".join(rng.choice(WORDS) for _ in range(40)) + ".\n"
        )


def run(n: int, mkdocs: bool, checks: bool) -> dict[str, float]:
    from kb.checks import check_all
    from kb.store import load_kb
    from site_builder.build import render_all, run_mkdocs, write_docs

    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        root = Path(tmp) / "kb"
        make_kb(root, n)
        t = time.perf_counter()
        kb = load_kb(root)
        times["load"] = time.perf_counter() - t
        if checks:
            t = time.perf_counter()
            problems = check_all(kb)
            times["checks"] = time.perf_counter() - t
            if problems:
                sys.exit(f"synthetic records have problems: {problems[0]}")
        t = time.perf_counter()
        rendered = render_all(kb)
        times["render"] = time.perf_counter() - t
        t = time.perf_counter()
        write_docs(rendered.pages, Path(tmp) / "docs")
        times["write"] = time.perf_counter() - t
        if mkdocs:
            t = time.perf_counter()
            run_mkdocs(root / "mkdocs.yml", Path(tmp) / "docs", Path(tmp) / "site")
            times["mkdocs"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--mkdocs-up-to",
        type=int,
        default=1000,
        metavar="N",
        help="run mkdocs only for sizes up to N (default 1000; 0 to skip)",
    )
    parser.add_argument(
        "--checks-up-to",
        type=int,
        default=100_000,
        metavar="N",
        help="run kb.checks only for sizes up to N (default 2000: its near-duplicate title "
        "check compares every pair of titles, so it grows quadratically)",
    )
    args = parser.parse_args()
    stages = ("load", "checks", "render", "write", "mkdocs")
    print(f"{'records':>8} " + " ".join(f"{s:>8}" for s in stages) + f" {'validate':>9} {'rendering':>9}")
    for n in args.sizes:
        t = run(n, mkdocs=n <= args.mkdocs_up_to, checks=n <= args.checks_up_to)
        cells = " ".join(f"{t[s]:8.2f}" if s in t else f"{'-':>8}" for s in stages)
        print(
            f"{n:>8} {cells} {t['load'] + t.get('checks', float('nan')):9.2f} {t['render'] + t['write']:9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
