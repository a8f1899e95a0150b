"""The layer-by-layer calibration driver shared by every calibration-based method.

Sequence: run the model once up to its first decoder layer and keep that layer's inputs together with
*every* keyword argument transformers passes it (position embeddings, attention mask, position ids, cache
position, ...); then for each decoder layer, prune its linears from statistics of their inputs and compute
the layer's outputs *with the pruned weights*; those outputs are the next layer's inputs. Memory above the
model is about one layer's activations for the calibration set.

Speed (why this beats the upstream two-pass loop). Upstream runs every layer twice: once densely to
collect statistics for all seven linears, then again after pruning to produce the next layer's inputs.
Here, when the calibration set fits in one batch (the default), each layer runs **once**: a forward
pre-hook on every linear computes the statistics of the input it is about to receive, prunes that linear
and lets the (now sparse) forward continue. So each linear is pruned right before its first use and sees
inputs that already come from pruned predecessors inside the same layer ("true sequential"), and the same
pass yields the next layer's inputs. Linears sharing one input (q/k/v, gate/up) share its statistics.
With `batch_size` smaller than the calibration set, the driver falls back to the upstream two-pass scheme
(statistics from a dense pass over all chunks, prune, then a recompute pass), trading time for memory.
Everything runs under `torch.inference_mode()`; statistics are accumulated in float32.

Threads: forward passes use every thread `torch` has; the per-linear solver work (statistics, scores,
top-k, SparseGPT's column loop) is many small tensor ops, which on CPU run much faster on one thread
(intra-op parallel overhead dominates, and gets far worse when the machine is shared: measured 5-25x),
so `small_ops()` drops to one thread for tensors below ~4M elements (not for SparseGPT's X^T X matmul).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kb.errors import KBError

StatsKind = Literal["sq_norm", "gram", "moments"]

_SMALL = 1 << 22


@contextmanager
def small_ops(numel: int = 0) -> Iterator[None]:
    """Run the block on one CPU thread when the tensors involved are small (see the module docstring)."""
    before = torch.get_num_threads()
    if numel > _SMALL or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class InputStats:
    """Statistics of one linear's inputs over all calibration tokens (float32).

    `sq_norm[j]` = sum_t x_tj^2 (so sqrt is ||X_j||_2); `gram` = sum_t x_t x_t^T (only for `kind="gram"`);
    `total[j]` = sum_t x_tj (only for `kind="moments"`: with `sq_norm` it gives each feature's mean and variance).
    """

    sq_norm: torch.Tensor  # (in,)
    gram: torch.Tensor | None  # (in, in)
    tokens: int
    total: torch.Tensor | None = None  # (in,)

    @classmethod
    def empty(cls, features: int, kind: StatsKind, device: torch.device) -> InputStats:
        gram = torch.zeros(features, features, device=device) if kind == "gram" else None
        total = torch.zeros(features, device=device) if kind == "moments" else None
        return cls(torch.zeros(features, device=device), gram, 0, total)

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and (population) variance over the tokens seen; needs `kind="moments"`."""
        if self.total is None or self.tokens == 0:
            raise ValueError("mean and variance need moments statistics of at least one token")
        mean = self.total / self.tokens
        return mean, (self.sq_norm / self.tokens - mean.square()).clamp_min(0.0)

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()  # (tokens, in)
        if self.gram is not None:
            self.gram.addmm_(x.T, x)
            self.sq_norm = torch.diagonal(self.gram).clone()
        else:
            for rows in x.split(1024):  # cache-sized chunks: about 2x faster than one big square().sum(0)
                self.sq_norm += rows.square().sum(0)
                if self.total is not None:
                    self.total += rows.sum(0)
        self.tokens += x.shape[0]


# A method's per-linear step: (decoder layer index, qualified name, the linear, its input statistics) -> prunes
# in place. A step that only records statistics (and changes nothing) turns the driver into a dense pass.
PruneLinear = Callable[[int, str, nn.Linear, InputStats], None]


@dataclass
class LayerInputs:
    """Inputs of one decoder layer for one calibration chunk: hidden states plus the call's kwargs."""

    hidden: torch.Tensor  # (batch, seq, hidden)
    kwargs: dict[str, Any]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers of a causal LM (LLaMA/Mistral/Qwen-style `model.model.layers`)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise KBError(
        f"cannot find decoder layers in {type(model).__name__} (looked for model.layers and similar)"
    )


# Typed access to the parts of a transformers causal LM that are not plain `nn.Module` API. mypy reads
# transformers as Any (pyproject.toml), and `nn.Module.__getattr__` types every other attribute as
# `Tensor | Module`, so these say once what the harness and the methods rely on.
def model_config(model: nn.Module) -> Any:
    """The model's `PretrainedConfig`: its fields come from config.json and compaction rewrites them, so
    they are read as Any."""
    config: Any = model.config
    return config


def input_embedding(model: nn.Module) -> nn.Embedding:
    """`model.get_input_embeddings()`: the token embedding (its weight's device is the model's input device)."""
    lm: Any = model
    embedding: nn.Embedding = lm.get_input_embeddings()
    return embedding


def output_embedding(model: nn.Module) -> nn.Linear | None:
    """`model.get_output_embeddings()`: the LM head, or None for a model without one."""
    lm: Any = model
    head: nn.Linear | None = lm.get_output_embeddings()
    return head


def prunable_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The layer's `nn.Linear`s in definition order (LLaMA: q, k, v, o, gate, up, down)."""
    return {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


class _Captured(Exception):
    pass


def capture_layer_inputs(
    model: nn.Module, input_ids: torch.Tensor, batch_size: int, index: int = 0
) -> list[LayerInputs]:
    """Run `model` on `input_ids` (samples, seq) in chunks, stopping at decoder layer `index` (the first by
    default; the layers before it run as usual).

    Returns, per chunk, the layer's positional hidden states and all keyword arguments exactly as the
    model passed them (whatever this transformers version computes: rotary `position_embeddings`,
    `attention_mask`, `position_ids`, `cache_position`, ...).
    """
    first = decoder_layers(model)[index]
    chunks: list[LayerInputs] = []

    def grab(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        chunks.append(LayerInputs(hidden, kwargs))
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        device = _input_device(model)
        for ids in input_ids.split(batch_size):
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return chunks


def _input_device(model: nn.Module) -> torch.device:
    emb = input_embedding(model) if hasattr(model, "get_input_embeddings") else None
    return emb.weight.device if emb is not None else next(model.parameters()).device


def run_layer(layer: nn.Module, inputs: LayerInputs) -> torch.Tensor:
    """Call a decoder layer with captured inputs; accepts both tuple and bare-tensor returns. A layer left with
    no parameters (both sublayers removed) runs where its input is."""
    first = next(layer.parameters(), None)
    device = first.device if first is not None else inputs.hidden.device
    out = layer(inputs.hidden.to(device), **_to_device(inputs.kwargs, device))
    hidden: torch.Tensor = out[0] if isinstance(out, tuple) else out
    return hidden


def prune_layerwise(
    model: nn.Module,
    input_ids: torch.Tensor,
    prune_linear: PruneLinear,
    *,
    stats: StatsKind,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Prune every decoder linear of `model` in place, layer after layer (see the module docstring).

    `input_ids`: calibration tokens, (samples, seq). `batch_size=None` = all samples in one chunk (one
    forward pass per layer); smaller = upstream two-pass scheme with bounded memory.
    """
    batch = input_ids.shape[0] if batch_size is None else max(1, batch_size)
    with torch.inference_mode():
        chunks = capture_layer_inputs(model, input_ids, batch)
        layers = decoder_layers(model)
        for index, layer in enumerate(layers):
            linears = {f"layers.{index}.{name}": mod for name, mod in prunable_linears(layer).items()}
            if len(chunks) == 1:
                outputs = [_single_pass(index, layer, chunks[0], linears, prune_linear, stats)]
            else:
                outputs = _two_pass(index, layer, chunks, linears, prune_linear, stats)
            chunks = [LayerInputs(out, c.kwargs) for out, c in zip(outputs, chunks, strict=True)]
            if progress is not None:
                progress(index + 1, len(layers))


def _single_pass(
    index: int,
    layer: nn.Module,
    chunk: LayerInputs,
    linears: dict[str, nn.Linear],
    prune_linear: PruneLinear,
    kind: StatsKind,
) -> torch.Tensor:
    """One forward of the layer; each linear is pruned by a pre-hook just before it computes."""
    last: list[Any] = [None, None]  # (input tensor, its stats): q/k/v and gate/up share one input
    done: set[str] = set()  # a linear called twice in one forward is pruned once, on its first input

    def hook_for(name: str) -> Callable[[nn.Linear, tuple[Any, ...]], None]:
        def before(module: nn.Linear, args: tuple[Any, ...]) -> None:
            if name in done:
                return
            done.add(name)
            x = args[0]
            if last[0] is not x:
                st = InputStats.empty(x.shape[-1], kind, x.device)
                with small_ops(x.numel() if kind == "gram" else x.numel() // 4):  # a gram is one big matmul
                    st.add(x)
                last[0], last[1] = x, st
            with small_ops(module.weight.numel()):
                prune_linear(index, name, module, last[1])

        return before

    handles = [mod.register_forward_pre_hook(hook_for(name)) for name, mod in linears.items()]
    try:
        return run_layer(layer, chunk)
    finally:
        for h in handles:
            h.remove()
        last.clear()


def _two_pass(
    index: int,
    layer: nn.Module,
    chunks: list[LayerInputs],
    linears: dict[str, nn.Linear],
    prune_linear: PruneLinear,
    kind: StatsKind,
) -> list[torch.Tensor]:
    """Upstream scheme: dense pass collecting stats over all chunks, prune all linears, recompute pass."""
    collected: dict[str, InputStats] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def before(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if name not in collected:
                collected[name] = InputStats.empty(x.shape[-1], kind, x.device)
            collected[name].add(x)

        return before

    handles = [mod.register_forward_pre_hook(hook_for(name)) for name, mod in linears.items()]
    try:
        for chunk in chunks:
            run_layer(layer, chunk)
    finally:
        for h in handles:
            h.remove()
    for name, mod in linears.items():
        with small_ops(mod.weight.numel()):
            prune_linear(index, name, mod, collected.pop(name))
    return [run_layer(layer, chunk) for chunk in chunks]


def iter_decoder_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """(qualified name, linear) for every prunable linear of every decoder layer; never embeddings/lm_head."""
    for index, layer in enumerate(decoder_layers(model)):
        for name, mod in prunable_linears(layer).items():
            yield f"layers.{index}.{name}", mod


def set_weight(linear: nn.Linear, new_weight: torch.Tensor) -> None:
    """Write a pruned weight back in the linear's dtype and device."""
    linear.weight.copy_(new_weight.to(dtype=linear.weight.dtype, device=linear.weight.device))
