"""Benchmark of `kb prune --low-memory` (not a test): peak memory and time against model size.

Writes seeded random LLaMA checkpoints of three sizes (same layer width, 4 / 8 / 16 decoder layers by default:
about 0.45, 0.9 and 1.8 GB of float32) with `harness.random_checkpoint`, then prunes each with Wanda at 50%
twice, each in its own child process: in memory (`kb prune wanda --model DIR --save OUT`, which also reloads the
saved model to check it) and one layer at a time (`--low-memory`). Prints per size and path the wall seconds and
the child's peak resident memory (the kernel's accounting of that one child), then the ratio low-memory /
in-memory of each. The low-memory peak should stay flat as the model grows; the in-memory one grows with it.

Usage: `.venv/bin/python benchmarks/bench_low_memory.py [--layers 4,8,16] [--hidden 1536 --intermediate 4096]`.
Needs about three times the largest model's size in free disk space under the temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference_impls.harness.random_checkpoint import write_random_llama  # noqa: E402

DATA = ["--nsamples", "4", "--seqlen", "32", "--eval-tokens", "64", "--device", "cpu", "--sparsity", "0.5"]


def _prune(src: Path, out: Path, low: bool) -> tuple[float, float]:
    """(wall seconds, peak GB) of one `kb prune wanda` in a child process."""
    cmd = [sys.executable, "-c", "import sys; from kb_cli.main import run; sys.exit(run())", "prune", "wanda",
           "--model", str(src), *DATA, "--save", str(out), *(["--low-memory"] if low else [])]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"kb prune wanda {'--low-memory ' if low else ''}failed on {src}")
    return wall, usage.ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="4,8,16")
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--intermediate", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kb-lowmem-") as tmp:
        for layers in (int(x) for x in args.layers.split(",")):
            src = Path(tmp) / f"src-{layers}"
            size = write_random_llama(src, hidden=args.hidden, intermediate=args.intermediate, layers=layers)
            mem = _prune(src, Path(tmp) / "mem", low=False)
            shutil.rmtree(Path(tmp) / "mem")
            low = _prune(src, Path(tmp) / "low", low=True)
            shutil.rmtree(Path(tmp) / "low")
            shutil.rmtree(src)
            rows.append((layers, size / 1e9, mem, low))
            print(f"{layers} layers, {size / 1e9:.2f} GB: in memory {mem[0]:.1f} s, peak {mem[1]:.2f} GB; "
                  f"low-memory {low[0]:.1f} s, peak {low[1]:.2f} GB", flush=True)  # fmt: skip
    print(
        "\n| layers | weights (GB) | in memory: s, peak GB | low-memory: s, peak GB | time ratio | peak ratio |"
    )
    print("|--:|--:|--:|--:|--:|--:|")
    for layers, gb, mem, low in rows:
        print(f"| {layers} | {gb:.2f} | {mem[0]:.1f}, {mem[1]:.2f} | {low[0]:.1f}, {low[1]:.2f} | "
              f"{low[0] / mem[0]:.2f} | {low[1] / mem[1]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
