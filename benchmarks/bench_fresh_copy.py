"""How a comparison gets a fresh dense model for each run: deep copy in memory vs reload from the cache.

Prints the median of 5 of each on `tiny-llama` (and the ratio), so the runner's choice is measured, not
assumed. Not a test. Usage: `.venv/bin/python benchmarks/bench_fresh_copy.py`.
"""

from __future__ import annotations

import copy
import statistics
import time


def main() -> None:
    from reference_impls.harness.models import load_model
    from reference_impls.harness.runner import set_threads

    set_threads(None)
    dense = load_model("tiny-llama", "cpu").model
    copies, loads = [], []
    for _ in range(5):
        start = time.perf_counter()
        fresh = copy.deepcopy(dense)
        copies.append(time.perf_counter() - start)
        del fresh
        start = time.perf_counter()
        fresh = load_model("tiny-llama", "cpu").model
        loads.append(time.perf_counter() - start)
        del fresh
    c, r = statistics.median(copies), statistics.median(loads)
    print(f"deep copy: {c:.2f} s   reload from cache: {r:.2f} s   reload / copy = {r / c:.2f} (median of 5)")


if __name__ == "__main__":
    main()
