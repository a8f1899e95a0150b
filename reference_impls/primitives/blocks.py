"""How much a decoder layer (or a run of layers) changes the residual stream, measured on calibration data.

- `token_cosine(x, y)`: cosine similarity of two hidden states, per token.
- Block Influence (ShortGPT): BI = 1 - mean over tokens of cos(x_in, x_out); 0 for a layer that leaves
  the stream unchanged, at most 2.
- Angular distance (Gromov et al.): arccos(cos) / pi, in [0, 1].
- `layer_io_cosine(model, calib)`: mean per-token cosine between each decoder layer's input and output
  hidden states over all calibration tokens, from forward hooks on the raw residual stream (not
  `output_hidden_states`, whose last entry has the final norm applied).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..harness.layerwise import decoder_layers


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

    def before(index: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def after(index: int):
        def hook(_module: nn.Module, _args: tuple, _kwargs: dict, output: object) -> None:
            out = output[0] if isinstance(output, tuple) else output
            cos = token_cosine(inputs.pop(index), out)  # type: ignore[arg-type]
            sums[index] += float(cos.sum())
            counts[index] += cos.numel()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(after(i), with_kwargs=True))
    device = model.get_input_embeddings().weight.device
    try:
        with torch.inference_mode():
            for ids in calib.split(batch_size or calib.shape[0]):
                model(input_ids=ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]
