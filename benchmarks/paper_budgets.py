"""Each committed reproduction's time against its family's budget (not a test; reads the committed results).

Budgets for one warm `kb reproduce` on 2 cores (the verdict issue): weight-sparsity, allocation, KV-cache and
stand-in papers 180 s, depth 240 s, width and training 360 s. The times are each result's `total_seconds`,
measured inside `kb reproduce --all --all-runs --commit` (the dense baseline shared with earlier papers, so a
single warm run is a few seconds slower), with every calibration draw and the `extra` arms included.

Usage: `.venv/bin/python benchmarks/paper_budgets.py` (prints a Markdown table and the total).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference_impls import registry  # noqa: E402

BUDGET = {"weight-sparsity": 180, "allocation": 180, "kv-cache": 180, "stand-in": 180, "depth": 240,
          "width": 360, "training": 360}  # fmt: skip


def main() -> None:
    rows, total = [], 0.0
    for path in sorted((ROOT / "reproductions").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        spec = registry.paper_spec(record["paper"])
        kind = registry.method_spec(spec.method).kind
        seconds = float(record["total_seconds"])
        total += seconds
        draws = 1 + len(record.get("draws", []))
        rows.append((record["paper"], kind, draws, seconds, BUDGET[kind]))
    print("| paper | kind | draws | seconds | budget | within |")
    print("|---|---|--:|--:|--:|---|")
    for paper, kind, draws, seconds, budget in rows:
        print(
            f"| {paper} | {kind} | {draws} | {seconds:.0f} | {budget} | {'yes' if seconds <= budget else 'no'} |"
        )
    over = sum(1 for r in rows if r[3] > r[4])
    print(f"\n{len(rows)} papers, {total / 60:.1f} minutes in all; {over} over their budget")


if __name__ == "__main__":
    main()
