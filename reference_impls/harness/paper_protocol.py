"""`kb reproduce PAPER --protocol paper`: the paper's own evaluation protocol on a real model, beside its numbers.

The paper's protocol is data (`data/paper-protocols.yaml`, read by `kb.protocols`): evaluation text and split,
window length (stride = window: non-overlapping windows, the tail dropped), token perplexity over every window,
calibration source and size, and the headline setting. This module runs exactly two arms on the given model,
the dense model and the paper's method at that setting (the method prunes the same loaded model in place, so a
7B model is held once), and compares each with the record's `results:` rows for the same model, setting, dataset,
metric and method (`kb.protocols.matching_rows`).

Online, WikiText-2 and C4 come through `datasets` (`harness.data.hub_corpus`). Offline, `--dataset FILE` stands
in for both (its calibration and evaluation parts, `harness.data.file_corpus`), and every departure from the
paper's protocol (text, window capped by the model's context or `--seqlen`, fewer windows, fewer calibration
samples) is listed in `differences`, printed, and recorded, so a number is never passed off as the paper's
setting. Our tokenisation adds no BOS token; the official scripts' tokeniser adds one at the start of the
stream (one token of hundreds of thousands).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kb import protocols
from kb.errors import KBError
from kb.protocols import ArmResult, Protocol, ProtocolRun

from .. import registry
from .contract import Context
from .data import Corpus, file_corpus, hub_corpus, sample_windows, tokenize
from .evaluate import ppl_of, window_nll
from .models import load_model
from .report import machine, today, versions
from .runner import apply_method, layer_progress, method_config, set_threads, stderr_log

Log = Callable[[str], None]


def _texts(protocol: Protocol, dataset: str | None) -> tuple[Corpus, Corpus, tuple[str, str], list[str]]:
    """(evaluation corpus, calibration corpus, their splits, differences): the paper's texts, or one standing in."""
    cal = protocol.calibration
    if dataset is None or dataset == protocol.dataset:
        try:
            ev = hub_corpus(protocol.dataset)
            calib = ev if cal.dataset == protocol.dataset else hub_corpus(cal.dataset)
        except KBError as exc:
            raise KBError(f"{exc.message}; offline, pass --dataset FILE (a UTF-8 text standing in)") from None
        return ev, calib, (protocol.split, cal.split), []
    if dataset == "pydoc":
        raise KBError(
            "--protocol paper evaluates on the paper's text: omit --dataset (online) or give a UTF-8 file"
        )
    if dataset in ("wikitext2", "c4"):
        corpus, splits = hub_corpus(dataset), ("test" if dataset == "wikitext2" else "validation", "train")
    else:
        corpus, splits = file_corpus(Path(dataset).expanduser()), ("evaluation part", "calibration part")
    stands_in = (f"text: {corpus.name} ({splits[0]}; {splits[1]} calibrates) stands in for the paper's "
                 f"{protocol.dataset} {protocol.split} and its calibration on {cal.dataset} {cal.split}")  # fmt: skip
    return corpus, corpus, splits, [stands_in]


def run_protocol(
    paper: str,
    *,
    model: str,
    dataset: str | None = None,
    paper_model: str | None = None,
    target: dict[str, Any] | None = None,
    window: int | None = None,
    nsamples: int | None = None,
    max_windows: int | None = None,
    tolerance: float = 0.05,
    device: str | None = None,
    seed: int = 0,
    threads: int | None = None,
    log: Log = stderr_log,
) -> ProtocolRun:
    """Run `paper`'s protocol on `model` (see the module docstring); `window`, `nsamples` and `max_windows`
    shrink it (each recorded as a difference)."""
    protocol = protocols.protocol_of(paper)
    mspec = registry.method_spec(protocol.method)
    setting_target = target or _target(protocol)
    config = method_config(mspec, setting_target)  # a bad target is one line before anything loads
    setting = protocols.setting_of(setting_target)
    evaluation, calibration, splits, differences = _texts(protocol, dataset)
    used_threads = set_threads(threads)
    loaded = load_model(model, device, seed=seed)
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    paper_window = protocols.resolve(protocol.window, context)
    paper_calib = protocols.resolve(protocol.calibration.seqlen, context)
    seqlen = window or paper_window
    if context is not None and seqlen > context:
        raise KBError(f"the window of {seqlen} tokens exceeds {model}'s context of {context}; pass --seqlen")
    if seqlen != paper_window:
        differences.append(f"window: {seqlen} tokens instead of the paper's {paper_window}")
    calib_len = min(paper_calib, seqlen) if window else paper_calib
    if calib_len != paper_calib:
        differences.append(f"calibration windows: {calib_len} tokens instead of {paper_calib}")
    samples = nsamples or protocol.calibration.samples
    if samples != protocol.calibration.samples:
        differences.append(f"calibration: {samples} samples instead of {protocol.calibration.samples}")
    if setting.key() != protocol.setting.key():
        differences.append(
            f"setting: {setting.label()} instead of the paper's headline {protocol.setting.label()}"
        )

    stream = tokenize(loaded.tokenizer, evaluation.eval_text)
    count = stream.numel() // seqlen
    if count < 1:
        raise KBError(f"the evaluation text has {stream.numel()} tokens, fewer than one window of {seqlen}")
    if max_windows is not None and max_windows < count:
        differences.append(f"windows: the first {max_windows} of {count}")
        count = max_windows
    windows = stream[: count * seqlen].reshape(count, seqlen)
    calib = sample_windows(tokenize(loaded.tokenizer, calibration.calib_text), samples, calib_len, seed)
    ran = {"dataset": evaluation.name, "split": splits[0], "window": seqlen, "stride": seqlen, "perplexity": "token",
           "windows": count, "calibration": {"dataset": calibration.name, "split": splits[1], "samples": samples,
                                             "seqlen": calib_len}}  # fmt: skip
    log(f"kb: {paper} protocol on {model}: {protocols.describe(ran)}")
    for line in differences:
        log(f"kb: protocol differs: {line}")

    arms = [_arm("dense", protocols.setting_of({}), loaded.model, windows, 0.0, log)]
    ctx = Context(progress=layer_progress(protocol.method, log), seed=seed, log=log)
    applied = apply_method(loaded.model, mspec, config, calib, ctx)
    arms.append(_arm(protocol.method, setting, loaded.model, windows, applied.seconds, log))

    compared = paper_model or _model_name(loaded, model)
    rows = protocols.paper_rows(paper)
    checks = []
    for arm in arms:
        found = protocols.matching_rows(rows, method=arm.method, setting=setting, dataset=protocol.dataset,
                                        model=compared)  # fmt: skip
        checks += [protocols.row_check(r, arm.ppl, tolerance) for r in found]
    for seq in sorted({c.seqlen for c in checks if c.seqlen is not None and c.seqlen != seqlen}):
        differences.append(f"window: {seqlen} tokens here, {seq} in the record's {compared} rows")
    what = f"{compared} ({protocol.method} at {setting.label()}, {protocol.dataset} perplexity)"
    device_name = str(next(loaded.model.parameters()).device)
    return ProtocolRun(
        paper=paper, model=model, paper_model=compared, tolerance=tolerance, protocol=protocol, ran=ran,
        differences=differences, arms=arms, rows=checks,
        verdict=protocols.verdict_line(checks, tolerance, differences, what),
        matches=bool(checks) and all(c.within for c in checks), versions=versions(),
        machine=machine(used_threads, device_name).model_dump(mode="json"), produced=today().isoformat(),
    )  # fmt: skip


def _target(protocol: Protocol) -> dict[str, Any]:
    s = protocol.setting
    if s.pattern is not None:
        n, m = (int(x) for x in s.pattern.split(":"))
        return {"pattern": (n, m)}
    return {"sparsity": s.sparsity} if s.sparsity is not None else {}


def _arm(method: str, setting: Any, model: torch.nn.Module, windows: torch.Tensor, seconds: float,
         log: Log) -> ArmResult:  # fmt: skip
    nll = window_nll(model, windows, progress=layer_progress(f"{method} perplexity", log))
    return ArmResult(method=method, setting=setting, ppl=ppl_of(nll), nll=nll, seconds=round(seconds, 2))


def _model_name(loaded: Any, given: str) -> str:
    """The name rows are matched against: the config's `_name_or_path` unless it is a local path."""
    name = str(getattr(loaded.model.config, "_name_or_path", "") or "")
    return name if name and not Path(name).expanduser().exists() else given
