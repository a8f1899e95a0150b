"""Deeper layers: remove the run of n layers whose input and output are closest in angle, then heal.

Paper:    Gromov, Tirumala, Shapourian, Glorioso, Roberts. "The Unreasonable Ineffectiveness of the Deeper
          Layers". ICLR 2025, arXiv:2403.17887. Record id: `deeper-layers`.
Official: none released; the community arcee-ai/PruneMe (`compute_block_similarity/utils.py`) computes the
          same angular distance and was read to settle the window indexing.
Idea:     For a number n of layers to drop, measure on calibration text the angular distance
          arccos(cos(x_l, x_{l+n})) / pi between the residual stream entering layer l and the one entering
          layer l + n, at the last token of each sequence, averaged over sequences; remove the window
          l*, ..., l* + n - 1 with the smallest distance, then "heal" with a short parameter-efficient
          fine-tuning (QLoRA on C4 in the paper). The chosen windows sit deep in the network.
Differs:  (1) plain LoRA (merged into the weights) instead of 4-bit QLoRA, a few steps on the calibration
          windows instead of C4; (2) the stream leaving the last layer is taken before the final norm (PruneMe
          compares a normed last state); (3) `selection="window"` (a fixed `start`) and `"deepest"` (the
          last n layers before the final one, the paper's simple heuristic) are comparison arms.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.recovery import Budget, lora_steps
from .harness.structure import remove_layers
from .primitives.blocks import angular_distance, window_cosines
from .primitives.depth import layers_to_remove
from .primitives.selection import best_window


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # n, layers to remove; None = a quarter of them (rounded down)
    selection: Literal["angular", "window", "deepest"] = "angular"
    start: int | None = Field(None, ge=0)  # first removed layer, for selection="window" (clamped to L - n)
    last_token: bool = True  # distances at each sequence's last token (paper); False: every token
    heal_steps: int = Field(20, ge=0)  # LoRA healing steps after removal (0 = none)
    heal_batch: int = Field(2, ge=1)  # calibration windows per step
    heal_lr: float = Field(3e-4, gt=0)
    lora_rank: int = Field(8, ge=1)


# ---- pure math ------------------------------------------------------------------------------------
def mean_angular_distances(cosines: list[torch.Tensor]) -> list[float]:
    """Per window start: the mean over samples of arccos(cos) / pi."""
    return [float(angular_distance(c).mean()) for c in cosines]


def deepest_window(layers: int, n: int) -> int:
    """Start of the last n layers before the final one (the paper's heuristic baseline)."""
    if n >= layers:
        raise ValueError(f"cannot remove {n} of {layers} layers and keep the last")
    return layers - 1 - n


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def angular_distances(
    model: nn.Module, calib: torch.Tensor, n: int, last_token: bool = True, batch_size: int | None = None
) -> list[float]:
    return mean_angular_distances(
        window_cosines(model, calib, n, last_token=last_token, batch_size=batch_size)
    )


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove a window of `config.layers` consecutive layers (by angular distance, or fixed), then heal."""
    total = len(decoder_layers(model))
    n = layers_to_remove(config, model)
    details: dict[str, object] = {"selection": config.selection}
    if config.selection == "angular":
        key = ("deeper-layers-angular", calib.data_ptr(), tuple(calib.shape), n, config.last_token)
        distances = ctx.dense_statistic(key, lambda: angular_distances(model, calib, n, config.last_token,
                                                                       ctx.batch_size))  # fmt: skip
        start = best_window(distances)
        details["angular_distance"] = [round(d, 6) for d in distances]
    elif config.selection == "window":
        if config.start is None:
            raise KBError("deeper-layers: selection=window needs a start layer (--set start=...)")
        start = min(config.start, total - n)  # a start past the last window means the last window
        if start != config.start:
            details["clamped_from"] = config.start
    else:
        start = deepest_window(total, n)
    drop = remove_layers(model, range(start, start + n))
    details["start"] = start
    if ctx.progress is not None:
        ctx.progress(1, 1)
    if config.heal_steps > 0:
        report = lora_steps(model, calib, Budget(config.heal_steps, config.heal_batch), lr=config.heal_lr,
                            rank=config.lora_rank, alpha=2.0 * config.lora_rank, seed=ctx.seed,
                            progress=ctx.progress)  # fmt: skip
        details["healing"] = report.summary()
    return Outcome(kind="depth", removed_layers=drop, details=details)
