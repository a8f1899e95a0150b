"""Benchmark of `kb.allocator` (not a test): a warm `kb reproduce` with the tuned C allocator against the system one.

Runs `kb reproduce PAPER --model tiny-llama --json TMP` with `KB_MALLOC=tuned` and with `KB_MALLOC=system` in turn
(A B A B ..., `--pairs` pairs; default 1), each in its own process, and prints per run the wall, user and system
seconds and the peak resident memory (from the kernel's accounting of that one child), then the median ratio
tuned / system of each figure over the pairs. Both sides must compute the same metrics: the allocator may
change speed and memory, never a number computed (the script says so when they differ).

Usage: `.venv/bin/python benchmarks/bench_allocator.py [--paper reassessing-layer-pruning] [--pairs 2]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("wall", "user", "sys", "peak_gb")


def _run(paper: str, setting: str, out: Path) -> tuple[dict[str, float], list[object]]:
    """One `kb reproduce` in a child process: its figures, and what it computed (every run's metrics but speed)."""
    kb = Path(sys.executable).with_name("kb")
    cmd = [str(kb), "reproduce", paper, "--model", "tiny-llama", "--json", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "KB_MALLOC": setting},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own accounting
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"kb reproduce {paper} failed with KB_MALLOC={setting} (exit {code})")
    figures = {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "peak_gb": usage.ru_maxrss / 1024**2,
    }
    runs = json.loads(out.read_text(encoding="utf-8"))["runs"]
    computed = [{k: v for k, v in r["metrics"].items() if k != "speed"} for r in runs]
    return figures, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", default="wanda")
    parser.add_argument("--pairs", type=int, default=1)
    args = parser.parse_args()
    if args.pairs < 1:
        sys.exit("--pairs must be at least 1")
    runs: dict[str, list[dict[str, float]]] = {"tuned": [], "system": []}
    computed: dict[str, list[object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        _run(args.paper, "tuned", out)  # warm-up: model conversion, page cache
        for _ in range(args.pairs):
            for setting in ("tuned", "system"):
                figures, computed[setting] = _run(args.paper, setting, out)
                runs[setting].append(figures)
                print(f"{setting:6}  " + "  ".join(f"{k} {v:7.2f}" for k, v in figures.items()), flush=True)
    for figure in FIGURES:
        ratios = [
            t[figure] / s[figure] for t, s in zip(runs["tuned"], runs["system"], strict=True) if s[figure]
        ]
        print(f"{figure:8} tuned / system: x{statistics.median(ratios):.3f} (median of {len(ratios)})")
    same = computed["tuned"] == computed["system"]
    print("metrics other than speed: " + ("identical" if same else "DIFFER between the two settings"))


if __name__ == "__main__":
    main()
