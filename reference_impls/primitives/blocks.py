"""How much a decoder layer (or a run of layers) changes the residual stream, measured on calibration data.

- `token_cosine(x, y)`: cosine similarity of two hidden states, per token.
- Block Influence (ShortGPT): BI = 1 - mean over tokens of cos(x_in, x_out); 0 for a layer that leaves
  the stream unchanged, at most 2.
- Angular distance (Gromov et al.): arccos(cos) / pi, in [0, 1].
- `layer_io_cosine(model, calib)`: mean per-token cosine between each decoder layer's input and output
  hidden states over all calibration tokens, from forward hooks on the raw residual stream (not
  `output_hidden_states`, whose last entry has the final norm applied).
- `residual_streams`, `window_cosines`, `window_io`: the stream at every layer boundary, the per-token
  cosine between the stream entering layer l and entering layer l + n (Gromov et al.'s angular distance at
  the last token, LLM-Streamline's window similarity over all tokens), and a window's input/output pairs.
- `sublayer_stats`: per layer, cos(x, x + f(x)) for the attention branch, the MLP branch and the block
  (What Matters, A Deeper Look), and each branch's mean update E[f(x)] (A Deeper Look's emulated update).
- Loss-based scores: `bypassed` (blocks or sublayers temporarily adding nothing), `removal_losses` (the
  calibration loss with one part removed: Shortened LLaMA's PPL criterion, the heterogeneous-sublayers
  impact), `stream_removal_losses` (the same numbers from one cached pass of the residual stream, each part's
  forward starting at its own layer: SLEB's and BlockPruner's re-scored searches), `block_taylor` (Taylor+: sum
  of |w * dL/dw| per layer), `block_magnitude` (relative L1/L2),
  `shapley_permutations` (Monte-Carlo Shapley with a bounded number of sampled orders) and
  `shapley_exact` (enumeration, for tests).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..harness import pruned_llama
from ..harness.layerwise import decoder_layers, input_embedding
from .importance import lm_loss, loss_gradients

# Forward hooks registered `with_kwargs=True`: (module, args, kwargs) before, (module, args, kwargs, output) after.
PreHook = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]
PostHook = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], object], None]


def token_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., hidden) x2 -> (...) cosine similarity, computed in float32; zero vectors count as identical."""
    x, y = x.float(), y.float()
    dot = (x * y).sum(-1)
    norms = x.norm(dim=-1) * y.norm(dim=-1)
    return torch.where(norms > 0, dot / norms.clamp_min(1e-30), torch.ones_like(dot)).clamp(-1.0, 1.0)


def block_influence(mean_cosine: float) -> float:
    return 1.0 - mean_cosine


def angular_distance(cosine: torch.Tensor) -> torch.Tensor:
    return torch.arccos(cosine.clamp(-1.0, 1.0)) / math.pi


def layer_io_cosine(model: nn.Module, calib: torch.Tensor, *, batch_size: int | None = None) -> list[float]:
    """Mean per-token cos(input, output) of every decoder layer over `calib` (samples, seq) token ids."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    counts = [0] * len(layers)
    inputs: dict[int, torch.Tensor] = {}

    def before(index: int) -> PreHook:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def after(index: int) -> PostHook:
        def hook(_module: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: object) -> None:
            out = output[0] if isinstance(output, tuple) else output
            cos = token_cosine(inputs.pop(index), out)  # type: ignore[arg-type]
            sums[index] += float(cos.sum())
            counts[index] += cos.numel()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(after(i), with_kwargs=True))
    device = input_embedding(model).weight.device
    try:
        with torch.inference_mode():
            for ids in calib.split(batch_size or calib.shape[0]):
                # the hooks take what they need: logits for one position only
                model(input_ids=ids.to(device), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


# ---- the residual stream at every layer boundary ---------------------------------------------------
def _chunks(calib: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, ...]:
    chunks: tuple[torch.Tensor, ...] = calib.split(batch_size or min(4, calib.shape[0]))
    return chunks


def residual_streams(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """The raw residual stream entering every decoder layer, plus the one leaving the last (before the final
    norm): L + 1 tensors of shape (b, t, hidden), from hooks during one forward of `ids`."""
    layers = decoder_layers(model)
    states: list[torch.Tensor | None] = [None] * (len(layers) + 1)

    def before(index: int) -> PreHook:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            states[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def last(_module: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: object) -> None:
        states[-1] = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]

    handles = [layer.register_forward_pre_hook(before(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(layers[len(layers) - 1].register_forward_hook(last, with_kwargs=True))
    device = input_embedding(model).weight.device
    try:
        with torch.inference_mode():
            # the hooks take what they need: logits for one position only
            model(input_ids=ids.to(device), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return [s for s in states if s is not None]


def window_cosines(
    model: nn.Module, calib: torch.Tensor, n: int, *, last_token: bool = False, batch_size: int | None = None
) -> list[torch.Tensor]:
    """Per-token cos(x_l, x_{l+n}) between the residual stream entering layer l and the one entering layer
    l + n (leaving layer l + n - 1), for every start l = 0 .. L - n; all tokens, or each sequence's last."""
    layers = len(decoder_layers(model))
    if not 0 < n <= layers:
        raise ValueError(f"a window of {n} layers does not fit {layers} layers")
    parts: list[list[torch.Tensor]] = [[] for _ in range(layers - n + 1)]
    for ids in _chunks(calib, batch_size):
        states = residual_streams(model, ids)
        if last_token:
            states = [s[:, -1:] for s in states]
        for start in range(layers - n + 1):
            parts[start].append(token_cosine(states[start], states[start + n]).reshape(-1).cpu())
    return [torch.cat(p) for p in parts]


def window_io(
    model: nn.Module, calib: torch.Tensor, start: int, n: int, *, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, hidden) residual stream entering layer `start` and leaving layer `start + n - 1`, float32."""
    xs, ys = [], []
    for ids in _chunks(calib, batch_size):
        states = residual_streams(model, ids)
        xs.append(states[start].reshape(-1, states[start].shape[-1]).float().cpu())
        ys.append(states[start + n].reshape(-1, states[start + n].shape[-1]).float().cpu())
    return torch.cat(xs), torch.cat(ys)


# ---- sublayers: similarity and mean update -----------------------------------------------------------
@dataclass
class SublayerStats:
    """Per decoder layer, over all calibration tokens: mean cos(x, x + f(x)) for the attention branch, the
    MLP branch and the whole block, and the mean update vector E[f(x)] each branch adds (float32)."""

    attention_cos: list[float]
    mlp_cos: list[float]
    block_cos: list[float]
    attention_mean: list[torch.Tensor]
    mlp_mean: list[torch.Tensor]


def sublayer_stats(model: nn.Module, calib: torch.Tensor, *, batch_size: int | None = None) -> SublayerStats:
    """What-matters / deeper-look statistics from hooks on every layer, its attention and its MLP."""
    layers = decoder_layers(model)
    n = len(layers)
    hidden = input_embedding(model).weight.shape[1]
    cos_sum = {k: [0.0] * n for k in ("attention", "mlp", "block")}
    upd_sum = {k: [torch.zeros(hidden, dtype=torch.float64) for _ in range(n)] for k in ("attention", "mlp")}
    count = [0] * n
    seen: dict[tuple[str, int], torch.Tensor] = {}

    def layer_in(i: int) -> PreHook:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen["x", i] = args[0] if args else kwargs["hidden_states"]

        return hook

    def attn_out(i: int) -> PostHook:
        def hook(_m: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: object) -> None:
            seen["a", i] = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]

        return hook

    def mlp_out(i: int) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(_m: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> None:
            seen["m", i] = output

        return hook

    def layer_out(i: int) -> PostHook:
        def hook(_m: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: object) -> None:
            x, a, m = seen.pop(("x", i)).float(), seen.pop(("a", i)).float(), seen.pop(("m", i)).float()
            h = x + a
            y = h + m
            cos_sum["attention"][i] += float(token_cosine(x, h).sum())
            cos_sum["mlp"][i] += float(token_cosine(h, y).sum())
            cos_sum["block"][i] += float(token_cosine(x, y).sum())
            upd_sum["attention"][i] += a.reshape(-1, a.shape[-1]).sum(0).double().cpu()
            upd_sum["mlp"][i] += m.reshape(-1, m.shape[-1]).sum(0).double().cpu()
            count[i] += x.shape[0] * x.shape[1]

        return hook

    handles = []
    layer: Any  # transformers' decoder layer: its attention and MLP are read as Any
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(layer_in(i), with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(attn_out(i), with_kwargs=True))
        handles.append(layer.mlp.register_forward_hook(mlp_out(i)))
        handles.append(layer.register_forward_hook(layer_out(i), with_kwargs=True))
    device = input_embedding(model).weight.device
    try:
        with torch.inference_mode():
            for ids in _chunks(calib, batch_size):
                # the hooks take what they need: logits for one position only
                model(input_ids=ids.to(device), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return SublayerStats(
        attention_cos=[s / c for s, c in zip(cos_sum["attention"], count, strict=True)],
        mlp_cos=[s / c for s, c in zip(cos_sum["mlp"], count, strict=True)],
        block_cos=[s / c for s, c in zip(cos_sum["block"], count, strict=True)],
        attention_mean=[(s / c).float() for s, c in zip(upd_sum["attention"], count, strict=True)],
        mlp_mean=[(s / c).float() for s, c in zip(upd_sum["mlp"], count, strict=True)],
    )


# ---- loss-based scores: removal perplexity, Taylor+, Shapley --------------------------------------------
Part = tuple[str, int]  # ("block" | "attention" | "mlp", layer index)


@contextmanager
def bypassed(model: nn.Module, parts: Iterable[Part]) -> Iterator[None]:
    """Temporarily make the listed blocks or sublayers add nothing to the residual stream (no cache use)."""
    layers = decoder_layers(model)
    saved: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for kind, i in parts:
            layer: Any = layers[i]
            if kind in ("block", "attention"):
                saved.append((layer, "self_attn", layer.self_attn))
                layer.self_attn = pruned_llama.SkippedAttention(i)
            if kind in ("block", "mlp"):
                saved.append((layer, "mlp", layer.mlp))
                layer.mlp = pruned_llama.SkippedMLP()
        yield
    finally:
        for layer, name, module in reversed(saved):
            setattr(layer, name, module)


def mean_loss(model: nn.Module, ids: torch.Tensor, *, batch_size: int | None = None) -> float:
    """Mean next-token cross-entropy over `ids` (n, t)."""
    total, tokens = 0.0, 0
    device = input_embedding(model).weight.device
    with torch.inference_mode():
        for chunk in ids.split(batch_size or ids.shape[0]):
            loss = lm_loss(model, chunk.to(device))
            total += float(loss) * chunk.shape[0] * (chunk.shape[1] - 1)
            tokens += chunk.shape[0] * (chunk.shape[1] - 1)
    return total / tokens


def removal_losses(
    model: nn.Module, ids: torch.Tensor, parts: Sequence[Part], *, batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:  # fmt: skip
    """Calibration loss with each part bypassed on its own (Shortened LLaMA's PPL criterion is exp of it)."""
    out = []
    for j, part in enumerate(parts):
        with bypassed(model, [part]):
            out.append(mean_loss(model, ids, batch_size=batch_size))
        if progress is not None:
            progress(j + 1, len(parts))
    return out


@contextmanager
def _fed(layer: nn.Module, hidden: torch.Tensor) -> Iterator[None]:
    """While open, `layer` receives `hidden` as its input hidden states, whatever the layers below it computed."""

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def stream_removal_losses(
    model: nn.Module, ids: torch.Tensor, parts: Sequence[Part], *, batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:  # fmt: skip
    """`removal_losses` from one cached pass: the residual stream entering every decoder layer is kept per chunk of
    `ids` (samples, seq), and each part's forward starts at its own layer (the layers below it are bypassed and the
    cached stream is fed in), about half the decoder per part on average. The same numbers as `removal_losses`:
    the layers that run see the same inputs. Memory: (layers + 1) hidden states per calibration token."""
    layers = decoder_layers(model)
    chunks = ids.split(batch_size or ids.shape[0])
    streams = [residual_streams(model, chunk) for chunk in chunks]  # per chunk: L + 1 tensors (b, t, hidden)
    out = []
    for j, part in enumerate(parts):
        start = part[1]
        total, tokens = 0.0, 0
        with bypassed(model, [*(("block", i) for i in range(start)), part]):
            for chunk, states in zip(chunks, streams, strict=True):
                with _fed(layers[start], states[start]):
                    count = chunk.shape[0] * (chunk.shape[1] - 1)
                    total += mean_loss(model, chunk) * count
                    tokens += count
        out.append(total / tokens)
        if progress is not None:
            progress(j + 1, len(parts))
    return out


def block_taylor(model: nn.Module, ids: torch.Tensor, *, batch_size: int | None = None) -> list[float]:
    """First-order Taylor importance of every decoder layer: sum over its parameters of |w * dL/dw|."""
    layers = decoder_layers(model)
    prefix = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in prefix]
    grads = loss_gradients(model, ids, names, chunk=batch_size or ids.shape[0])
    params = dict(model.named_parameters())
    scores = [0.0] * len(layers)
    for name in names:
        p = params[name]
        scores[prefix[id(p)]] += float((p.detach().float() * grads.grad[name]).abs().sum())
    return scores


def block_magnitude(model: nn.Module, norm: int = 1) -> list[float]:
    """Mean |w|^norm over the linear weights of every decoder layer (relative L1 / L2 magnitude)."""
    out = []
    for layer in decoder_layers(model):
        total, count = 0.0, 0
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                total += float(module.weight.detach().float().abs().pow(norm).sum())
                count += module.weight.numel()
        out.append(total / count if count else 0.0)
    return out


def shapley_permutations(
    value: Callable[[frozenset[int]], float], players: int, permutations: int, seed: int = 0
) -> list[float]:
    """Monte-Carlo Shapley values: for each of `permutations` seeded random orders, remove the players one
    by one from the full set and credit each with v(before) - v(after). Every order telescopes to
    v(all) - v(none), so the estimate is efficient exactly; the cost is players x permutations + 1 calls."""
    if permutations < 1:
        raise ValueError("Shapley estimation needs at least one permutation")
    gen = random.Random(seed)
    phi = [0.0] * players
    full = frozenset(range(players))
    top = value(full)
    for _ in range(permutations):
        order = list(range(players))
        gen.shuffle(order)
        present, current = set(full), top
        for p in order:
            present.discard(p)
            after = value(frozenset(present))
            phi[p] += (current - after) / permutations
            current = after
    return phi


def shapley_exact(value: Callable[[frozenset[int]], float], players: int) -> list[float]:
    """Exact Shapley values by enumerating every coalition (tests; 2^players calls)."""
    cache = {frozenset(s): value(frozenset(s)) for r in range(players + 1)
             for s in itertools.combinations(range(players), r)}  # fmt: skip
    phi = [0.0] * players
    for p in range(players):
        others = [q for q in range(players) if q != p]
        for r in range(players):
            weight = math.factorial(r) * math.factorial(players - r - 1) / math.factorial(players)
            for s in itertools.combinations(others, r):
                phi[p] += weight * (cache[frozenset((*s, p))] - cache[frozenset(s)])
    return phi
