"""`kb reproduce PAPER` and `kb prune METHOD`: run the reference implementations.

`kb reproduce` runs a paper's headline comparison (dense, the paper's baselines, the paper's method, all at
one sparsity target), prints a table on stdout and progress on stderr, and writes the result record
atomically to `--json PATH` (default: `results/<paper>-<model>.json` in the checkout). Exit 0 when the
paper's claim holds on this run, 1 when it does not (the numbers are still written), 2 on bad input.

`kb prune` prunes a model with one method and saves a model + tokenizer directory that `from_pretrained`
loads; the directory appears only when complete (temporary sibling, then rename).

torch, transformers and `reference_impls` are imported inside the command functions, never here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from kb.errors import KBError

_DEFAULTS = {"nsamples": 16, "seqlen": 512, "eval_tokens": 4096}


def register(subparsers: Any) -> None:
    rep = subparsers.add_parser(
        "reproduce",
        help="run a paper's headline comparison on a model and check its claim",
        description="Run a paper's headline comparison (dense, baselines, the paper's method) and check its claim. "
        "Exit 0 if the claim holds, 1 if not, 2 on bad input.",
    )
    rep.add_argument("paper", help="paper id, e.g. wanda or sparsegpt")
    _common(rep)
    rep.add_argument("--json", metavar="PATH", help="result file (default: results/<paper>-<model>.json)")
    rep.add_argument("--no-save", action="store_true", help="do not write the result file")
    rep.set_defaults(func=_run_reproduce)

    pr = subparsers.add_parser(
        "prune",
        help="prune a model with one method and save it",
        description="Prune a model with one method and save a from_pretrained-loadable directory.",
    )
    pr.add_argument("method", help="magnitude, wanda or sparsegpt")
    _common(pr)
    pr.add_argument("--save", metavar="DIR", required=True, help="output directory (must not exist)")
    pr.add_argument("--force", action="store_true", help="replace an existing --save directory")
    pr.set_defaults(func=_run_prune)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny-llama", help="tiny-llama (default), random-llama, a hub id or a path")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights to prune (default 0.5)")
    target.add_argument("--pattern", metavar="N:M", help="semi-structured: prune N of every M weights, e.g. 2:4")
    p.add_argument("--dataset", default="pydoc", help="pydoc (offline, default), wikitext2, c4, or a UTF-8 file")
    p.add_argument("--nsamples", type=int, default=_DEFAULTS["nsamples"], help="calibration sequences (default 16)")
    p.add_argument("--seqlen", type=int, default=_DEFAULTS["seqlen"], help="tokens per sequence (default 512)")
    p.add_argument("--eval-tokens", type=int, default=_DEFAULTS["eval_tokens"],
                   help="evaluation tokens, cut into seqlen windows (default 4096)")  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, help="calibration chunk (default: all at once, one pass per layer)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="method option, validated by the method's config (repeatable)")  # fmt: skip


def _options(args: argparse.Namespace) -> Any:
    """Validate cheap things before importing torch, then build `RunOptions`."""
    from reference_impls.config import check_sparsity, parse_assignments, parse_pattern

    pattern = parse_pattern(args.pattern) if args.pattern is not None else None
    check_sparsity(args.sparsity)
    for name in ("nsamples", "seqlen", "eval_tokens"):
        if getattr(args, name) < 1:
            raise KBError(f"--{name.replace('_', '-')} must be a positive integer")
    if args.seqlen < 2:
        raise KBError("--seqlen must be at least 2")
    if args.eval_tokens < args.seqlen:
        raise KBError(f"--eval-tokens ({args.eval_tokens}) must be at least --seqlen ({args.seqlen})")
    if args.batch_size is not None and args.batch_size < 1:
        raise KBError("--batch-size must be a positive integer")
    overrides = parse_assignments(args.set)
    if args.dataset not in ("pydoc", "wikitext2", "c4"):
        path = Path(args.dataset).expanduser()
        if not path.is_file():
            raise KBError(f"dataset {args.dataset!r} is neither pydoc, wikitext2, c4 nor a readable file")
    from reference_impls.harness import RunOptions

    return RunOptions(
        model=args.model, dataset=args.dataset, nsamples=args.nsamples, seqlen=args.seqlen,
        eval_tokens=args.eval_tokens, device=args.device, seed=args.seed, sparsity=args.sparsity,
        pattern=pattern, overrides=overrides, batch_size=args.batch_size,
    )  # fmt: skip


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "model"


def _run_reproduce(args: argparse.Namespace) -> int:
    from reference_impls import registry

    spec = registry.paper_spec(args.paper)  # unknown / not-yet-implemented paper: exit 2 before heavy imports
    options = _options(args)
    from kb.paths import repo_root
    from reference_impls.harness import reproduce
    from reference_impls.report import write_report

    out = None if args.no_save else Path(args.json or repo_root() / "results" / f"{spec.paper}-{_slug(args.model)}.json")
    record = reproduce(spec.paper, options)
    print(format_table(record))
    if out is not None:
        write_report(out, record)
        print(f"kb: results written to {out}", file=sys.stderr)
    return 0 if record["claim"]["holds"] else 1


def format_table(record: dict[str, Any]) -> str:
    rows = [("method", "target", "actual", "ppl", "prune s")]
    for r in record["results"]:
        target = "-" if r["method"] == "dense" else _target_text(r)
        ppl = r["ppl"]
        rows.append((r["method"], target, f"{r['sparsity_actual']:.3f}", f"{ppl:.2f}" if isinstance(ppl, float) else str(ppl),
                     f"{r['prune_seconds']:.1f}"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    claim = record["claim"]
    ds = record["dataset"]
    lines.append("")
    lines.append(
        f"{record['paper']} on {record['model']}, {ds['corpus']}: calibration {ds['calibration']['tokens']} tokens, "
        f"evaluation {ds['evaluation']['tokens']} tokens, {record['total_seconds']:.0f} s"
    )
    lines.append(f"claim: {claim['statement']}")
    lines.append(f"holds: {'yes' if claim['holds'] else 'NO'}")
    return "\n".join(lines)


def _target_text(result: dict[str, Any]) -> str:
    pattern = result.get("config", {}).get("pattern")
    if pattern:
        return f"{pattern[0]}:{pattern[1]}"
    return f"{result['sparsity_target']:.2f}"


def _run_prune(args: argparse.Namespace) -> int:
    from reference_impls import registry

    registry.method_module(args.method)  # unknown method: exit 2 before heavy imports
    options = _options(args)
    save = Path(args.save).expanduser()
    if save.exists() and not args.force:
        raise KBError(f"{save} already exists; pass --force to replace it")
    from reference_impls.harness import prune_to_dir

    summary = prune_to_dir(args.method, options, save, force=args.force)
    print(
        f"{summary['method']}: {summary['model']} pruned to {summary['sparsity_actual']:.3f} decoder sparsity "
        f"in {summary['prune_seconds']:.1f} s; saved to {summary['saved']}"
    )
    return 0
