"""Behavioural fingerprints: is a committed result still what today's code would compute?

A result's code hash (`kb.codehash`) moves with any byte of the code it ran, a comment or a pure refactor
included. The fingerprint asks the question by behaviour instead: run the same comparison (every arm, the
same method options and claim) on a small seeded random LLaMA with a tiny data budget, and digest

- the options the real run would resolve to today (harness defaults, the paper's defaults, every arm's
  validated method config, options left unset (None) aside): a changed default that alters numbers moves
  the fingerprint even when the tiny run would not notice it (the probe's item count, say);
- every arm's metrics and outcome on the small model, floats rounded to `DIGITS` significant digits so the
  last bits of a BLAS reduction do not count;
- the claim's statement, verdict and reason text, and the paper's figures, computed from those runs.

Timings and resident memory are not behaviour: before the claim is checked and the digest is taken they are
replaced by fixed stand-ins (`_steady`), so the fingerprint of a speed or memory claim covers its logic, not
this machine's clock. The small model has the decoder depth of tiny-llama (30 layers, hidden 64), so depth
targets and window arms mean the same as in the real run; a width target it cannot reach within the tolerance
is met as nearly as it can be (`contract.any_size`). Everything runs in one thread, in a fresh interpreter with
fixed numerics (`harness.steady_numerics`), so that every x86-64 machine computes the same bits: without them a
last-bit difference between two CPUs can swap one pruned weight and move a perplexity past the tolerance.

`kb fingerprint` writes the fingerprints of today's code to `reproductions/fingerprints/today.json` (next to the
code hash each was computed at) and `kb build --check` accepts a result whose code hash moved when the
fingerprint recorded for today's hash equals the result's own. A test in CI's fast job recomputes every
recorded fingerprint, so the file cannot claim what the code does not do.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from kb.results import Fingerprint, Metrics, Outcome, Reproduction, RunResult, Sweep

from .. import registry
from ..registry import Results
from .contract import any_size

# Bump when what the digest covers changes: every recorded fingerprint is then recomputed.
# 3: computed with fixed numerics (steady_numerics).
VERSION = 3
DIGITS = 6
REL = 1e-4  # payloads from two machines match when every float agrees to this relative tolerance
LAYERS = 30  # tiny-llama's decoder depth
# The tiny data budget; everything else (method options, targets, claim) is the real run's.
TINY = {"nsamples": 4, "seqlen": 64, "eval_tokens": 128, "probe_items": 8, "speed_repeats": 1,
        "speed_prompt_tokens": 16, "generate_tokens": 4, "cache_repeats": 1, "threads": 1}  # fmt: skip
KV_SEQLEN = 128  # a KV-cache evaluation needs a prompt longer than its 64-token continuation
VOLATILE_DETAILS = ("rss_peak_increase_bytes",)  # outcome details that measure this machine, not the method

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@contextmanager
def small_model() -> Iterator[str]:
    """A seeded random 30-layer LLaMA saved to a temporary directory (its path is the `--model`)."""
    from .models import byte_tokenizer, random_llama
    from .structure import save_model

    with tempfile.TemporaryDirectory(prefix="kb-fingerprint-") as tmp:
        path = Path(tmp) / "model"
        save_model(random_llama(seed=0, layers=LAYERS), byte_tokenizer(), path)
        yield str(path)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {str(k): _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def _steady_metrics(metrics: Metrics) -> Metrics:
    speed, cache = metrics.speed, metrics.cache
    if speed is not None:
        speed = speed.model_copy(update={"prefill_ms": 1.0, "decode_tokens_per_s": 1.0,
                                         "prefill_speedup": None if speed.prefill_speedup is None else 1.0,
                                         "decode_speedup": None if speed.decode_speedup is None else 1.0,
                                         "prefill_ratios": [1.0] * len(speed.prefill_ratios),
                                         "decode_ratios": [1.0] * len(speed.decode_ratios)})  # fmt: skip
    if cache is not None:
        cache = cache.model_copy(update={"decode_tokens_per_s": 1.0,
                                         "decode_speedup": None if cache.decode_speedup is None else 1.0})  # fmt: skip
    return metrics.model_copy(update={"speed": speed, "cache": cache})


def _steady_outcome(outcome: Outcome | None) -> Outcome | None:
    if outcome is None:
        return None
    details = {k: (0 if k in VOLATILE_DETAILS else v) for k, v in outcome.details.items()}
    return outcome.model_copy(update={"details": details})


def _steady_runs(runs: list[RunResult]) -> list[RunResult]:
    return [r.model_copy(update={"metrics": _steady_metrics(r.metrics), "outcome": _steady_outcome(r.outcome),
                                 "prune_seconds": 0.0, "eval_seconds": 0.0}) for r in runs]  # fmt: skip


def _set(config: dict[str, Any]) -> dict[str, Any]:
    """A method config without its unset (None) options: a new option that defaults to "not set" changes
    nothing a run does, so it leaves the fingerprint alone."""
    return {k: v for k, v in config.items() if v is not None}


def _runs_view(runs: list[RunResult]) -> list[dict[str, Any]]:
    return [{**r.model_dump(mode="json"), "config": _set(r.config)} for r in runs]


def digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tiny(paper_defaults: dict[str, Any], model: str, kv: bool) -> dict[str, Any]:
    tiny = {**TINY, "model": model}
    if kv:
        tiny["seqlen"] = KV_SEQLEN
        tiny["eval_tokens"] = 2 * KV_SEQLEN
    return tiny


def _has_kv(methods: list[str]) -> bool:
    return any(registry.method_spec(m).kind == "kv-cache" for m in methods)


def paper_payload(paper: str, explicit: dict[str, Any], model: str, log: Log = _quiet) -> dict[str, Any]:
    """What the fingerprint of `kb reproduce <paper>` digests, with the command-line options `explicit` (as
    recorded in a result: model, target, all_runs...), computed on the small model at `model`."""
    from .runner import paper_options, plan_runs, reproduce

    spec = registry.paper_spec(paper)
    real = paper_options(spec, explicit)
    plans = plan_runs(spec, real)
    tiny = _tiny(dict(spec.defaults), model, _has_kv(registry.paper_methods(paper)))
    small = dataclasses.replace(real, **tiny)
    threads = torch.get_num_threads()
    try:
        with (
            any_size()
        ):  # the nearest size to a `params` target the small model cannot reach (contract.any_size)
            rep = reproduce(paper, small, log=log)
    finally:
        torch.set_num_threads(threads)
    runs = _steady_runs(rep.runs)
    draws = [_steady_runs(d.runs) for d in rep.draws]
    results = Results.of_runs(runs, draws)
    judged = spec.check(results)
    figures = spec.figures(results) if spec.figures else []
    payload: dict[str, Any] = _round({
        "version": VERSION, "paper": paper, "options": dataclasses.asdict(real),
        "plans": [{"label": p.run.label, "method": p.spec.name, "config": _set(p.config.model_dump(mode="json")),
                   "speed": p.run.speed, "probe": p.run.probe} for p in plans],
        "runs": _runs_view(runs), "draws": [_runs_view(d) for d in draws],
        "claim": {"statement": spec.statement(real.target), "verdict": judged.state, "reason": judged.reason},
        "figures": [f.model_dump(mode="json") for f in figures],
    })  # fmt: skip
    return payload


def sweep_payload(sweep: Sweep, model: str, log: Log = _quiet) -> dict[str, Any]:
    """What the fingerprint of the `kb sweep` that wrote `sweep` digests, computed on the small model at `model`."""
    from .runner import sweep as run_sweep
    from .runner import sweep_options

    real = sweep_options(list(sweep.methods), _explicit(sweep.config, sweep.model))
    tiny = _tiny({}, model, _has_kv(list(sweep.methods)))
    small = dataclasses.replace(real, **tiny)
    probe, speed = bool(sweep.config.get("probe")), bool(sweep.config.get("speed"))
    threads = torch.get_num_threads()
    try:
        with any_size():
            result = run_sweep(sweep.name, list(sweep.methods), sweep.axis, list(sweep.values), small, probe=probe,
                               speed=speed, log=log)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    payload: dict[str, Any] = _round({
        "version": VERSION, "sweep": sweep.name, "options": dataclasses.asdict(real), "axis": sweep.axis,
        "values": list(sweep.values), "methods": list(sweep.methods), "probe": probe, "speed": speed,
        "runs": _runs_view(_steady_runs(result.runs)),
    })  # fmt: skip
    return payload


# Options of a recorded result that were chosen on the command line (the rest follow from the defaults).
_EXPLICIT = ("model", "dataset", "seed", "all_runs", "target")


def _explicit(config: dict[str, Any], model: str) -> dict[str, Any]:
    out = {k: config[k] for k in _EXPLICIT if k in config}
    out["model"] = model
    return out


def measure(
    record: Reproduction | Sweep, model: str, log: Log = _quiet
) -> tuple[Fingerprint, dict[str, Any]]:
    """The fingerprint of the run that would rewrite `record` today (with the code hash it belongs to), and the
    payload it digests."""
    if isinstance(record, Sweep):
        payload = sweep_payload(record, model, log)
        code = registry.sweep_code(record.methods)
    else:
        payload = paper_payload(record.paper, _explicit(record.config, record.model), model, log)
        code = registry.paper_code(record.paper)
    return Fingerprint(digest=digest(payload), code_hash=code.hash, version=VERSION), payload


# ---- many results at once: worker processes, each with its own small model ---------------------------------------
_WORKER: dict[str, Any] = {}


def _start_worker() -> None:
    from .runner import set_threads

    set_threads(1)
    holder = small_model()
    _WORKER["model"], _WORKER["holder"] = holder.__enter__(), holder  # removed when the worker exits


def _measure_in_worker(record: Reproduction | Sweep) -> tuple[Fingerprint, dict[str, Any], float]:
    import time

    start = time.perf_counter()
    fp, payload = measure(record, _WORKER["model"])
    return fp, payload, time.perf_counter() - start


def measure_many(
    records: dict[str, Reproduction | Sweep], jobs: int = 1, cost: dict[str, float] | None = None
) -> Iterator[tuple[str, Fingerprint, dict[str, Any], float]]:
    """(key, fingerprint, payload, seconds) of each record, in the order they finish. With `jobs` > 1, worker
    processes (started like this one, so with its numerics) take the records longest first by `cost` (the
    seconds each took last time), so the slowest does not start last. Each worker computes in one thread on
    its own copy of the same small model: the bits do not depend on `jobs`."""
    import time

    from .runner import set_threads

    if jobs <= 1 or len(records) <= 1:
        set_threads(1)
        with small_model() as model:
            for key, record in records.items():
                start = time.perf_counter()
                fp, payload = measure(record, model)
                yield key, fp, payload, time.perf_counter() - start
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    cost = cost or {}
    order = sorted(records, key=lambda k: -cost.get(k, 0.0))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state forked from this one
    with ProcessPoolExecutor(min(jobs, len(records)), mp_context=context, initializer=_start_worker) as pool:
        pending = {pool.submit(_measure_in_worker, records[k]): k for k in order}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                fp, payload, seconds = future.result()
                yield key, fp, payload, seconds


def result_fingerprint(record: Reproduction | Sweep, model: str, log: Log = _quiet) -> Fingerprint:
    return measure(record, model, log)[0]


def differences(old: Any, new: Any, where: str = "", rel: float = REL) -> list[str]:
    """Where two payloads differ, as `path: old -> new`; floats within `rel` (relative) count as equal, so a
    payload computed on another CPU (other vector kernels, last bits of a sum) still matches."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                out.append(f"{where}.{key}: {'absent' if key not in old else 'present'} -> "
                           f"{'absent' if key not in new else 'present'}")  # fmt: skip
            else:
                out += differences(old[key], new[key], f"{where}.{key}", rel)
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items -> {len(new)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{where}[{i}]", rel)
        ]
    numbers = (int, float)
    if isinstance(old, float) or isinstance(new, float):
        if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool):
            if old == new or math.isclose(old, new, rel_tol=rel, abs_tol=1e-12):
                return []
    elif old == new:
        return []
    return [f"{where or '.'}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- the book of today's fingerprints (`reproductions/fingerprints/today.json`) -----------------------------------
def read_book(root: Path) -> dict[str, dict[str, Any]]:
    """Result path -> {digest, code_hash, version, payload} as recorded (empty when there is no book)."""
    from ..registry.freshness import FINGERPRINTS, load_fingerprints

    load_fingerprints(root)  # a damaged book is a one-line error
    path = root / FINGERPRINTS
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8"))["results"])


def write_book(
    root: Path,
    entries: dict[str, tuple[Fingerprint, dict[str, Any]]],
    seconds: dict[str, float] | None = None,
) -> None:
    """Merge `entries` (result path -> fingerprint and payload) into the book, atomically, sorted by path;
    `seconds`: how long each took (kept for scheduling the next `kb fingerprint --jobs`; not behaviour)."""
    from kb.fsutil import write_text_atomic

    from ..registry.freshness import FINGERPRINTS

    (root / FINGERPRINTS).parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(root / Path(FINGERPRINTS).parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # `kb reproduce --all --jobs N --commit`: workers merge in turn
        book = read_book(root)
        for path, (fp, payload) in entries.items():
            book[path] = {**fp.model_dump(mode="json"), "payload": payload}
            if seconds and path in seconds:
                book[path]["seconds"] = round(seconds[path])
        data = {
            "about": "behavioural fingerprints of today's code, one per committed result, with what each digests "
            "(written by `kb fingerprint` and `kb reproduce --commit`; read by `kb build --check`)",
            "results": {k: book[k] for k in sorted(book)},
        }
        write_text_atomic(root / FINGERPRINTS, json.dumps(data, indent=1, sort_keys=True) + "\n")
    finally:
        os.close(folder)  # releases the lock


Record = TypeVar("Record", Reproduction, Sweep)


def stamp(record: Record, root: Path, log: Log = _quiet) -> Record:
    """`--commit`: the record with the fingerprint of the code that just produced it, also entered in the book."""
    from ..registry.freshness import result_path
    from .steady_numerics import measure_record

    fp, payload = measure_record(record)
    if record.code is not None and fp.code_hash != record.code.hash:
        raise RuntimeError(f"{result_path(record)}: the code changed while it ran; run it again")
    write_book(root, {result_path(record): (fp, payload)})
    return record.model_copy(update={"fingerprint": fp})
