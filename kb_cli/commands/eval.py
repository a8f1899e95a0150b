"""`kb eval MODEL --tasks T,...`: score a model (typically one `kb prune --save` wrote) with lm-evaluation-harness.

Needs the optional `eval` extra (lm-evaluation-harness); without it, one line naming the extra and exit 2.
Tasks: `paper` (the zero-shot suite pruning papers report: boolq, rte, hellaswag, winogrande, arc_easy,
arc_challenge, openbookqa, piqa; online or from the datasets cache), a local task of this repository
(`kb_smoke`, offline), a task YAML file, or any lm-eval task name (`--include-path DIR` adds a folder of task
configs, as lm-eval's own option does). Every task name and path is checked before the model is loaded.

Prints one row per task and metric on stdout (progress on stderr) and writes `kb.eval_record.EvalRecord`
atomically to `--json PATH` (default `results/eval-<model>.json`): lm-eval's version, each task's version,
few-shot count, items scored, every metric with its standard error, the seeds, the library versions and the
machine. Exit 0 when every task was scored, 2 on bad input (unknown task, missing extra, unreadable model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kb.errors import KBError
from kb.fsutil import check_writable
from kb_cli.commands.reproduce import _slug


def register(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="score a model on lm-evaluation-harness tasks (optional extra: eval)",
        description="Score a model (a directory kb prune --save wrote, a hub id, tiny-llama or random-llama) on "
        "lm-evaluation-harness tasks and save the scores with the versions that produced them. Needs the optional "
        "extra: pip install -e '.[eval]'. Exit 0 when every task was scored, 2 on bad input.",
    )
    ev.add_argument("model", help="a saved model directory, a hub id, tiny-llama or random-llama")
    ev.add_argument("--tasks", required=True, metavar="T,T,...",
                    help="comma-separated: `paper` (the zero-shot suite pruning papers report), a local task "
                    "(kb_smoke, offline), a task YAML file, or an lm-eval task name")  # fmt: skip
    ev.add_argument(
        "--num-fewshot", type=int, metavar="K", help="few-shot examples (default: each task's own)"
    )
    ev.add_argument(
        "--limit", type=int, metavar="N", help="at most N items per task (a smoke test, not a score)"
    )
    ev.add_argument("--batch-size", type=int, default=1, help="items per forward pass (default 1)")
    ev.add_argument("--max-length", type=int, metavar="TOKENS", help="context length (default: the model's)")
    ev.add_argument("--include-path", metavar="DIR", help="a folder of extra lm-eval task configs")
    ev.add_argument("--update-card", action="store_true",
                    help="MODEL is a directory `kb prune --save` wrote: put the scores in its model card and, for "
                    "tasks on Hub datasets, in .eval_results/ (the Hub's format)")  # fmt: skip
    ev.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: cuda if available, else cpu")
    out = ev.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="PATH", help="result file (default: results/eval-<model>.json)")
    out.add_argument("--no-save", action="store_true", help="do not write the result file")
    ev.set_defaults(func=_run_eval)


def _positive(value: int | None, flag: str, *, zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero)):
        raise KBError(f"{flag} must be {'a non-negative' if zero else 'a positive'} integer")


def _run_eval(args: argparse.Namespace) -> int:
    from kb import allocator
    from kb.paths import repo_root

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise KBError("--tasks names no task")
    _positive(args.num_fewshot, "--num-fewshot", zero=True)
    _positive(args.limit, "--limit")
    _positive(args.batch_size, "--batch-size")
    _positive(args.max_length, "--max-length")
    include = Path(args.include_path).expanduser() if args.include_path else None
    if include is not None and not include.is_dir():
        raise KBError(f"--include-path {include} is not a directory")
    if args.update_card:
        from reference_impls.harness.model_card import is_kb_card

        if not is_kb_card(Path(args.model).expanduser()):
            raise KBError(
                f"--update-card: {args.model} is not a directory with a model card written by kb prune"
            )
    if args.no_save:
        path = None
    else:
        slug = _slug(args.model)
        path = check_writable(
            Path(args.json or repo_root() / "results" / f"eval-{slug}.json"), what="--json file"
        )
    allocator.tune()
    from reference_impls.harness.lm_eval_bridge import evaluate

    record = evaluate(
        args.model, tasks, device=args.device, num_fewshot=args.num_fewshot, limit=args.limit,
        batch_size=args.batch_size, max_length=args.max_length, include_path=include,
        progress=lambda msg: print(f"kb: {msg}", file=sys.stderr),
    )  # fmt: skip
    if path is not None:
        from kb.fsutil import write_text_atomic

        write_text_atomic(path, record.model_dump_json(indent=2) + "\n")
        print(f"kb: results written to {path}", file=sys.stderr)
    if args.update_card:
        from reference_impls.harness.model_card import add_evaluation

        written = add_evaluation(Path(args.model).expanduser(), record)
        print(f"kb: card updated; {len(written) - 1} Hub eval result files in {Path(args.model) / '.eval_results'}",
              file=sys.stderr)  # fmt: skip
    print(format_table(record))
    for note in record.notes:
        print(f"kb: note: {note}", file=sys.stderr)
    return 0


def format_table(record: Any) -> str:
    """One row per task and metric: value, standard error, few-shot count and items scored."""
    rows = [("task", "version", "shots", "items", "metric", "value", "stderr")]
    for t in record.tasks:
        for metric, value in sorted(t.metrics.items()):
            err = t.stderr.get(metric)
            rows.append((t.task, t.version or "-", "-" if t.n_shot is None else str(t.n_shot),
                         f"{t.items}/{t.items_total}", metric, f"{value:.4f}",
                         "-" if err is None else f"{err:.4f}"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
