"""`kb reproduce PAPER`, `kb reproduce --all`, `kb sweep` and `kb prune`: run the reference implementations.

`kb reproduce` runs a paper's headline comparison (the dense model, then each labelled run from a fresh copy of
it), prints a table on stdout and progress on stderr, and writes the result record atomically to `--json PATH`
(default: `results/<paper>-<model>.json` in the checkout), or with `--commit` to the committed
`reproductions/<paper>.json` the site shows. Every record carries the content hash of the files it ran, which
`kb build --check` compares with today's code. The output path is checked before the model is loaded: a path that
cannot be written is a one-line error, exit 2. Exit 0 when the paper's claim holds on this run, 1 when it does not
hold or is inconclusive (the numbers are still written), 2 on bad input.

`kb reproduce --all [--kind K] [--jobs N]` runs every runnable paper with its own settings in one process (the
model loaded once; dense measurements, calibration statistics and identical runs shared between papers with the
same data settings; `harness.batch`), prints a summary, and with `--commit` writes each result as it finishes.
Exit 0 when every run completed (whatever the verdicts), 1 when one failed (named), 2 on bad input.

`kb sweep METHOD... --sparsity|--layers|--kv-budget|--params V,V,...` runs every method at every value after one
dense baseline and writes a `kb.results.Sweep` (`--commit`: `reproductions/sweeps/<name>.json`, plotted on the
board).

`kb prune` runs one method and saves a model + tokenizer directory that `from_pretrained` loads; the
directory appears only when complete (temporary sibling, then rename).

Target options (`--sparsity`, `--pattern`, `--layers`, `--kv-budget`, `--params`) default to the paper's own
setting; each method accepts only those listed in the registry, and a comparison gives its target to every arm
that takes it (an arm that fixes the option in its `Run.options` keeps its own value). A target has that one way
in: `--set` refuses target names, naming the flag to use. Every target value is checked against one table of
bounds (`registry.specs.TARGET_BOUNDS`) when a run's config is built, so a value out of bounds is one line, exit 2,
whichever way it came in. KV-cache policies (H2O, Keyformer) change no weight: `kb prune`
refuses them (nothing to save) and `kb reproduce` evaluates them on prompt + continuation windows. torch,
transformers and the harness are imported inside the command functions, never at module level. Each of these
commands first lets the C allocator reuse freed memory (`kb.allocator`; `KB_MALLOC=system` opts out).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from kb import allocator
from kb.errors import KBError
from kb.fsutil import check_writable
from kb.results import Kind, SweepAxis

_DATA = {"nsamples": 16, "seqlen": 512, "eval_tokens": 4096, "probe_items": 300}


class _NoHyphenBreaks(argparse.HelpFormatter):
    """Wrap help text without splitting hyphenated names such as `llm-pruner` across lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(
            text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )


def _runs_models(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that runs models: the C allocator keeps freed memory for reuse first (`kb.allocator`)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        allocator.tune()
        return command(args)

    return run


def register(subparsers: Any) -> None:
    from reference_impls import registry

    rep = subparsers.add_parser(
        "reproduce",
        help="run a paper's headline comparison on a model and check its claim",
        description="Run a paper's headline comparison (dense, then each labelled run from a fresh copy of the "
        "dense model) and check its claim. Exit 0 if the claim holds, 1 if it does not or is inconclusive, 2 on "
        "bad input. With --all, every runnable paper in one process (the model loaded once, the dense baseline "
        "shared): exit 0 when every run completed, 1 when one failed.",
    )
    rep.add_argument("paper", nargs="?", help=f"paper id: {registry.papers_help()}")
    rep.add_argument("--all", action="store_true", help="every runnable paper, each with its own settings, in "
                     "one process that loads the model once and shares the dense baseline between papers")  # fmt: skip
    rep.add_argument(
        "--kind", choices=get_args(Kind), help="with --all: only the papers whose method is of this kind"
    )
    rep.add_argument("--jobs", type=int, default=1, help="with --all: worker processes (default 1)")
    rep.add_argument("--launcher", choices=("local", "submitit"), default="local",
                     help="with --all: local (default: this machine, --jobs processes) or submitit (one Slurm "
                     "job per paper, local processes without Slurm; settings: KB_SUBMITIT_*, KB_SLURM_*)")  # fmt: skip
    _common(rep, "the paper's setting")
    rep.add_argument("--probe-items", type=int, help="items of the multiple-choice probe, where a paper uses it "
                     f"(default {_DATA['probe_items']})")  # fmt: skip
    rep.add_argument(
        "--all-runs",
        action="store_true",
        help="also the runs the claim does not use (e.g. OWL's SparseGPT pair)",
    )
    rep.add_argument("--protocol", choices=("ours", "paper"), default="ours",
                     help="ours (default): the headline comparison under our small protocol; paper: the paper's own "
                     "evaluation protocol (data/paper-protocols.yaml) on --model, our number printed beside the "
                     "record's matching rows")  # fmt: skip
    rep.add_argument("--paper-model", metavar="NAME", help="with --protocol paper: the record's model name to "
                     "compare with, e.g. LLaMA-2-7B (default: the model's own name)")  # fmt: skip
    rep.add_argument("--tolerance", type=float, default=0.05, metavar="F",
                     help="with --protocol paper: relative difference that still matches (default 0.05)")  # fmt: skip
    rep.add_argument("--max-windows", type=int, metavar="N",
                     help="with --protocol paper: only the first N windows (recorded as a difference)")  # fmt: skip
    out = rep.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="PATH", help="result file (default: results/<paper>-<model>.json)")
    out.add_argument("--commit", action="store_true",
                     help="write the committed result the site shows, reproductions/<paper>.json")  # fmt: skip
    out.add_argument("--no-save", action="store_true", help="do not write the result file")
    rep.set_defaults(func=_runs_models(_run_reproduce))

    sw = subparsers.add_parser(
        "sweep",
        help="run methods at every value of one target (sparsity, layers removed, KV budget or parameters removed)",
        description="Run each method at every value of one target after one dense baseline (one model load) and "
        "save the points the site plots: perplexity vs sparsity, perplexity and probe accuracy vs layers removed, "
        "continuation perplexity vs KV budget, perplexity vs the share of decoder parameters a width method "
        "removes.",
        formatter_class=_NoHyphenBreaks,
    )
    sw.add_argument("methods", nargs="+", metavar="METHOD", help=", ".join(registry.METHODS))
    axis = sw.add_mutually_exclusive_group(required=True)
    axis.add_argument(
        "--sparsity", metavar="S,S,...", help="fractions of weights to prune, e.g. 0.1,0.2,...,0.9"
    )
    axis.add_argument("--layers", metavar="K,K,...", help="decoder layers to remove, e.g. 1,2,4,6,8")
    axis.add_argument("--kv-budget", metavar="F,F,...", help="KV cache kept as a fraction of the prompt")
    axis.add_argument(
        "--params", metavar="F,F,...", help="width methods: fractions of the decoder's parameters to remove"
    )
    sw.add_argument(
        "--name", help="file name under reproductions/sweeps/ (default: from the target and methods)"
    )
    sw.add_argument("--probe", action=argparse.BooleanOptionalAction, default=None,
                    help="multiple-choice probe accuracy of every run (default: on for --layers)")  # fmt: skip
    sw.add_argument(
        "--speed", action="store_true", help="CPU prefill/decode speed-up of every run against dense"
    )
    sw.add_argument(
        "--model", default="tiny-llama", help="tiny-llama (default), random-llama, a hub id or a path"
    )
    sw.add_argument(
        "--dataset", default="pydoc", help="pydoc (offline, default), wikitext2, c4, or a UTF-8 file"
    )
    for name in ("nsamples", "seqlen", "eval_tokens", "probe_items"):
        sw.add_argument("--" + name.replace("_", "-"), type=int, help="as for kb reproduce")
    sw.add_argument("--launcher", choices=("local", "submitit"), default="local",
                    help="local (default: this process) or submitit (one Slurm job per method, local processes "
                    "without Slurm; settings: KB_SUBMITIT_*, KB_SLURM_*), joined into one sweep")  # fmt: skip
    sw.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: cuda if available, else cpu")
    sw.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    sw_out = sw.add_mutually_exclusive_group()
    sw_out.add_argument(
        "--json", metavar="PATH", help="result file (default: results/sweep-<name>-<model>.json)"
    )
    sw_out.add_argument(
        "--commit", action="store_true", help="write reproductions/sweeps/<name>.json (the site's)"
    )
    sw.set_defaults(func=_runs_models(_run_sweep))

    pr = subparsers.add_parser(
        "prune",
        help="prune a model with one method and save it",
        description="Prune a model with one method and save a from_pretrained-loadable directory. Methods: "
        + registry.methods_help(),
        formatter_class=_NoHyphenBreaks,
    )
    pr.add_argument("method", help=", ".join(registry.METHODS))
    _common(pr, "the method's default")
    pr.add_argument("--save", metavar="DIR", required=True, help="output directory (must not exist)")
    pr.add_argument("--force", action="store_true", help="replace an existing --save directory")
    pr.add_argument("--low-memory", action="store_true",
                    help="a local safetensors model larger than memory: read, prune and write one decoder layer at "
                    "a time (wanda, sparsegpt; same masks as the in-memory path)")  # fmt: skip
    pr.add_argument("--eval", metavar="T,T,...",
                    help="after saving, score the model as `kb eval` does on these tasks and put the scores in its "
                    "model card and .eval_results/ (needs the eval extra)")  # fmt: skip
    pr.add_argument(
        "--eval-limit", type=int, metavar="N", help="with --eval: at most N items per task (a smoke test)"
    )
    pr.set_defaults(func=_runs_models(_run_prune))


def _common(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--model", default="tiny-llama", help="tiny-llama (default), random-llama, a hub id or a path"
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--sparsity", type=float, help=f"fraction of weights to prune (default: {default})")
    target.add_argument(
        "--pattern", metavar="N:M", help="semi-structured: prune N of every M weights, e.g. 2:4"
    )
    p.add_argument("--layers", type=int, help=f"decoder layers to remove, depth methods (default: {default})")
    p.add_argument(
        "--kv-budget",
        type=float,
        metavar="F",
        help=f"KV cache kept, as a fraction of the prompt in (0, 1] (kv-cache methods; default: {default})",
    )
    p.add_argument(
        "--params",
        type=float,
        metavar="F",
        help="fraction of the decoder's parameters to remove, in (0, 1) (width methods; each maps it onto its own "
        "size options; default: their own size)",
    )
    p.add_argument(
        "--dataset",
        help="pydoc (offline, default), wikitext2, c4, or a UTF-8 file (with --protocol paper: default "
        "the paper's text; a file stands in for it)",
    )
    p.add_argument("--nsamples", type=int, help=f"calibration sequences (default {_DATA['nsamples']})")
    p.add_argument("--seqlen", type=int, help=f"tokens per sequence (default {_DATA['seqlen']})")
    p.add_argument("--eval-tokens", type=int,
                   help=f"evaluation tokens, cut into seqlen windows (default {_DATA['eval_tokens']})")  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument(
        "--batch-size", type=int, help="calibration chunk (default: all at once, one pass per layer)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="option of the paper's own method, validated by its config (repeatable); not a target: "
                   "use --sparsity, --pattern, --layers, --kv-budget or --params for those")  # fmt: skip


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The options the user gave, checked cheaply before torch is imported. Target values are only collected
    here: their bounds are checked once, with every other way a target comes in, when the run's config is
    built (`runner.method_config`)."""
    from reference_impls import registry
    from reference_impls.harness.options import parse_assignments

    target: dict[str, Any] = {}
    if args.pattern is not None:
        target["pattern"] = registry.parse_pattern(args.pattern)  # "2:4" -> (2, 4), as results record it
    for name in ("sparsity", "layers", "kv_budget", "params"):
        if getattr(args, name) is not None:
            target[name] = getattr(args, name)
    overrides = parse_assignments(args.set)
    registry.refuse_set_targets(overrides)  # `--set sparsity=0.9` would reach the paper's own method only
    args.dataset = args.dataset or "pydoc"
    out: dict[str, Any] = {"model": args.model, "dataset": args.dataset, "device": args.device, "seed": args.seed,
                           "batch_size": args.batch_size, "target": target, "overrides": overrides}  # fmt: skip
    for name in ("nsamples", "seqlen", "eval_tokens", "probe_items"):
        value = getattr(args, name, None)
        if value is not None:
            if value < 1:
                raise KBError(f"--{name.replace('_', '-')} must be a positive integer")
            out[name] = value
    if getattr(args, "all_runs", False):
        out["all_runs"] = True
    if args.batch_size is not None and args.batch_size < 1:
        raise KBError("--batch-size must be a positive integer")
    _check_dataset(args.dataset)
    return out


def _check_dataset(name: str) -> None:
    """A `--dataset` that is neither a built-in corpus nor a readable file: one line, before anything loads."""
    if name not in ("pydoc", "wikitext2", "c4") and not Path(name).expanduser().is_file():
        raise KBError(f"dataset {name!r} is neither pydoc, wikitext2, c4 nor a readable file")


def _check_lengths(options: Any) -> None:
    if options.seqlen < 2:
        raise KBError("--seqlen must be at least 2")
    if options.eval_tokens < options.seqlen:
        raise KBError(f"--eval-tokens ({options.eval_tokens}) must be at least --seqlen ({options.seqlen})")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "model"


def _run_reproduce(args: argparse.Namespace) -> int:
    from reference_impls import registry

    if args.protocol == "paper":
        return _run_paper_protocol(args)
    paper_only = [
        f for f, v in (("--paper-model", args.paper_model), ("--max-windows", args.max_windows)) if v
    ]
    if paper_only or args.tolerance != 0.05:
        raise KBError(f"{(paper_only or ['--tolerance'])[0]} goes with --protocol paper")
    if args.all:
        return _run_all(args)
    if args.paper is None:
        raise KBError("name a paper, or pass --all for every runnable paper")
    if args.kind or args.jobs != 1 or args.launcher != "local":
        raise KBError("--kind, --jobs and --launcher go with --all")
    spec = registry.paper_spec(args.paper)  # unknown / not-yet-implemented paper: exit 2 before heavy imports
    explicit = _explicit(args)
    from kb.paths import repo_root
    from reference_impls.harness.report import write_report
    from reference_impls.harness.runner import paper_options, reproduce

    options = paper_options(spec, explicit)
    _check_lengths(options)
    _check_architecture(registry.paper_methods(spec.paper), args.model)
    if args.commit:
        out: Path | None = repo_root() / COMMITTED / f"{spec.paper}.json"
    elif args.no_save:
        out = None
    else:
        out = Path(args.json or repo_root() / "results" / f"{spec.paper}-{_slug(args.model)}.json")
    if out is not None:
        out = check_writable(out, what="--json file")  # before the model is loaded, not after the run
    record = reproduce(spec.paper, options)
    if args.commit:
        # the committed result carries the behaviour of the code that made it, and the verdicts before it
        from reference_impls.harness.fingerprint import stamp
        from reference_impls.harness.report import keep_history

        assert out is not None
        record = keep_history(stamp(record, repo_root()), out)
    if out is not None:  # before printing: a closed stdout (`| head`) must not lose the result
        write_report(out, record)
        print(f"kb: results written to {out}", file=sys.stderr)
    print(format_table(record))
    return 0 if record.claim.holds else 1  # does not hold, or inconclusive: 1


COMMITTED = "reproductions"


def _run_paper_protocol(args: argparse.Namespace) -> int:
    """`--protocol paper`: the paper's own protocol on `--model`, beside the record's rows; exit 0 when every
    matching row is within `--tolerance`, 1 when one is not or none matches, 2 on bad input."""
    from kb.protocols import protocol_of
    from reference_impls import registry

    if args.all or args.paper is None:
        raise KBError("--protocol paper runs one paper: name it (not --all)")
    spec = registry.paper_spec(args.paper)
    protocol = protocol_of(spec.paper)  # none recorded: one line, exit 2
    given = [f for f, v in (("--layers", args.layers), ("--kv-budget", args.kv_budget), ("--params", args.params),
                            ("--eval-tokens", args.eval_tokens), ("--probe-items", args.probe_items),
                            ("--batch-size", args.batch_size)) if v is not None]  # fmt: skip
    given += [
        f for f, v in (("--set", args.set), ("--all-runs", args.all_runs), ("--commit", args.commit)) if v
    ]
    if given:
        raise KBError(f"{given[0]} does not go with --protocol paper (it runs the paper's own setting; "
                      "--sparsity/--pattern, --seqlen, --nsamples and --max-windows shrink or change it)")  # fmt: skip
    for flag, value in (
        ("--seqlen", args.seqlen),
        ("--nsamples", args.nsamples),
        ("--max-windows", args.max_windows),
    ):
        if value is not None and value < (2 if flag == "--seqlen" else 1):
            raise KBError(f"{flag} must be {'at least 2' if flag == '--seqlen' else 'a positive integer'}")
    if not 0 <= args.tolerance < 1:
        raise KBError("--tolerance must be a fraction in [0, 1), e.g. 0.05")
    if args.dataset is not None:
        _check_dataset(args.dataset)
    target: dict[str, Any] = {}
    if args.pattern is not None:
        target["pattern"] = registry.parse_pattern(args.pattern)
    elif args.sparsity is not None:
        target["sparsity"] = args.sparsity
    _check_architecture([protocol.method], args.model)
    from kb.paths import repo_root

    out: Path | None = None
    if not args.no_save:
        default = repo_root() / "results" / f"{spec.paper}-{_slug(args.model)}-paper-protocol.json"
        out = check_writable(Path(args.json or default), what="--json file")
    from reference_impls.harness.paper_protocol import run_protocol

    record = run_protocol(spec.paper, model=args.model, dataset=args.dataset, paper_model=args.paper_model,
                          target=target or None, window=args.seqlen, nsamples=args.nsamples,
                          max_windows=args.max_windows, tolerance=args.tolerance, device=args.device,
                          seed=args.seed)  # fmt: skip
    if out is not None:
        from kb.fsutil import write_text_atomic

        write_text_atomic(out, record.model_dump_json(indent=1) + "\n")
        print(f"kb: results written to {out}", file=sys.stderr)
    print(format_protocol(record))
    return 0 if record.matches else 1


def format_protocol(record: Any) -> str:
    """The paper's protocol, ours, the differences, and our numbers beside the record's rows."""
    from kb.protocols import describe

    paper = record.protocol.model_dump(mode="json")
    paper["calibration"] = dict(paper["calibration"])
    lines = [f"{record.paper} on {record.model}, compared with the record's {record.paper_model} rows",
             f"paper's protocol: {describe(paper)} ({record.protocol.source.locator})",
             f"our run:          {describe(record.ran)}"]  # fmt: skip
    lines += [f"differs:          {d}" for d in record.differences]
    head = f"{'arm':<12} {'setting':<18} {'ours':>10} {'paper':>10} {'relative':>9}  row"
    lines += ["", head, "-" * len(head)]
    for arm in record.arms:
        rows = [r for r in record.rows if r.method == arm.method]
        label = arm.setting.label()
        if not rows:
            lines.append(f"{arm.method:<12} {label:<18} {arm.ppl:>10.3f} {'-':>10} {'-':>9}  no matching row")
        for r in rows:
            lines.append(f"{arm.method:<12} {label:<18} {arm.ppl:>10.3f} {r.value:>10.3f} {r.relative:>+9.1%}  "
                         f"{r.model}, window {r.seqlen or 'not recorded'} ({r.source.locator})")  # fmt: skip
    lines += ["", f"verdict: {record.verdict}"]
    return "\n".join(lines)


def _run_all(args: argparse.Namespace) -> int:
    """`--all`: each paper with its own settings; exit 0 when every run completed, 1 when one failed."""
    import time

    if args.paper is not None:
        raise KBError("--all runs every runnable paper; do not name one")
    given = [f for f, v in (("--sparsity", args.sparsity), ("--pattern", args.pattern), ("--layers", args.layers),
                            ("--kv-budget", args.kv_budget), ("--params", args.params), ("--json", args.json))
             if v is not None]  # fmt: skip
    if args.set:
        given.append("--set")
    if given:
        raise KBError(f"{given[0]} does not go with --all: each paper runs with its own settings")
    if args.jobs < 1:
        raise KBError("--jobs must be a positive integer")
    explicit = _explicit(args)
    explicit.pop("target")
    explicit.pop("overrides")
    from kb.paths import repo_root
    from reference_impls.harness.batch import run_all, select_papers, summary

    papers = _supported_papers(select_papers(args.kind), args.model)
    commit_dir = None
    if args.commit:
        commit_dir = check_writable(repo_root() / COMMITTED, what="reproductions directory", directory=True)
    elif not args.no_save:
        print("kb: --all writes nothing without --commit (results are summarised below)", file=sys.stderr)
    start = time.perf_counter()
    if args.launcher == "submitit":
        from reference_impls.harness.launcher import job_folder, run_submitit

        if args.jobs != 1:
            raise KBError("--jobs is for --launcher local; submitit runs one job per paper")
        results = run_submitit(papers, explicit, folder=job_folder(), commit_dir=commit_dir)
    else:
        results = run_all(papers, explicit, jobs=args.jobs, commit_dir=commit_dir)
    print(summary(results, time.perf_counter() - start))
    failed = [r.paper for r in results if r.record is None]
    if failed:
        print(f"kb: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _values(text: str, axis: str) -> list[Any]:
    """The numbers of a sweep axis; their bounds are checked with every run's config (`runner.method_config`)."""
    flag = "--" + axis.replace("_", "-")
    out: list[Any] = []
    for part in text.split(","):
        try:
            value: Any = int(part) if axis == "layers" else float(part)
        except ValueError:
            raise KBError(f"{flag} takes comma-separated numbers, got {part.strip()!r}") from None
        if value in out:
            raise KBError(f"{flag}: {value} is listed twice")
        out.append(value)
    return sorted(out)


def _run_sweep(args: argparse.Namespace) -> int:
    from reference_impls import registry

    axis: SweepAxis = next(a for a in get_args(SweepAxis) if getattr(args, a) is not None)
    values = _values(getattr(args, axis), axis)
    methods = list(dict.fromkeys(args.methods))
    for m in methods:
        spec = registry.method_spec(m)
        if axis not in spec.targets:
            accepts = ", ".join(registry.target_flag(t) for t in spec.targets) or "no target option"
            raise KBError(
                f"{registry.target_flag(axis)} does not apply to {m} ({spec.kind}); it takes {accepts}"
            )
    name = args.name or "-".join([axis.replace("_", "-"), *methods])
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise KBError(f"--name {name!r}: use lowercase letters, digits and hyphens")
    _check_architecture(methods, args.model)
    args.dataset = args.dataset or "pydoc"
    explicit = {k: getattr(args, k) for k in ("model", "dataset", "device", "seed")}
    for key in ("nsamples", "seqlen", "eval_tokens", "probe_items"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise KBError(f"--{key.replace('_', '-')} must be a positive integer")
            explicit[key] = value
    from kb.paths import repo_root

    if args.commit:
        out = repo_root() / COMMITTED / "sweeps" / f"{name}.json"
    else:
        out = Path(args.json or repo_root() / "results" / f"sweep-{name}-{_slug(args.model)}.json")
    out = check_writable(out, what="--json file")
    from reference_impls.harness.report import write_report
    from reference_impls.harness.runner import sweep, sweep_options

    options = sweep_options(methods, explicit)
    _check_lengths(options)
    probe = args.probe if args.probe is not None else axis == "layers"
    if args.launcher == "submitit":
        from reference_impls.harness.launcher import job_folder, run_sweep_submitit

        record = run_sweep_submitit(name, methods, axis, values, options, probe=probe, speed=args.speed,
                                    folder=job_folder())  # fmt: skip
    else:
        record = sweep(name, methods, axis, values, options, probe=probe, speed=args.speed)
    if args.commit:
        from reference_impls.harness.fingerprint import stamp

        record = stamp(record, repo_root())
    write_report(out, record)  # before printing: a closed stdout (`| head`) must not lose the result
    print(f"kb: sweep written to {out}", file=sys.stderr)
    print(format_table(record))
    return 0


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if value == value and abs(value) != float("inf") else str(value)


def _budget(cache: Any) -> str:
    if cache is None:
        return "-"
    return "full" if cache.budget_tokens is None else f"{cache.budget_tokens}/{cache.prompt_tokens}"


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.0f}"


def format_table(record: Any) -> str:
    """The comparison as aligned text: one row per run, only the columns some run measured."""
    runs = record.runs
    cols: list[tuple[str, Any]] = [
        ("run", lambda r: r.label),
        ("method", lambda r: r.method or "-"),
        ("layers", lambda r: str(r.metrics.size.layers)),
        ("params", lambda r: f"{r.metrics.size.params_decoder / 1e6:.1f}M"),
        ("sparsity", lambda r: f"{r.metrics.size.decoder_sparsity:.3f}"),
    ]
    if any(r.metrics.ppl is not None for r in runs):
        cols.append(("ppl", lambda r: _num(r.metrics.ppl, 2)))
    if any(r.metrics.probe is not None for r in runs):
        cols.append(("probe", lambda r: _num(r.metrics.probe.acc_norm if r.metrics.probe else None, 3)))
    if any(r.metrics.speed is not None for r in runs):
        cols.append(
            ("prefill x", lambda r: _num(r.metrics.speed.prefill_speedup if r.metrics.speed else None, 2))
        )
        cols.append(
            ("decode x", lambda r: _num(r.metrics.speed.decode_speedup if r.metrics.speed else None, 2))
        )
    if any(r.metrics.cache is not None for r in runs):
        cols += [
            ("cont. ppl", lambda r: _num(r.metrics.cache.ppl if r.metrics.cache else None, 2)),
            ("cache", lambda r: _budget(r.metrics.cache)),
            ("KiB prompt", lambda r: _kib(r.metrics.cache.cache_bytes_prompt if r.metrics.cache else None)),
            ("KiB end", lambda r: _kib(r.metrics.cache.cache_bytes_end if r.metrics.cache else None)),
            (
                "decode tok/s",
                lambda r: _num(r.metrics.cache.decode_tokens_per_s if r.metrics.cache else None, 1),
            ),
            ("decode x", lambda r: _num(r.metrics.cache.decode_speedup if r.metrics.cache else None, 2)),
        ]
    cols.append(("prune s", lambda r: f"{r.prune_seconds:.1f}"))
    rows = [tuple(name for name, _ in cols)] + [tuple(f(r) for _, f in cols) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    ds = record.dataset
    lines += [
        "",
        (
            f"{getattr(record, 'paper', None) or record.name} on {record.model}, {ds.corpus}: calibration "
            f"{ds.calibration.tokens} tokens, evaluation {ds.evaluation.tokens} tokens, {record.total_seconds:.0f} s"
        ),
    ]
    claim = getattr(record, "claim", None)
    if claim is not None:
        lines += [f"claim: {claim.statement}", f"verdict: {claim.verdict} ({claim.reason})"]
    return "\n".join(lines)


def _check_architecture(methods: list[str], model: str) -> None:
    """A method that does not run on the model's architecture: one line, exit 2, before the weights load."""
    from reference_impls.harness.architectures import check

    check(methods, model)


def _supported_papers(papers: list[str], model: str) -> list[str]:
    """`--all` on another architecture: the papers whose methods it supports; each left out is one line."""
    from reference_impls import registry
    from reference_impls.harness.architectures import model_config, refusal

    config = model_config(model)
    if config is None:
        return papers
    kept = []
    for paper in papers:
        reasons = [r for m in registry.paper_methods(paper) if (r := refusal(m, config)) is not None]
        if reasons:
            print(f"kb: {paper} left out: {reasons[0]}", file=sys.stderr)
        else:
            kept.append(paper)
    if not kept:
        raise KBError(f"{model}: no selected paper's methods run on this architecture")
    return kept


def _eval_tasks(args: argparse.Namespace) -> list[str]:
    """`kb prune --eval`: the task names, checked (and lm-eval's presence) before anything is pruned."""
    if args.eval is None:
        if args.eval_limit is not None:
            raise KBError("--eval-limit needs --eval")
        return []
    tasks = [t.strip() for t in args.eval.split(",") if t.strip()]
    if not tasks:
        raise KBError("--eval names no task")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise KBError("--eval-limit must be a positive integer")
    from reference_impls.harness.lm_eval_bridge import require_lm_eval, resolve_tasks

    require_lm_eval()
    resolve_tasks(tasks)
    return tasks


def _publish(args: argparse.Namespace, summary: dict[str, Any], save: Path, tasks: list[str]) -> None:
    """The saved directory's model card, then (with --eval) its scores in the card and in .eval_results/."""
    import shlex

    from kb.paths import repo_root
    from reference_impls.harness.model_card import add_evaluation, card_for_save

    command = (
        shlex.join(["kb", "prune", *sys.argv[2:]])
        if sys.argv[1:2] == ["prune"]
        else f"kb prune {args.method}"
    )
    card = card_for_save(save, summary, model=args.model, command=command, root=repo_root())
    print(f"kb: model card written to {card}", file=sys.stderr)
    if not tasks:
        return
    from reference_impls.harness.lm_eval_bridge import evaluate

    record = evaluate(str(save), tasks, device=args.device, limit=args.eval_limit,
                      progress=lambda msg: print(f"kb: eval: {msg}", file=sys.stderr))  # fmt: skip
    written = add_evaluation(save, record)
    print(f"kb: scores of {', '.join(t.task for t in record.tasks)} added to the card"
          f" ({len(written) - 1} Hub eval result files)", file=sys.stderr)  # fmt: skip


def _run_prune(args: argparse.Namespace) -> int:
    from reference_impls import registry

    registry.savable_method(args.method)  # unknown method or a cache policy: exit 2 before heavy imports
    tasks = _eval_tasks(args)
    explicit = _explicit(args)
    _check_architecture([args.method], args.model)
    save = Path(args.save).expanduser()
    if save.exists() and not args.force:
        raise KBError(f"{save} already exists; pass --force to replace it")
    check_writable(save, what="--save directory", directory=True)
    from reference_impls.harness.runner import RunOptions, prune_to_dir

    options = RunOptions(**explicit)
    _check_lengths(options)
    if args.low_memory:
        from reference_impls.harness.runner import stderr_log
        from reference_impls.harness.streaming import low_memory_prune

        low = low_memory_prune(args.method, options, save, force=args.force, log=stderr_log)
        print(f"{low['method']} (one layer at a time): {args.model} {low['layers']} layers, decoder sparsity "
              f"{low['decoder_sparsity']:.3f}, {low['bytes'] / 1e9:.2f} GB in {low['shards']} shards, in "
              f"{low['seconds']:.1f} s; saved to {low['saved']}")  # fmt: skip
        _publish(args, low, save, tasks)
        return 0
    s = prune_to_dir(args.method, options, save, force=args.force)
    before, after = s["before"], s["after"]
    print(
        f"{s['method']} ({s['kind']}): {s['model']} {before['layers']} -> {after['layers']} layers, "
        f"{before['params_total'] / 1e6:.2f}M -> {after['params_total'] / 1e6:.2f}M parameters, decoder sparsity "
        f"{after['decoder_sparsity']:.3f}, in {s['prune_seconds']:.1f} s; saved to {s['saved']}"
    )
    _publish(args, s, save, tasks)
    return 0
