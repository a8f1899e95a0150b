"""Runs built from the pieces: prune a model with a method, and reproduce a paper's headline comparison.

`reproduce` loads the model and data once, evaluates the dense model, then for each method of the paper
restores the dense weights, prunes, and evaluates; it returns the result record (see `kb reproduce`).
`prune_to_dir` prunes once and saves a `from_pretrained`-loadable model + tokenizer atomically.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kb.errors import KBError
from kb.fsutil import atomic_directory

from . import registry
from .config import build_config
from .data import TokenData, load_corpus, token_data
from .evaluate import perplexity
from .layerwise import iter_decoder_linears
from .models import LoadedModel, load_model
from .report import MethodResult, result_dict, versions

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunOptions:
    """Everything a run depends on; echoed verbatim into the result record."""

    model: str = "tiny-llama"
    dataset: str = "pydoc"
    nsamples: int = 16
    seqlen: int = 512
    eval_tokens: int = 4096
    device: str | None = None
    seed: int = 0
    sparsity: float = 0.5
    pattern: tuple[int, int] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, for the paper's own method
    batch_size: int | None = None  # calibration chunk; None = whole set in one pass per layer
    eval_batch_size: int = 1  # one window at a time: the (seqlen x vocab) logits dominate peak memory
    threads: int | None = None


def set_threads(threads: int | None) -> int:
    """Use every core this process may run on (or `$KB_THREADS`); returns the number chosen."""
    if threads is None:
        env = os.environ.get("KB_THREADS")
        threads = int(env) if env and env.isdigit() else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def method_module(method: str) -> Any:
    return importlib.import_module(registry.method_module(method))


def method_config(method: str, options: RunOptions, overrides: dict[str, Any] | None = None) -> Any:
    values: dict[str, Any] = {"sparsity": options.sparsity, **(overrides or {})}
    if options.pattern is not None:
        values["pattern"] = options.pattern
    return build_config(method_module(method).Config, values)


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


def prune_model(method: str, model: nn.Module, calib: torch.Tensor, config: Any, options: RunOptions, log: Log) -> float:
    """Prune `model` in place with `method`; returns wall seconds."""
    module = method_module(method)
    start = time.perf_counter()
    module.prune(model, calib, config, batch_size=options.batch_size, progress=layer_progress(method, log))
    return time.perf_counter() - start


def decoder_sparsity(model: nn.Module) -> float:
    zeros = total = 0
    for _name, linear in iter_decoder_linears(model):
        zeros += int((linear.weight == 0).sum())
        total += linear.weight.numel()
    return zeros / total if total else 0.0


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: lin.weight.detach().to("cpu", copy=True) for name, lin in iter_decoder_linears(model)}


def _restore(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, lin in iter_decoder_linears(model):
            lin.weight.copy_(snapshot[name].to(lin.weight.device))


def load_inputs(options: RunOptions, log: Log) -> tuple[LoadedModel, TokenData]:
    """Model, tokenizer and token streams for a run (data is read before the model, so bad input fails fast)."""
    corpus = load_corpus(options.dataset)
    start = time.perf_counter()
    loaded = load_model(options.model, options.device, seed=options.seed)
    log(f"kb: loaded {options.model} from {loaded.source} in {time.perf_counter() - start:.1f} s")
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit is not None and options.seqlen > limit:
        raise KBError(f"--seqlen {options.seqlen} exceeds {options.model}'s context of {limit} tokens")
    data = token_data(
        loaded.tokenizer, corpus, nsamples=options.nsamples, seqlen=options.seqlen,
        eval_tokens=options.eval_tokens, seed=options.seed,
    )  # fmt: skip
    d = data.describe()
    log(
        f"kb: corpus {data.corpus}: calibration {d['calibration']['samples']} x {options.seqlen} tokens, "
        f"evaluation {d['evaluation']['windows']} x {options.seqlen} tokens"
    )
    return loaded, data


def reproduce(paper: str, options: RunOptions, log: Log = stderr_log) -> dict[str, Any]:
    """Run a paper's headline comparison; returns the result record (also says whether the claim holds)."""
    spec = registry.paper_spec(paper)
    configs = {
        m: method_config(m, options, options.overrides if m == spec.method else None) for m in spec.methods
    }  # validated before anything heavy happens
    threads = set_threads(options.threads)
    t0 = time.perf_counter()
    loaded, data = load_inputs(options, log)
    model = loaded.model
    results: list[MethodResult] = []

    start = time.perf_counter()
    dense_ppl = perplexity(model, data.eval, batch_size=options.eval_batch_size)
    results.append(MethodResult("dense", 0.0, decoder_sparsity(model), dense_ppl, 0.0, time.perf_counter() - start))
    log(f"kb: dense ppl {dense_ppl:.2f}")
    dense = _snapshot(model)
    for method in spec.methods:
        if results[-1].method != "dense":
            _restore(model, dense)
        cfg = configs[method]
        log(f"kb: pruning with {method} ({_target(cfg)})")
        seconds = prune_model(method, model, data.calib, cfg, options, log)
        start = time.perf_counter()
        ppl = perplexity(model, data.eval, batch_size=options.eval_batch_size)
        results.append(
            MethodResult(method, cfg.sparsity, decoder_sparsity(model), ppl, seconds, time.perf_counter() - start,
                         cfg.model_dump(mode="json"))
        )  # fmt: skip
        log(f"kb: {method} ppl {ppl:.2f} (pruned in {seconds:.1f} s)")
    ppls = {r.method: r.ppl for r in results}
    return {
        "paper": paper,
        "model": options.model,
        "dataset": data.describe(),
        "config": {**asdict(options), "threads": threads, "device": str(model.get_input_embeddings().weight.device)},
        "versions": versions(),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "results": [result_dict(r) for r in results],
        "claim": {"statement": spec.claim, "holds": bool(spec.check(ppls))},
    }


def _target(config: Any) -> str:
    if config.pattern is not None:
        return f"{config.pattern[0]}:{config.pattern[1]}"
    return f"{config.sparsity:.0%} unstructured"


def prune_to_dir(
    method: str, options: RunOptions, save: Path, *, force: bool = False, log: Log = stderr_log
) -> dict[str, Any]:
    """Prune `options.model` with `method` and save model + tokenizer to `save` (atomically)."""
    module = method_module(method)
    config = method_config(method, options, options.overrides)
    save = Path(save).expanduser()
    if save.exists() and not force:
        raise KBError(f"{save} already exists; pass --force to replace it")
    threads = set_threads(options.threads)
    if module.NEEDS_CALIBRATION:
        loaded, data = load_inputs(options, log)
        calib: torch.Tensor | None = data.calib
    else:
        loaded = load_model(options.model, options.device, seed=options.seed)
        calib = None
    log(f"kb: pruning {options.model} with {method} ({_target(config)})")
    seconds = prune_model(method, loaded.model, calib, config, options, log)  # type: ignore[arg-type]
    actual = decoder_sparsity(loaded.model)
    with atomic_directory(save, replace=force) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
    return {
        "method": method,
        "model": options.model,
        "config": config.model_dump(mode="json"),
        "sparsity_actual": actual,
        "prune_seconds": round(seconds, 2),
        "threads": threads,
        "saved": str(save),
    }
