"""ShortGPT: delete the decoder layers that change the hidden state least (lowest Block Influence).

Paper:    Men, Xu, Zhang, Wang, Lin, Lu, Han, Chen. "ShortGPT: Layers in Large Language Models are More
          Redundant Than You Expect". ACL 2025 Findings, arXiv:2403.03853. Record id: `shortgpt`.
Official: none released. Checked against the unofficial sramshetty/ShortGPT (`short_gpt/metrics.py`) and
          the Minitron depth-pruning script (`prune_depth.py`), which compute the same score.
Idea:     Block Influence of layer i is 1 minus the mean, over all calibration tokens, of the cosine
          similarity between the hidden state entering the layer and the one leaving it. A layer with low
          BI barely rotates the residual stream, so it is redundant: remove the k layers with the lowest BI
          in one shot, with no retraining. The result is a stock model with fewer layers: smaller and
          faster on any hardware.
Differs:  (1) BI is measured with hooks on the raw residual stream over our calibration windows (the
          paper's corpus and window length are not public); (2) `selection="highest"` and
          `selection="random"` (seeded) are the comparison arms of our claim check, not part of the paper.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.structure import remove_layers
from .primitives.blocks import block_influence, layer_io_cosine
from .primitives.depth import layers_to_remove


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # layers to remove; None = a quarter of them (rounded down)
    selection: Literal["lowest", "highest", "random"] = "lowest"
    seed: int = 0  # for selection="random"


# ---- pure math ------------------------------------------------------------------------------
def select_layers(scores: list[float], k: int, selection: str, seed: int = 0) -> list[int]:
    """Indices of the k layers to remove: lowest or highest score (ties by index), or k random (seeded)."""
    if not 0 < k < len(scores):
        raise ValueError(f"cannot remove {k} of {len(scores)} layers")
    if selection == "random":
        return sorted(random.Random(seed).sample(range(len(scores)), k))
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i), reverse=selection == "highest")
    return sorted(order[:k])


# ---- model driver (mutates `model` in place) ----------------------------------------------
def block_influences(model: nn.Module, calib: torch.Tensor, batch_size: int | None = None) -> list[float]:
    return [block_influence(c) for c in layer_io_cosine(model, calib, batch_size=batch_size)]


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove `config.layers` decoder layers chosen by Block Influence (or at random)."""
    n = len(decoder_layers(model))
    k = layers_to_remove(config, model)
    details: dict[str, object] = {"selection": config.selection}
    if config.selection == "random":
        drop = select_layers([0.0] * n, k, "random", config.seed)
        details["seed"] = config.seed
    else:
        # the same dense model and calibration give the same scores: sibling runs (lowest / highest) share them
        key = ("shortgpt-block-influence", calib.data_ptr(), tuple(calib.shape))
        scores = ctx.dense_statistic(key, lambda: block_influences(model, calib, ctx.batch_size))
        drop = select_layers(scores, k, config.selection)
        details["block_influence"] = [round(s, 6) for s in scores]
    remove_layers(model, drop)
    if ctx.progress is not None:
        ctx.progress(1, 1)
    return Outcome(kind="depth", removed_layers=drop, details=details)
