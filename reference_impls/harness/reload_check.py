"""Prove a saved model: reload what `kb prune --save` wrote and compare it with the pruned model in memory.

A save can lose something without any error: a bias the config does not announce is dropped at load, a
separate head under a tying config is replaced by the embedding. Only a reload shows it. `runner.prune_to_dir`
therefore calls, around `structure.save_model`:

1. `reference(model, tokenizer)` before saving: the pruned model's logits at every position of a few short
   fixed prompts (`PROMPTS`, encoded with the model's own tokenizer), and its parameter names and shapes;
2. `verify(tmp, ref, ...)` on the written directory *before it is published* (`save_model(verify=...)`):
   - load it with the loader users use, `models.load_model(dir)` (which runs `from_pretrained`, with
     `trust_remote_code` when the save carries the project's modeling file), on the same device and dtype;
   - the saved tokenizer must encode every prompt to the same ids;
   - the reloaded model must have the same parameters (names and shapes);
   - its logits must agree with the reference within `tolerance(dtype) * scale` (below);
   - it must greedy-generate `GENERATE_TOKENS` tokens.
   Any failure is a one-line `KBError` with code 1 (a check found a problem: exit 1), raised inside the
   atomic save, so the temporary directory is removed and nothing appears at the target (an existing target,
   with `--force`, is left as it was).

In process, not in a fresh interpreter: the loader is the same function a user calls, and for a save with
remote code transformers copies the *saved* `pruned_llama.py` out of the directory into its module cache and
imports that copy under a name of its own, so the check runs the code a user's `from_pretrained` runs, not the
project's module. What an in-process load cannot see is a saved modeling file that imports something only
this environment provides; `pruned_llama` imports only torch and transformers, and the tests load saved
models in a fresh interpreter with a bare environment for that (`tests/impls/savedmodels.fresh_process`).
A subprocess here would cost several seconds of imports for every save, many times the check itself on a
small model. The module-cache entry the temporary directory created is removed again afterwards.

Tolerance: the weights go through safetensors bit for bit and the same code computes both sides, so the
logits normally agree exactly; the tolerance only absorbs a different kernel or reduction order chosen at load
time (an attention implementation, a fused path), which moves float32 logits by about 1e-6 of their scale.
A lost bias or a perturbed tensor moves them by a sizeable fraction of it (the defect that motivated this
check: 1.29). See `RELATIVE_TOLERANCE`.

Memory: while the check runs, the pruned model and its reloaded copy are both held (on the run's device).
"""

from __future__ import annotations

import gc
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kb.errors import KBError

from .layerwise import input_embedding

# Short and varied (prose, code, digits); every position's logits are compared, so three prompts of up to
# MAX_PROMPT_TOKENS tokens give dozens of next-token distributions.
PROMPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "1, 2, 3, 5, 8, 13, 21,",
)
MAX_PROMPT_TOKENS = 24
GENERATE_TOKENS = 4

# Allowed max |reloaded - pruned| logit difference, relative to the logit scale (the largest |logit| of the
# pruned model on the prompts, at least 1). float32: reduction-order noise is ~1e-6 of the scale, so 1e-4
# leaves two orders of margin while staying four below a lost bias (~1 logit on a scale of ~10). Half
# precision carries ~3 significant digits (float16 eps 9.8e-4, bfloat16 7.8e-3), so ~10 eps of each.
RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-4,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


@dataclass(frozen=True)
class Reference:
    """What the pruned model in memory computes and holds, taken before it is saved."""

    texts: tuple[str, ...]
    prompts: tuple[tuple[int, ...], ...]  # token ids per prompt
    logits: tuple[torch.Tensor, ...]  # per prompt: (tokens, vocab), float32 on CPU
    params: dict[str, tuple[int, ...]]  # parameter name -> shape
    dtype: torch.dtype


def tolerance(*dtypes: torch.dtype) -> float:
    """The relative tolerance of the least precise of `dtypes` (float32's for an unknown one)."""
    return max(RELATIVE_TOLERANCE.get(d, RELATIVE_TOLERANCE[torch.float32]) for d in dtypes)


def _encode(tokenizer: Any, text: str, vocab: int) -> tuple[int, ...]:
    """The ids a user's `tokenizer(text)` gives (special tokens included), within the model's vocabulary."""
    ids = [int(i) for i in tokenizer(text)["input_ids"] if 0 <= int(i) < vocab][:MAX_PROMPT_TOKENS]
    return tuple(ids) or tuple(range(min(8, vocab)))


def _vocab(model: nn.Module) -> int:
    return int(input_embedding(model).weight.shape[0])


def _logits(model: nn.Module, ids: tuple[int, ...]) -> torch.Tensor:
    device = input_embedding(model).weight.device
    with torch.inference_mode():
        out: torch.Tensor = model(torch.tensor([ids], device=device)).logits
    return out[0].float().cpu()


def _dtype(model: nn.Module) -> torch.dtype:
    return input_embedding(model).weight.dtype


def reference(model: nn.Module, tokenizer: Any) -> Reference:
    """The pruned model's logits on `PROMPTS` and its parameter shapes (evaluated in eval mode)."""
    training = model.training
    model.eval()
    try:
        vocab = _vocab(model)
        prompts = tuple(_encode(tokenizer, text, vocab) for text in PROMPTS)
        logits = tuple(_logits(model, ids) for ids in prompts)
    finally:
        model.train(training)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return Reference(PROMPTS, prompts, logits, params, _dtype(model))


def _problem(shown: Path, what: str) -> KBError:
    return KBError(f"the saved model does not reproduce the pruned one: {what}; nothing was saved to {shown}",
                   code=1)  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def verify(directory: Path, ref: Reference, *, device: str | None, shown: Path) -> dict[str, Any]:
    """Reload `directory` and compare it with `ref` (see the module docstring); `shown` is the path the user
    asked for, named in errors. Returns the comparison for the run's record."""
    from .models import load_model

    start = time.perf_counter()
    try:
        loaded = load_model(str(directory), device)
    except KBError as exc:
        raise _problem(shown, f"it does not load ({exc.message})") from None
    except Exception as exc:  # noqa: BLE001 - whatever the loader raises, the save is unusable: one line
        raise _problem(shown, f"it does not load ({type(exc).__name__}: {_first_line(exc)})") from None
    model = loaded.model
    try:
        return _compare(model, loaded.tokenizer, ref, shown, start)
    finally:
        _forget_remote_code(type(model), Path(directory))
        del model, loaded
        gc.collect()


def _compare(model: nn.Module, tokenizer: Any, ref: Reference, shown: Path, start: float) -> dict[str, Any]:
    vocab = _vocab(model)
    for text, ids in zip(ref.texts, ref.prompts, strict=True):
        if _encode(tokenizer, text, vocab) != ids:
            raise _problem(shown, f"the saved tokenizer encodes {text[:20]!r}... differently")
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for name, shape in ref.params.items():
        if name not in params:
            raise _problem(shown, f"{name} {list(shape)} is missing after the reload")
        if params[name] != shape:
            raise _problem(shown, f"{name} is {list(params[name])} after the reload, {list(shape)} before")
    extra = sorted(set(params) - set(ref.params))
    if extra:
        raise _problem(shown, f"the reloaded model has {extra[0]}, which the pruned model does not")
    dtype = _dtype(model)
    rel = tolerance(ref.dtype, dtype)
    finite = [torch.isfinite(t) for t in ref.logits]
    scale = max([1.0] + [float(t[f].abs().max()) for t, f in zip(ref.logits, finite, strict=True) if f.any()])
    diff = 0.0
    for ids, want, ok in zip(ref.prompts, ref.logits, finite, strict=True):
        try:
            got = _logits(model, ids)
        except Exception as exc:  # noqa: BLE001 - a forward that fails is the finding
            raise _problem(shown, f"the reloaded model fails on a prompt ({type(exc).__name__}: "
                                  f"{_first_line(exc)})") from None  # fmt: skip
        if got.shape != want.shape:
            raise _problem(shown, f"the reloaded model gives logits of shape {list(got.shape)}, not "
                                  f"{list(want.shape)}")  # fmt: skip
        if not torch.equal(torch.isfinite(got), ok):
            raise _problem(shown, "the reloaded model's logits are not finite where the pruned model's are "
                                  "(or the other way round)")  # fmt: skip
        if ok.any():
            diff = max(diff, float((got[ok] - want[ok]).abs().max()))
    if diff > rel * scale:
        raise _problem(shown, f"its logits differ from the pruned model's by up to {diff:.3g} (allowed "
                              f"{rel * scale:.2g}: {rel:g} x the logit scale {scale:.3g})")  # fmt: skip
    generated = _generate(model, tokenizer, ref.prompts[0], shown)
    return {"prompts": len(ref.prompts), "tokens": sum(len(p) for p in ref.prompts),
            "max_abs_logit_diff": diff, "logit_scale": round(scale, 4), "relative_tolerance": rel,
            "dtype": str(dtype).removeprefix("torch."), "generated_tokens": generated,
            "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip


def _generate(model: nn.Module, tokenizer: Any, prompt: tuple[int, ...], shown: Path) -> int:
    """Greedy-generate `GENERATE_TOKENS` tokens (with the KV cache, as users do); returns how many came out."""
    lm: Any = model  # a transformers model: generate() is its own
    device = input_embedding(model).weight.device
    ids = torch.tensor([prompt], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        with torch.inference_mode():
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GENERATE_TOKENS,
                                 min_new_tokens=GENERATE_TOKENS, do_sample=False, pad_token_id=pad or 0)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a model that cannot generate is the finding
        raise _problem(
            shown, f"the reloaded model cannot generate ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    new = int(out.shape[-1]) - len(prompt)
    if new != GENERATE_TOKENS:
        raise _problem(shown, f"the reloaded model generated {new} tokens, not {GENERATE_TOKENS}")
    return new


def _forget_remote_code(cls: type, directory: Path) -> None:
    """Remove the module-cache copy of the saved modeling file that loading the temporary directory created
    (transformers names it after the directory, which is renamed when published), and its imported modules."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not cls.__module__.startswith("transformers_modules.") or path is None:
        return
    folder = Path(path).parents[1]  # transformers_modules/<directory name>/<hash>/pruned_llama.py
    if folder.name != directory.name.replace(".", "_dot_").replace("-", "_hyphen_"):
        return
    prefix = f"transformers_modules.{folder.name}"
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]
    shutil.rmtree(folder, ignore_errors=True)
