"""Benchmark of `kb reproduce wanda --model tiny-llama` against the issue's targets (not a test).

Measures, in one run on this machine:
1. wall time of a warm `kb reproduce wanda --model tiny-llama` (model already cached), in a subprocess;
2. Wanda's prune time divided by one forward pass over the same calibration tokens (the forward is timed
   before and after the prune and averaged, so machine drift affects both sides alike); reported against
   the full model forward (with the LM head) and against the decoder stack only;
3. peak resident memory (max RSS) of the `kb reproduce` subprocess.
Targets: <= 60 s, <= 1.3, <= 2.5 GB. Usage: `.venv/bin/python benchmarks/bench_reproduce.py`.

`--papers owl shortgpt llm-pruner` times the warm `kb reproduce` of those papers as well (targets in PAPER_SECONDS;
llm-pruner includes its 20 LoRA recovery steps).

`--committed` prints, without running anything, the wall time every committed `reproductions/<paper>.json`
recorded (`total_seconds`, a warm run of `kb reproduce <paper> --commit`) against its issue's budget:
KIND_SECONDS by the kind of the paper's own method, PAPER_SECONDS where a paper has its own. Only a run made on a quiet
machine measures the budget: runs that shared the cores take 2-4x longer.

`--all [--jobs N] [--kind K]` times only `kb reproduce --all --all-runs --model tiny-llama --no-save` instead (every
runnable paper in one process, the model loaded once and the dense baseline shared; target: the whole set within
ALL_SECONDS on 2 cores), and prints its summary table and peak memory. `--all --commit` times the refresh of the
board instead: `kb reproduce --all --commit --model tiny-llama` (the claim runs, every result written).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS, TARGET_RATIO, TARGET_GB = 60.0, 1.3, 2.5
ALL_SECONDS = 3600.0
PAPER_SECONDS = {"owl": 120.0, "shortgpt": 120.0, "h2o": 120.0, "keyformer": 120.0, "llm-pruner": 180.0}
# per-paper budgets of the family issues (unstructured/allocation and stand-ins 150 s, depth 180 s, width 240 s),
# by the kind of the paper's own method
KIND_SECONDS = {"weight-sparsity": 150.0, "allocation": 150.0, "stand-in": 150.0, "training": 150.0,
                "depth": 180.0, "width": 240.0, "kv-cache": 120.0}  # fmt: skip


def _budget(paper: str) -> float:
    from reference_impls.registry import METHODS, paper_spec

    return PAPER_SECONDS.get(paper) or KIND_SECONDS[METHODS[paper_spec(paper).method].kind]


def _committed() -> None:
    import json

    rows = []
    for path in sorted((ROOT / "reproductions").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        paper, seconds = data["paper"], float(data["total_seconds"])
        budget = _budget(paper)
        rows.append((paper, seconds, budget, data.get("produced", "?")))
    for paper, seconds, budget, produced in rows:
        print(
            f"{paper:28} {seconds:8.1f} s  <= {budget:5.0f} s  {'ok' if seconds <= budget else 'MISSED'}  {produced}"
        )
    missed = sum(seconds > budget for _p, seconds, budget, _d in rows)
    print(f"{len(rows)} committed results, {missed} over budget; sum {sum(r[1] for r in rows) / 60:.1f} min")


def _warm_cache() -> None:
    from reference_impls.harness.smollm2 import ensure_tiny_llama

    ensure_tiny_llama()


def _reproduce_run(paper: str = "wanda") -> tuple[float, float, int]:
    kb = Path(sys.executable).with_name("kb")
    cmd = [str(kb), "reproduce", paper, "--model", "tiny-llama", "--no-save"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"kb reproduce failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    print(proc.stdout)
    return seconds, peak_gb, proc.returncode


def _reproduce_all(jobs: int, kind: str | None, commit: bool) -> None:
    kb = Path(sys.executable).with_name("kb")
    # --commit times the refresh of the board itself (the claim runs, written to reproductions/); without it,
    # every run including the extras, nothing written
    save = ["--commit"] if commit else ["--all-runs", "--no-save"]
    cmd = [str(kb), "reproduce", "--all", *save, "--model", "tiny-llama", "--jobs", str(jobs)]
    if kind:
        cmd += ["--kind", kind]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # the largest process (KiB)
    print(proc.stdout)
    if proc.returncode != 0:
        print(f"(some runs failed, exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]})")
    ok = "ok" if seconds <= ALL_SECONDS else "MISSED"
    print(f"`{' '.join(cmd[1:])}` wall time {seconds:.0f} s (target <= {ALL_SECONDS:.0f} s: {ok}); "
          f"peak RSS of one process {peak_gb:.2f} GB")  # fmt: skip


def _prune_vs_forward() -> tuple[float, float, float, float]:
    import torch

    from reference_impls import wanda
    from reference_impls.harness.runner import RunOptions, load_inputs, set_threads

    set_threads(None)
    options = RunOptions(model="tiny-llama")
    loaded, data = load_inputs(options, lambda _msg: None)
    model, calib = loaded.model, data.calib

    def forward(full: bool) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            (model if full else model.model)(input_ids=calib, use_cache=False)
            return time.perf_counter() - start

    full_before, body_before = forward(True), forward(False)
    start = time.perf_counter()
    wanda.prune(model, calib, wanda.Config(), None)
    prune = time.perf_counter() - start
    full_after, body_after = forward(True), forward(False)  # sparse weights cost the same on dense kernels
    return prune, (full_before + full_after) / 2, (body_before + body_after) / 2, calib.numel()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="kb reproduce timings against their targets")
    ap.add_argument("--papers", nargs="*", default=[], choices=sorted(PAPER_SECONDS), help="also time these")
    ap.add_argument(
        "--all", action="store_true", help="time `kb reproduce --all` (every runnable paper) only"
    )
    ap.add_argument("--jobs", type=int, default=1, help="with --all: worker processes")
    ap.add_argument("--kind", help="with --all: only the papers of this kind")
    ap.add_argument(
        "--commit", action="store_true", help="with --all: time the refresh that writes reproductions/"
    )
    ap.add_argument("--committed", action="store_true", help="report the committed results' times only")
    args = ap.parse_args()
    if args.committed:
        _committed()
        return
    _warm_cache()
    if args.all:
        _reproduce_all(args.jobs, args.kind, args.commit)
        return
    extra = []
    for paper in args.papers:
        seconds, _peak, _rc = _reproduce_run(paper)
        target = PAPER_SECONDS[paper]
        extra.append((f"warm `kb reproduce {paper} --model tiny-llama` wall time", f"{seconds:.1f} s",
                      f"<= {target:.0f} s", seconds <= target))  # fmt: skip
    seconds, peak_gb, rc = _reproduce_run()
    prune, full, body, tokens = _prune_vs_forward()
    rows = [
        ("warm `kb reproduce wanda --model tiny-llama` wall time", f"{seconds:.1f} s", f"<= {TARGET_SECONDS:.0f} s",
         seconds <= TARGET_SECONDS),
        (f"Wanda prune / full forward over {tokens} calib tokens", f"{prune / full:.2f} ({prune:.1f} s / {full:.1f} s)",
         f"<= {TARGET_RATIO}", prune / full <= TARGET_RATIO),
        ("Wanda prune / decoder-only forward (no LM head)", f"{prune / body:.2f} ({prune:.1f} s / {body:.1f} s)",
         "(stricter view)", prune / body <= TARGET_RATIO),
        ("peak RSS of kb reproduce", f"{peak_gb:.2f} GB", f"<= {TARGET_GB} GB", peak_gb <= TARGET_GB),
        *extra,
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value, target, ok in rows:
        print(f"{name.ljust(width)}  {value:>24}  {target:>16}  {'ok' if ok else 'MISSED'}")
    print(f"(claim exit code of the reproduce run: {rc})")


if __name__ == "__main__":
    main()
