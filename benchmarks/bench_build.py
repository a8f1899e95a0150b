"""Benchmark (not a test): the whole `kb build --site-only` for the real catalogue and for copies of it.

    .venv/bin/python benchmarks/bench_build.py                     # the real records, and 1,029 in all
    .venv/bin/python benchmarks/bench_build.py --sizes 50 1029 10000
    .venv/bin/python benchmarks/bench_build.py --source /tmp/kbcopy  # another checkout's records

Each size is a number of records in all: the real records of `--source` (default: this repository),
then copies of them with new ids, identifiers and titles, their results, findings, related papers and
challenge notes kept (a copy drops `implementation`: the harness runs the original only). A size below
the number of real records takes the first ones by id. Everything goes to a throwaway folder; the
real reproductions, sweeps and GitHub metadata come along, so the plots and leaderboards are built too.

Each size is built twice: `cold` with an empty cache, so every plot is drawn, then `warm`, a rebuild that
finds the plots drawn (`site_builder/svgcache.py`), as a rebuild after editing records does. For each
build it prints the wall seconds of each stage (load, checks, render, write, mkdocs), the total, the
seconds per record and the ratio of the total to the first size's; the process's CPU seconds stand
beside the wall total, since they move less on a shared machine. Targets on 2 cores: the real
catalogue (50 records today) in at most 3 s, 1,029 records in at most 30 s. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Time this checkout's code: run as a script, Python puts benchmarks/ first on sys.path, and the shared
# virtualenv's editable install would otherwise supply another checkout's site_builder and kb.
sys.path.insert(0, str(REPO))
MODELINE = "# yaml-language-server: $schema=../schema/paper.schema.json\n"
# What a build reads besides the records: copied as they are when the source has them.
INPUT_DIRS = ("concepts", "reproductions", "data", "reference_impls")
STAGES = ("load", "checks", "render", "write", "mkdocs")


def real_records(source: Path) -> list[tuple[dict, str]]:
    """Every record of `source` (parsed YAML) with its challenge note, sorted by id."""
    out = []
    for path in sorted((source / "papers").glob("*.yaml")):
        rec = yaml.safe_load(path.read_text(encoding="utf-8"))
        note = source / "challenge" / f"{path.stem}.md"
        out.append((rec, note.read_text(encoding="utf-8") if note.is_file() else ""))
    return out


def copy_of(rec: dict, n: int, words: list[str], rng: random.Random) -> dict:
    """Record `rec` as a new paper number `n`: a new id, fresh identifiers, a title of random words
    from the real titles (so the near-duplicate check does not flag it) and its own method's results
    under the new id; the rest stays."""
    new = dict(rec)
    new["id"] = f"{rec['id']}-copy-{n}"
    new["title"] = " ".join(rng.sample(words, min(7, len(words)))).capitalize() + f" {n}"
    fresh = {
        "arxiv": f"99{n % 12 + 1:02d}.{n:05d}",
        "openreview": f"bench{n:07d}",
        "acl": f"2099.bench.{n}",
        "doi": f"10.9999/bench.{n}",
    }
    new["identifiers"] = {k: fresh[k] for k in rec.get("identifiers", {})}
    new.pop("implementation", None)
    # the paper's own method is named after the paper: the copy reports it as its own
    new["results"] = [
        dict(r, method=new["id"]) if r.get("method") == rec["id"] else r for r in rec.get("results", [])
    ]
    if not new["results"]:
        del new["results"]
    return new


def make_kb(root: Path, source: Path, size: int) -> None:
    """A knowledge base of `size` records under `root`: the real ones from `source`, then copies."""
    root.mkdir(parents=True)
    for name in INPUT_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(source / "mkdocs.yml", root / "mkdocs.yml")
    (root / "docs").mkdir()
    for page in (source / "docs").glob("*.md"):
        shutil.copy(page, root / "docs" / page.name)
    (root / "papers").mkdir()
    (root / "challenge").mkdir()
    real = real_records(source)
    kept = real[:size]
    ids = {rec["id"] for rec, _ in kept}
    words = sorted({w for rec, _ in real for w in rec["title"].split() if w.isalpha() and len(w) > 3})
    rng = random.Random(size)
    records = [dict(rec, related=[r for r in rec.get("related", []) if r in ids]) for rec, _ in kept]
    notes = [note for _, note in kept]
    for n in range(size - len(kept)):
        records.append(copy_of(records[n % len(kept)], n, words, rng))
        notes.append(notes[n % len(kept)])
    for rec, note in zip(records, notes, strict=True):
        if not rec.get("related"):
            rec.pop("related", None)
        text = MODELINE + yaml.safe_dump(rec, sort_keys=False, allow_unicode=True)
        (root / "papers" / f"{rec['id']}.yaml").write_text(text, encoding="utf-8")
        (root / "challenge" / f"{rec['id']}.md").write_text(note, encoding="utf-8")


def _runnable() -> dict[str, str] | None:
    """The harness registry, as `kb build` passes it to the checks (None when not installed)."""
    try:
        from reference_impls.registry import runnable_papers
    except ImportError:
        return None
    return runnable_papers()


class Clock:
    """Wall and process CPU seconds per stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def stage(self, name: str, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = time.process_time() - cpu
        return result


def run(root: Path, out: Path) -> Clock:
    """One build of `root` the way `kb build --site-only` does it, stage by stage."""
    from kb.checks import check_all
    from kb.store import load_kb
    from site_builder.build import fewer_collections, render_all, run_mkdocs, write_docs

    clock = Clock()
    kb = clock.stage("load", load_kb, root)
    problems = clock.stage("checks", check_all, kb, _runnable())
    if problems:
        sys.exit(f"the benchmark's records do not validate: {problems[0]}")
    with fewer_collections():  # as `site_builder.build.build` runs these three
        rendered = clock.stage("render", render_all, kb)
        clock.stage("write", write_docs, rendered.pages, out / "docs")
        clock.stage("mkdocs", run_mkdocs, root / "mkdocs.yml", out / "docs", out / "site")
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="records in all (default: the real count and 1,029)"
    )
    parser.add_argument("--source", type=Path, default=REPO, help="where the real records come from")
    parser.add_argument(
        "--cold-only", action="store_true", help="skip the second build with the plots cached"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # matplotlib's layout warnings would bury the table
    source = args.source.resolve()
    sizes = args.sizes or [len(list((source / "papers").glob("*.yaml"))), 1029]
    runs = ("cold",) if args.cold_only else ("cold", "warm")
    print("wall seconds per stage; total wall and CPU seconds; per record and ratio to the first size (wall)")
    header = " ".join(f"{s:>7}" for s in STAGES)
    print(f"{'records':>8} {'plots':>5} {header} {'wall':>8} {'cpu':>8} {'s/record':>9} {'ratio':>6}")
    first: dict[str, float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
            make_kb(Path(tmp) / "kb", source, size)
            os.environ["KB_CACHE"] = str(Path(tmp) / "cache")  # empty: the first build draws every plot
            for kind in runs:
                clock = run(Path(tmp) / "kb", Path(tmp) / kind)
                wall, cpu = sum(clock.wall.values()), sum(clock.cpu.values())
                first.setdefault(kind, wall)
                cells = " ".join(f"{clock.wall[s]:7.2f}" for s in STAGES)
                print(f"{size:>8} {kind:>5} {cells} {wall:8.2f} {cpu:8.2f} {wall / size:9.4f} "
                      f"{wall / first[kind]:6.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
