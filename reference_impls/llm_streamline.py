"""LLM-Streamline: remove the most redundant run of consecutive layers and put one small trained module in its place.

Paper:    Chen, Hu, Zhang, Wang, Li, Chen. "Streamlining Redundant Layers to Compress Large Language Models"
          (LLM-Streamline). ICLR 2025 (spotlight), arXiv:2403.19135. Record id: `llm-streamline`.
Official: RUCKBReasoning/LLM-Streamline (`replace_lightweight_network` keeps the first layer of the window as
          the slot of the lightweight network and removes the following n - 1).
Idea:     For n layers to prune, find the window l .. l + n - 1 whose input and output hidden states have
          the highest mean cosine similarity over calibration tokens (the window changes the stream least),
          then replace the whole window by one lightweight network trained, with the rest of the model
          frozen, to map the window's input hidden states to its output hidden states (mean squared error).
          The paper's best lightweight network is a single feed-forward block.
Differs:  (1) the replacement is the window's first layer with its attention skipped and its MLP (and the
          MLP's pre-norm) trained, x -> x + MLP(norm(x)), started from that layer's own weights
          (`init="identity"` starts from a zero down-projection, i.e. plain removal); this saves as a layer
          with a skipped attention (`harness/pruned_llama.py`), no new model code; (2) a few hundred MSE
          steps on the run's calibration tokens instead of a large pre-training sample; (3)
          `replacement="none"` removes the same window without a replacement (the comparison arm).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.recovery import mse_steps
from .harness.structure import remove_layers, skip_sublayers
from .primitives.blocks import window_cosines, window_io
from .primitives.depth import layers_to_remove
from .primitives.selection import best_window


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # n, layers of the window; None = a quarter of them (rounded down)
    replacement: Literal["mlp", "none"] = "mlp"
    init: Literal["layer", "identity"] = "layer"  # the replacement MLP starts from the window's first layer
    steps: int = Field(200, ge=0)  # MSE training steps of the replacement
    batch_tokens: int = Field(512, ge=1)  # hidden-state rows per step
    lr: float = Field(1e-4, gt=0)


# ---- pure math ------------------------------------------------------------------------------------
def mean_window_similarity(cosines: list[torch.Tensor]) -> list[float]:
    return [float(c.mean()) for c in cosines]


class Replacement(nn.Module):
    """x -> x + mlp(norm(x)): the lightweight network, built on a decoder layer's MLP and its pre-norm."""

    def __init__(self, norm: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm, self.mlp = norm, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update: torch.Tensor = self.mlp(self.norm(x))
        return x + update


@torch.no_grad()
def _mse(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, like: torch.Tensor) -> float:
    out = module(inputs.to(like.device, like.dtype)).float()
    return float(torch.nn.functional.mse_loss(out, targets.to(out.device)))


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def window_similarities(
    model: nn.Module, calib: torch.Tensor, n: int, batch_size: int | None = None
) -> list[float]:
    return mean_window_similarity(window_cosines(model, calib, n, batch_size=batch_size))


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Choose the most similar window of `config.layers` layers, then replace it by a trained MLP (or drop it)."""
    n = layers_to_remove(config, model)
    key = ("llm-streamline-similarity", calib.data_ptr(), tuple(calib.shape), n)
    sims = ctx.dense_statistic(key, lambda: window_similarities(model, calib, n, ctx.batch_size))
    start = best_window(sims, lowest=False)
    details: dict[str, object] = {"window_cosine": [round(s, 6) for s in sims], "start": start,
                                  "replacement": config.replacement}  # fmt: skip
    if config.replacement == "none":
        drop = remove_layers(model, range(start, start + n))
        return Outcome(kind="depth", removed_layers=drop, details=details)
    inputs, targets = window_io(model, calib, start, n, batch_size=ctx.batch_size)
    layer: Any = decoder_layers(model)[start]  # transformers' decoder layer: its parts are read as Any
    if config.init == "identity":
        with torch.no_grad():
            layer.mlp.down_proj.weight.zero_()
    module = Replacement(layer.post_attention_layernorm, layer.mlp)
    weight = layer.mlp.down_proj.weight
    before = _mse(module, inputs, targets, weight)
    report = mse_steps(module, list(module.parameters()), inputs, targets, config.steps,
                       batch_tokens=config.batch_tokens, lr=config.lr, seed=ctx.seed,
                       progress=ctx.progress)  # fmt: skip
    after = _mse(module, inputs, targets, weight)
    plain = float(torch.nn.functional.mse_loss(inputs, targets))
    skip_sublayers(model, attention=[start])
    drop = remove_layers(model, range(start + 1, start + n))
    details.update({"training": report.summary(), "mse_plain_removal": round(plain, 6),
                    "mse_before_training": round(before, 6), "mse_after_training": round(after, 6),
                    "replacement_params": sum(p.numel() for p in module.parameters())})  # fmt: skip
    return Outcome(kind="depth", removed_layers=drop, removed_sublayers=[f"{start}.attn"], details=details)
