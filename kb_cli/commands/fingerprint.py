"""`kb fingerprint`: does today's code still behave as the committed results' code did?

A committed result whose code hash moved (a comment, a refactor) is stale by text. `kb fingerprint` runs the
same comparison on a small random model (`reference_impls.harness.fingerprint`, a few seconds per result) and
records today's fingerprint in `reproductions/fingerprints/today.json`; `kb build --check` then keeps every result
whose own fingerprint equals today's and names the others with the command that refreshes them.

    kb fingerprint                 the results whose code hash moved (what `kb build --check` would name)
    kb fingerprint wanda sweeps/depth
    kb fingerprint --all           every committed result
    kb fingerprint --check         recompute the book's entries that keep a result fresh; write nothing (CI)
    kb fingerprint --check --all   ... every entry taken at today's code

Each fingerprint is computed in a fresh interpreter with fixed numerics (`harness.steady_numerics`: MKL's
reproducible branch, AVX2 kernels, one thread), so every x86-64 machine computes the same bits.

Exit 0 when every fingerprint is unchanged (or, with --check, the book is true), 1 when one moved, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kb.errors import KBError
from kb.paths import repo_root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fingerprint",
        help="say whether changed code still behaves as the committed results' code did",
        description="Run each committed result's comparison on a small random model and digest what it "
        "computes; record today's fingerprints for `kb build --check` (exit 1 when one moved).",
    )
    p.add_argument("results", nargs="*", metavar="RESULT", help="paper ids or sweeps/<name> (default: the "
                   "results whose code hash moved)")  # fmt: skip
    p.add_argument("--all", action="store_true", help="every committed result")
    p.add_argument("--check", action="store_true", help="recompute the recorded fingerprints of today's code "
                   "and exit 1 if one disagrees; write nothing")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object per result")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: this machine's cores); "
                   "the fingerprints do not depend on it")  # fmt: skip
    p.set_defaults(func=_fingerprint)


def _records(root: Path) -> dict[str, Any]:
    from reference_impls.registry.freshness import result_path
    from site_builder.inputs import load_reproductions, load_sweeps

    found: dict[str, Any] = {}
    for rep in load_reproductions(root).values():
        found[rep.paper] = rep
    for sweep in load_sweeps(root).values():
        found[f"sweeps/{sweep.name}"] = sweep
    return {name: (result_path(r), r) for name, r in found.items()}


def _today(record: Any, root: Path) -> str:
    from kb.results import Sweep
    from reference_impls import registry

    if isinstance(record, Sweep):
        return registry.sweep_code(record.methods, root).hash
    return registry.paper_code(record.paper, root).hash


def _fingerprint(args: argparse.Namespace) -> int:
    root = repo_root()
    records = _records(root)
    unknown = [name for name in args.results if name not in records]
    if unknown:
        raise KBError(f"no committed result {unknown[0]!r}; results: {', '.join(sorted(records))}")
    if args.all and args.results:
        raise KBError("--all fingerprints every result; do not name one")
    if args.jobs is not None and args.jobs < 1:
        raise KBError(f"--jobs must be at least 1, not {args.jobs}")
    from reference_impls.harness.fingerprint import read_book

    pages = read_book(root)  # the book, read once: entries with their payloads

    def at_today(name: str) -> bool:
        path, record = records[name]
        return path in pages and pages[path]["code_hash"] == _today(record, root)

    if args.results:
        chosen = list(args.results)
    elif args.all:
        chosen = sorted(n for n in records if at_today(n)) if args.check else sorted(records)
    else:  # the results `kb build --check` judges by behaviour: their code hash moved
        chosen = sorted(
            n for n, (_, r) in records.items() if r.code is None or r.code.hash != _today(r, root)
        )
        if args.check:  # ... and whose book entry was taken at today's code
            chosen = [n for n in chosen if at_today(n)]
    if not chosen:
        print("kb: nothing to fingerprint (every result named ran today's code)", file=sys.stderr)
        return 0
    from reference_impls.harness.steady_numerics import is_steady, run_kb

    if not is_steady():  # the same bits on every machine: run again in an interpreter with fixed numerics
        again = ["fingerprint", *args.results] + [
            f"--{f}" for f in ("all", "check", "json") if getattr(args, f)
        ]
        return run_kb(again + ([f"--jobs={args.jobs}"] if args.jobs else []))
    import os

    from kb.results import Sweep
    from reference_impls.harness.fingerprint import differences, measure_many, write_book
    from reference_impls.registry.freshness import reproduce_command, sweep_command

    jobs = args.jobs or len(os.sched_getaffinity(0))
    cost = {name: float(pages.get(records[name][0], {}).get("seconds", 0)) for name in chosen}
    print(
        f"kb: fingerprinting {len(chosen)} result(s) with {min(jobs, len(chosen))} worker(s)", file=sys.stderr
    )
    moved, entries, seconds = 0, {}, {}
    finished = measure_many({name: records[name][1] for name in chosen}, jobs, cost)
    for i, (name, fp, payload, took) in enumerate(finished, 1):
        path, record = records[name]
        seconds[path] = took
        print(f"kb: [{i}/{len(chosen)}] {path} ({took:.0f} s)", file=sys.stderr, flush=True)
        page = pages.get(path)
        if args.check:
            diff = ["not in the book"] if page is None else differences(page["payload"], payload)
            if page is not None and page["code_hash"] != fp.code_hash:
                diff = ["recorded at another code hash"]
            ok = not diff
            state = (
                "recorded fingerprint confirmed"
                if ok
                else f"the book is wrong for today's code: {_first(diff)}"
            )
        else:
            entries[path] = (fp, payload)
            command = sweep_command(record) if isinstance(record, Sweep) else reproduce_command(record)
            ok = record.fingerprint is not None and record.fingerprint.digest == fp.digest
            if record.fingerprint is None:
                state = f"carries no fingerprint to compare with: run `{command}`"
            elif ok:
                state = "behaviour unchanged: kept fresh"
            else:
                what = ""
                if (
                    page is not None and page["digest"] == record.fingerprint.digest
                ):  # the result's own payload
                    what = f" ({_first(differences(page['payload'], payload, rel=0.0))})"
                state = f"behaviour changed{what}: run `{command}`"
        moved += not ok
        if args.json:
            print(json.dumps({"result": path, "ok": ok, "state": state, "digest": fp.digest,
                              "code_hash": fp.code_hash}))  # fmt: skip
        else:
            print(f"{path}: {state}")
    if entries:
        write_book(root, entries, seconds)
    what = "disagree with the book" if args.check else "moved"
    print(f"kb: {len(chosen)} fingerprinted, {moved} {what}", file=sys.stderr)
    return 1 if moved else 0


def _first(diff: list[str], n: int = 3) -> str:
    return "; ".join(diff[:n]) + (f" and {len(diff) - n} more" if len(diff) > n else "")
