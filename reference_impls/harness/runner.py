"""Runs built from the pieces: reproduce a paper's headline comparison, or prune a model and save it.

`reproduce(paper, options)`:
1. resolve the options (command line > the paper's defaults > harness defaults) and validate the config
   of every run before anything heavy is loaded;
2. load the model and the token data once; measure the dense model (perplexity, and where the paper
   asks for them the probe and CPU speed);
3. for every labelled run: take a fresh copy of the dense model (runs never see each other's edits),
   call the method, check its outcome against the contract, measure;
4. decide the claim from every run's metrics and return a `kb.results.Reproduction`.
A claim near its bound (`PaperSpec.draws` > 1, from the pre-registered list) repeats steps 2-3 for each further
calibration draw: the same model, calibration samples drawn with seed `seed + 1000 k` (`draw_seeds`), the same
seed for the methods' own randomness, every arm the claim reads again (not the `extra` arms `--all-runs` adds); the
claim's intervals then combine draws and windows.
A comparison with kv-cache runs also evaluates every such run, and the dense model as the full-cache baseline,
with the long-context cache evaluation (`cacheeval`); a kv-cache run changes no weight, so its plain perplexity
(equal to dense) is not measured again. Its policy comes back from `apply_method` (`Applied.cache_policy`) and is
handed to `measure`: nothing is attached to the model.

Fresh copies: `reproduce` reloads the model from its local source for every run (safetensors from the
cache). `benchmarks/bench_fresh_copy.py` measured that at 0.33 s against 1.13 s for `copy.deepcopy` of
the model held in memory (tiny-llama, 2 cores), and it needs no second copy in memory; `compare` falls back
to a deep copy when it is given a model object without a way to reload it (tests, in-memory models).

Several comparisons in one process (`kb reproduce --all`, `kb sweep`) pass one `session.Session`: the model is
loaded once, and the dense measurements, the dense-model statistics and identical runs are shared between
comparisons whose data settings match. `sweep(...)` runs methods at several values of one target after one dense
baseline. Every result records the content hash of the code it ran (`registry.paper_code`).

`prune_to_dir(method, options, save)` runs one method and saves a `from_pretrained`-loadable directory (kv-cache
methods are refused: they change no weight, so there is nothing to save), after proving that the directory
reloads into the same model (`reload_check`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from kb.errors import KBError
from kb.results import (
    Claim,
    ClaimPart,
    Comparison,
    DatasetInfo,
    Draw,
    Outcome,
    Reproduction,
    RunResult,
    Sweep,
    SweepAxis,
)

from .. import registry
from ..registry import MethodSpec, PaperSpec, Results, Run, Verdict
from ..registry.measured import LEVEL, REPS, SEED
from . import reload_check
from .cacheeval import CacheSettings
from .contract import Context, cache_policy, check_outcome, model_facts, prune_inputs
from .data import TokenData
from .eviction import CachePolicy
from .layerwise import decoder_layers, input_embedding
from .metrics import measure, measure_dense, model_size
from .models import LoadedModel, load_model
from .options import build_config
from .probe import BUILTIN, continuation_task
from .report import machine, today, versions
from .session import Session, data_scope, drawn_seed, eval_scope, load_tokens
from .structure import check_savable, save_model

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunOptions:
    """Everything a run depends on; echoed into the result record."""

    model: str = "tiny-llama"
    dataset: str = "pydoc"
    nsamples: int = 16
    seqlen: int = 512
    eval_tokens: int = 4096
    device: str | None = None
    seed: int = 0
    calibration_seed: int | None = None  # a further calibration draw's seed (None: --seed); see `draw_seeds`
    target: dict[str, Any] = field(default_factory=dict)  # sparsity / pattern / layers / kv_budget / params
    overrides: dict[str, Any] = field(default_factory=dict)  # --set: the paper's own method; never a target
    batch_size: int | None = None  # calibration chunk; None = whole set in one pass per layer
    eval_batch_size: int = 1  # one window at a time: the (seqlen x vocab) logits dominate peak memory
    threads: int | None = None
    probe_items: int = 300
    all_runs: bool = False  # also the runs marked `extra` (context the claim does not use)
    speed_repeats: int = (
        3  # timed runs after one warm-up (median); 3 keeps the speed of a structured arm ~6 s
    )
    speed_prompt_tokens: int = 128
    continuation_tokens: int = 64  # kv-cache evaluation: the last tokens of each window are the continuation
    generate_tokens: int = 32  # kv-cache evaluation: greedy decoding steps timed with real eviction
    cache_repeats: int = 1  # kv-cache evaluation: timed generation runs (median)

    def __post_init__(self) -> None:
        registry.refuse_set_targets(self.overrides)  # a target has one way in: `target`, given to every arm


# Options a paper may set in `PaperSpec.defaults` besides its target.
_DATA_FIELDS = ("nsamples", "seqlen", "eval_tokens", "probe_items", "speed_repeats")
DRAW_STRIDE = 1000  # calibration draw k of a run at --seed s uses seed s + 1000 k


def draw_seeds(seed: int, draws: int) -> list[int]:
    """The calibration seeds of a comparison's draws: `--seed 1` shares none with `--seed 0`."""
    return [seed + DRAW_STRIDE * k for k in range(max(1, draws))]


def check_targets(spec: MethodSpec, target: dict[str, Any], owner: str) -> None:
    """A one-line error for a command-line target the method does not take (`owner` names it for the user)."""
    flag = registry.target_flag
    for key in target:
        if key not in spec.targets:
            accepts = ", ".join(flag(t) for t in spec.targets) or "no target option"
            raise KBError(f"{flag(key)} does not apply to {owner} ({spec.kind}); it takes {accepts}")


def paper_options(spec: PaperSpec, explicit: dict[str, Any]) -> RunOptions:
    """Harness defaults, then the paper's defaults, then what the command line set explicitly."""
    unknown = set(explicit) - {f.name for f in dataclasses.fields(RunOptions)}
    if unknown:
        raise KBError(f"unknown run options: {', '.join(sorted(unknown))}")
    target = {k: v for k, v in spec.defaults.items() if k in registry.TARGETS}
    given = dict(explicit.get("target") or {})
    check_targets(registry.METHODS[spec.method], given, spec.paper)
    for key in given:  # a target that every arm fixes for itself would change nothing: refuse it
        if not any(
            key in registry.METHODS[r.method].targets and key not in r.fixed_targets() for r in spec.runs
        ):
            raise KBError(f"{registry.target_flag(key)} would change no run of {spec.paper}: every run that takes "
                          f"it fixes its own {key}")  # fmt: skip
    if "pattern" in given:
        target.pop("sparsity", None)
    target.update(given)
    data = {k: v for k, v in spec.defaults.items() if k in _DATA_FIELDS}
    return RunOptions(**{**data, **explicit, "target": target})


def set_threads(threads: int | None) -> int:
    """Use every core this process may run on (or `$KB_THREADS`); returns the number chosen."""
    if threads is None:
        env = os.environ.get("KB_THREADS")
        threads = int(env) if env and env.isdigit() else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def method_module(method: str) -> Any:
    return importlib.import_module(registry.method_spec(method).module)


def method_config(spec: MethodSpec, target: dict[str, Any], *extra: dict[str, Any]) -> BaseModel:
    """The method's validated config: the target options it accepts, then `extra` layers in order (a run's fixed
    options). Every value of a target the method takes, however it came in, is checked here against the one table
    of bounds (`registry.check_target`), so it is a one-line error naming its flag."""
    values: dict[str, Any] = {k: v for k, v in target.items() if k in spec.targets}
    for layer in extra:
        values.update(layer)
    registry.check_targets({k: v for k, v in values.items() if k in spec.targets})
    return build_config(method_module(spec.name).Config, values)


@dataclass(frozen=True)
class Plan:
    run: Run
    spec: MethodSpec
    config: BaseModel


def plan_runs(paper: PaperSpec, options: RunOptions) -> list[Plan]:
    """Every run's validated config: the comparison's target goes to every arm whose method takes it, except
    where the arm fixes that target itself (`Run.fixed_targets`: DSnoT's `wanda-60`); `--set` options go to the
    paper's own method and may not change what defines a run (e.g. ShortGPT's `selection` arms)."""
    own_spec = registry.method_spec(paper.method)
    method_config(own_spec, options.target, options.overrides)  # bad values are named as options
    for run in paper.runs:
        clash = sorted(set(options.overrides) & set(run.options)) if run.method == paper.method else []
        if clash:
            raise KBError(f"--set {clash[0]} is fixed by run {run.label!r} of the {paper.paper} comparison; "
                          f"use kb prune {paper.method} --set {clash[0]}=... for other values")  # fmt: skip
    plans = []
    for run in paper.runs:
        if run.extra and not options.all_runs:
            continue
        mspec = registry.method_spec(run.method)
        own = options.overrides if run.method == paper.method else {}
        target = {k: v for k, v in options.target.items() if k not in run.fixed_targets()}
        plans.append(Plan(run, mspec, method_config(mspec, target, own, dict(run.options))))
    return plans


def layer_progress(label: str, log: Log) -> Callable[[int, int], None]:
    """Per-layer progress: a rewritten line on a terminal, a few lines otherwise."""
    tty = sys.stderr.isatty()
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        text = f"  {label}: {done}/{total} ({elapsed:.1f} s)"
        if tty:
            print("\r" + text, end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 3) == 0:
            log(text)

    return report


def load_inputs(
    options: RunOptions, log: Log, session: Session | None = None
) -> tuple[LoadedModel, TokenData]:
    """Model, tokenizer and token streams for a run (data is read before the model, so bad input fails fast);
    a `session` keeps them for the next paper with the same settings."""
    session = session or Session()
    session.corpus(options.dataset)
    loaded = session.model(options.model, options.device, options.seed, log)
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit is not None and options.seqlen > limit:
        raise KBError(f"--seqlen {options.seqlen} exceeds {options.model}'s context of {limit} tokens")
    data = load_tokens(session, options, loaded)
    d = data.describe()
    log(
        f"kb: corpus {data.corpus}: calibration {d['calibration']['samples']} x {options.seqlen} tokens, "
        f"evaluation {d['evaluation']['windows']} x {options.seqlen} tokens"
    )
    return loaded, data


def _target_of(spec: MethodSpec, config: BaseModel) -> dict[str, Any]:
    return {t: getattr(config, t) for t in spec.targets if getattr(config, t, None) is not None}


@dataclass(frozen=True)
class Applied:
    """What one method did: its checked outcome, the seconds `prune` took, and for a kv-cache method the cache
    policy its outcome describes (None for every other kind), which the run's cache evaluation is given."""

    outcome: Outcome
    seconds: float
    cache_policy: CachePolicy | None = None


def apply_method(
    model: nn.Module, plan_spec: MethodSpec, config: BaseModel, calib: torch.Tensor | None, ctx: Context
) -> Applied:
    """Run one method on `model` in place and check its outcome. The method gets `calib` only when its spec says
    it needs calibration (`contract.prune_inputs`: an error when it needs it and `calib` is None); a kv-cache
    method's policy comes from its module's `policy(config)` (`contract.cache_policy`)."""
    module = method_module(plan_spec.name)
    given = prune_inputs(plan_spec.name, plan_spec.needs_calibration, calib, ctx)
    before = model_facts(model)
    start = time.perf_counter()
    outcome = module.prune(model, given, config, ctx)
    seconds = time.perf_counter() - start
    check_outcome(
        plan_spec.name, plan_spec.kind, before, model_facts(model), outcome, _target_of(plan_spec, config)
    )
    policy = cache_policy(plan_spec.name, module, config, outcome) if plan_spec.kind == "kv-cache" else None
    return Applied(outcome, seconds, policy)


def compare(
    dense: nn.Module,
    tokenizer: Any,
    data: TokenData,
    plans: list[Plan],
    options: RunOptions,
    *,
    probe: bool = False,
    ppl: bool = True,
    log: Log = stderr_log,
    fresh: Callable[[], nn.Module] | None = None,
    session: Session | None = None,
) -> list[RunResult]:
    """The dense baseline and every planned run, each run on a fresh dense model: `fresh()` (a reload), or a
    deep copy of `dense`, which is never modified. `ppl=False` skips the plain perplexity of every run
    (kv-cache papers judge the cache evaluation; training stand-ins report what their own models did). With a
    `session` (whose model `dense` is), dense measurements, dense-model statistics and identical runs are shared
    with the other comparisons of the process."""
    session = session or Session()
    scope = data_scope(options)

    def once(kind: str, key: Any, compute: Callable[[], Any]) -> tuple[Any, float]:
        return session.memo(kind, (scope, key), compute)

    def once_dense(kind: str, key: Any, compute: Callable[[], Any]) -> tuple[Any, float]:
        return session.memo(kind, (eval_scope(options), key), compute)  # the same in every calibration draw

    task = None
    if probe:
        task, _ = once_dense("probe-task", options.probe_items,
                       lambda: continuation_task(data.heldout, tokenizer, items=options.probe_items))  # fmt: skip
    want_speed = any(p.run.speed for p in plans)
    prompt = _speed_prompt(data, options.speed_prompt_tokens) if want_speed else None
    cache = None
    if any(p.spec.kind == "kv-cache" for p in plans):
        cache = CacheSettings(continuation_tokens=options.continuation_tokens, generate_tokens=options.generate_tokens,
                              repeats=options.cache_repeats, batch_size=options.eval_batch_size)  # fmt: skip
    computed_before = sum(session.computed.values())
    dense_metrics, dense_speed, seconds = measure_dense(
        dense, once_dense, eval_windows=data.eval if ppl else None, eval_batch_size=options.eval_batch_size, task=task,
        task_key=options.probe_items, speed_prompt=prompt, speed_repeats=options.speed_repeats,
        cache_windows=data.eval, cache=cache,
    )  # fmt: skip
    reused = " measured earlier in this process:" if sum(session.computed.values()) == computed_before else ""
    log(f"kb: dense{reused} {_summary(dense_metrics)} ({seconds:.1f} s)")
    results = [RunResult(label="dense", kind="dense", metrics=dense_metrics, eval_seconds=seconds)]
    shared = session.dense_stats(scope)  # dense-model statistics reused across runs (see Context.dense_stats)
    for plan in plans:
        config = plan.config.model_dump(mode="json")
        probed = options.probe_items if probe and plan.run.probe else None
        key = (plan.spec.name, json.dumps(config, sort_keys=True), plan.run.speed, ppl, probed, cache,
               options.batch_size, options.eval_batch_size, options.speed_prompt_tokens, options.speed_repeats,
               torch.get_num_threads())  # fmt: skip
        done = session.has("run", (scope, key))
        run, _ = once("run", key, functools.partial(
            _one_run, plan, config, dense, data, options, task, prompt, dense_speed, dense_metrics, cache, shared,
            log, fresh, ppl,
        ))  # fmt: skip
        if done:
            log(
                f"kb: {plan.run.label}: {plan.spec.name} with the same settings already ran in this process: reused"
            )
        results.append(run.model_copy(update={"label": plan.run.label}))
    return results


def _one_run(
    plan: Plan, config: dict[str, Any], dense: nn.Module, data: TokenData, options: RunOptions, task: Any,
    prompt: torch.Tensor | None, dense_speed: Any, dense_metrics: Any, cache: CacheSettings | None,
    shared: dict[Any, Any], log: Log, fresh: Callable[[], nn.Module] | None, ppl: bool,
) -> RunResult:  # fmt: skip
    model = fresh() if fresh is not None else copy.deepcopy(dense)
    ctx = Context(batch_size=options.batch_size, progress=layer_progress(plan.run.label, log),
                  seed=drawn_seed(options), log=log, dense_stats=shared)  # fmt: skip
    log(f"kb: {plan.run.label}: {plan.spec.name} {_options_text(plan.config)}")
    applied = apply_method(model, plan.spec, plan.config, data.calib, ctx)
    outcome, prune_seconds = applied.outcome, applied.seconds
    kv = plan.spec.kind == "kv-cache"
    metrics, _sample, eval_seconds = measure(
        model, eval_windows=data.eval if ppl and not kv else None, eval_batch_size=options.eval_batch_size,
        task=task if plan.run.probe else None,
        speed_prompt=prompt if plan.run.speed else None, dense_speed=dense_speed,
        speed_repeats=options.speed_repeats, speed_against=dense, cache_windows=data.eval if kv else None, cache=cache,
        cache_policy=applied.cache_policy, dense_cache=dense_metrics.cache,
    )  # fmt: skip
    log(f"kb: {plan.run.label}: {_summary(metrics)} (pruned in {prune_seconds:.1f} s)")
    return RunResult(
        label=plan.run.label, method=plan.spec.name, kind=plan.spec.kind, config=config, outcome=outcome,
        metrics=metrics, prune_seconds=prune_seconds, eval_seconds=eval_seconds,
    )  # fmt: skip


def _speed_prompt(data: TokenData, tokens: int) -> torch.Tensor:
    stream = data.heldout if data.heldout.numel() >= tokens else data.eval.reshape(-1)
    return stream[:tokens].unsqueeze(0)


def _summary(metrics: Any) -> str:
    parts = []
    if metrics.ppl is not None:
        parts.append(f"ppl {metrics.ppl:.2f}")
    if metrics.probe is not None:
        parts.append(f"probe acc_norm {metrics.probe.acc_norm:.3f}")
    if metrics.speed is not None and metrics.speed.prefill_speedup is not None:
        parts.append(
            f"prefill x{metrics.speed.prefill_speedup:.2f}, decode x{metrics.speed.decode_speedup:.2f}"
        )
    if metrics.cache is not None:
        c = metrics.cache
        budget = (
            "full cache" if c.budget_tokens is None else f"cache {c.budget_tokens}/{c.prompt_tokens} tokens"
        )
        parts.append(f"continuation ppl {c.ppl:.2f} ({budget}, {c.cache_bytes_end / 2**20:.2f} MiB at the end, "
                     f"decode {c.decode_tokens_per_s:.1f} tok/s)")  # fmt: skip
    parts.append(f"{metrics.size.layers} layers, {metrics.size.params_decoder / 1e6:.1f}M decoder params")
    return ", ".join(parts)


def _options_text(config: BaseModel) -> str:
    return " ".join(f"{k}={v}" for k, v in config.model_dump(mode="json").items())


def reproduce(
    paper: str, options: RunOptions, log: Log = stderr_log, session: Session | None = None
) -> Reproduction:
    """Run a paper's headline comparison; the record says whether the claim holds and why, and which code
    (content hash) produced it. A `session` shares the model, data and dense measurements with other papers."""
    spec = registry.paper_spec(paper)
    plans = plan_runs(spec, options)  # every config validated before anything heavy happens
    code = registry.paper_code(paper)  # what is about to run
    threads = set_threads(options.threads)
    t0 = time.perf_counter()
    session = session or Session()
    loaded, data = load_inputs(options, log, session)
    layers = options.target.get("layers")
    if layers is not None and layers >= len(decoder_layers(loaded.model)):
        raise KBError(f"cannot remove {layers} of {len(decoder_layers(loaded.model))} decoder layers of "
                      f"{options.model}; ask for fewer with --layers")  # fmt: skip

    def reload() -> nn.Module:
        return load_model(options.model, options.device, seed=options.seed).model

    draws: list[list[RunResult]] = []
    seeds = draw_seeds(options.seed, spec.draws)
    for k, seed in enumerate(seeds):
        drawn = options if k == 0 else dataclasses.replace(options, calibration_seed=seed)
        if k:
            log(f"kb: calibration draw {k + 1} of {len(seeds)} (seed {seed})")
            data = load_tokens(session, drawn, loaded)
        planned = (
            plans if k == 0 else [p for p in plans if not p.run.extra]
        )  # the claim never reads an extra arm
        draws.append(compare(loaded.model, loaded.tokenizer, data, planned, drawn, probe="probe" in spec.metrics,
                             ppl="ppl" in spec.metrics, log=log, fresh=reload, session=session))  # fmt: skip
    runs = draws[0]
    results = Results.of_runs(runs, draws[1:])
    judged = spec.check(results)
    figures = spec.figures(results) if spec.figures else []
    device = str(input_embedding(loaded.model).weight.device)
    return Reproduction(
        paper=paper, model=options.model, dataset=DatasetInfo.model_validate(data.describe()),
        config={**dataclasses.asdict(options), "threads": threads, "device": device,
                "probe": BUILTIN if "probe" in spec.metrics else None},
        versions=versions(), total_seconds=round(time.perf_counter() - t0, 2), runs=runs,
        draws=[Draw(seed=seed, runs=later) for seed, later in zip(seeds[1:], draws[1:], strict=True)],
        claim=claim_record(spec.statement(options.target), judged, len(seeds)),
        figures=figures, code=code, produced=today(), machine=machine(threads, device),
    )  # fmt: skip


def claim_record(statement: str, judged: Verdict, draws: int) -> Claim:
    """The result's claim: the verdict, its reason, and every judged part with its comparisons' intervals."""
    parts = [
        ClaimPart(text=p.text, verdict=p.state, comparisons=[
            Comparison(verdict=c.state, scale=c.scale, estimate=c.estimate, low=c.low, high=c.high, units=c.units)
            for c in p.comparisons
        ])
        for p in judged.parts if p.judged
    ]  # fmt: skip
    return Claim(statement=statement, verdict=judged.state, reason=judged.reason, parts=parts, level=LEVEL,
                 bootstrap_reps=REPS, bootstrap_seed=SEED, draws=draws)  # fmt: skip


def sweep_options(methods: list[str], explicit: dict[str, Any]) -> RunOptions:
    """Harness defaults, then the data options the methods' papers agree on (KV-cache papers use shorter
    windows), then what the command line set."""
    found: dict[str, set[Any]] = {}
    for m in methods:
        paper = registry.method_spec(m).paper
        if paper in registry.PAPERS:
            for k, v in registry.PAPERS[paper].defaults.items():
                if k in _DATA_FIELDS:
                    found.setdefault(k, set()).add(v)
    data = {k: next(iter(v)) for k, v in found.items() if len(v) == 1}
    return RunOptions(**{**data, **explicit})


def sweep(
    name: str, methods: list[str], axis: SweepAxis, values: list[Any], options: RunOptions, *, probe: bool = False,
    speed: bool = False, log: Log = stderr_log, session: Session | None = None,
) -> Sweep:  # fmt: skip
    """Every method at every value of one target, after one dense baseline (one model load, shared dense
    measurements and statistics); a `kb.results.Sweep` with the content hash of the code it ran."""
    specs = [registry.method_spec(m) for m in methods]
    for spec in specs:
        check_targets(spec, {axis: None}, spec.name)
    plans = [
        Plan(Run(f"{spec.name}@{value}", spec.name, speed=speed), spec, method_config(spec, {axis: value}))
        for value in values
        for spec in specs
    ]
    code = registry.sweep_code(methods)
    threads = set_threads(options.threads)
    t0 = time.perf_counter()
    session = session or Session()
    loaded, data = load_inputs(options, log, session)
    n = len(decoder_layers(loaded.model))
    if axis == "layers" and max(values) >= n:
        raise KBError(f"cannot remove {max(values)} of {n} decoder layers of {options.model}")

    def reload() -> nn.Module:
        return load_model(options.model, options.device, seed=options.seed).model

    all_kv = all(spec.kind == "kv-cache" for spec in specs)
    runs = compare(loaded.model, loaded.tokenizer, data, plans, options, probe=probe, ppl=not all_kv, log=log,
                   fresh=reload, session=session)  # fmt: skip
    device = str(input_embedding(loaded.model).weight.device)
    return Sweep(
        name=name, model=options.model, axis=axis, values=values, methods=methods,
        dataset=DatasetInfo.model_validate(data.describe()),
        config={**dataclasses.asdict(options), "threads": threads, "device": device, "probe": probe,
                "speed": speed},
        versions=versions(), total_seconds=round(time.perf_counter() - t0, 2), runs=runs, code=code,
        produced=today(), machine=machine(threads, device),
    )  # fmt: skip


def prune_to_dir(
    method: str, options: RunOptions, save: Path, *, force: bool = False, log: Log = stderr_log
) -> dict[str, Any]:
    """Prune `options.model` with `method` and save model + tokenizer to `save` (atomically).

    A model with a part the saved config cannot carry is refused before pruning (`structure.check_savable`,
    exit 2); the written directory is reloaded and compared with the pruned model before it is published
    (`reload_check`: a mismatch is exit 1 and leaves no directory). `"reload"` in the result is that comparison.
    """
    mspec = registry.savable_method(method)
    check_targets(mspec, options.target, method)
    config = method_config(mspec, options.target, options.overrides)
    save = Path(save).expanduser()
    if save.exists() and not force:
        raise KBError(f"{save} already exists; pass --force to replace it")
    threads = set_threads(options.threads)
    if mspec.needs_calibration:
        loaded, data = load_inputs(options, log)
        calib: torch.Tensor | None = data.calib
    else:
        loaded = load_model(options.model, options.device, seed=options.seed)
        calib = None
    check_savable(loaded.model, options.model)  # a part the saved config cannot carry: refused before pruning
    before = model_size(loaded.model)
    log(f"kb: pruning {options.model} with {method} ({_options_text(config)})")
    ctx = Context(
        batch_size=options.batch_size, progress=layer_progress(method, log), seed=options.seed, log=log
    )
    applied = apply_method(loaded.model, mspec, config, calib, ctx)
    outcome, seconds = applied.outcome, applied.seconds
    after = model_size(loaded.model)
    ref = reload_check.reference(loaded.model, loaded.tokenizer)
    reload = save_model(loaded.model, loaded.tokenizer, save, replace=force,
                        verify=lambda tmp: reload_check.verify(tmp, ref, device=options.device,
                                                               shown=save))  # fmt: skip
    log(f"kb: reloaded the saved model: logits within {reload['max_abs_logit_diff']:.2g} of the pruned model's "
        f"on {reload['prompts']} prompts, generates ({reload['seconds']:.1f} s)")  # fmt: skip
    return {
        "method": method, "kind": mspec.kind, "model": options.model, "config": config.model_dump(mode="json"),
        "outcome": outcome.model_dump(mode="json"), "before": before.model_dump(), "after": after.model_dump(),
        "prune_seconds": round(seconds, 2), "threads": threads, "saved": str(save), "reload": reload,
    }  # fmt: skip
