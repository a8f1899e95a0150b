"""Reassessing Layer Pruning: remove the last layers, then fine-tune only the last few layers, final norm and head.

Paper:    Lu, Cheng, Fang, Wang, Wei, Xu, Xuan, Yang, Zhu. "Reassessing Layer Pruning in LLMs: New Insights
          and Methods". ICLR 2026 (poster), arXiv:2411.15558. Record id: `reassessing-layer-pruning`.
Official: yaolu-zjut/Navigation-LLM-layer-pruning.
Idea:     A benchmark of layer-selection metrics (random, reverse order, magnitude, Taylor, perplexity,
          Block Influence) and recovery methods (LoRA, QLoRA, partial-layer fine-tuning) ends in a simple
          recipe: reverse-order pruning (drop the last quarter of the layers) and partial-layer fine-tuning,
          which trains only the last three remaining layers, the final norm and the LM head with everything
          else frozen (official `partial_fine-tuning.py`: the norm and the head are always trained); it
          recovers better than LoRA, and iterative pruning brings nothing over one shot.
Differs:  (1) recovery is a few steps on calibration windows (the paper fine-tunes on Alpaca / Dolly);
          (2) SmolLM2 ties the LM head to the input embedding: the head is untied (cloned) before training,
          so the embedding stays fixed and the saved model stores both matrices; (3) the metrics other than
          reverse order are the harness's shared scores (`primitives/blocks.py`), one shot.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.recovery import Budget, frozen_prefix, lora_steps, partial_layer_steps
from .harness.structure import remove_layers
from .primitives.blocks import block_influence, block_magnitude, block_taylor, layer_io_cosine, removal_losses
from .primitives.depth import layers_to_remove
from .primitives.selection import individual, reverse_order

Metric = Literal["reverse", "bi", "taylor", "magnitude-l1", "magnitude-l2", "ppl", "random"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # layers to remove; None = ceil(L / 4)
    metric: Metric = "reverse"
    recovery: Literal["partial", "lora", "none"] = "partial"
    steps: int = Field(20, ge=0)  # fine-tuning steps (equal for every recovery)
    batch: int = Field(2, ge=1)  # calibration windows per step
    lr: float = Field(1e-4, gt=0)
    last: int = Field(3, ge=0)  # partial-layer fine-tuning: the last remaining layers trained
    head: bool = True  # ... and the LM head
    norm: bool = True  # ... and the final norm in front of the head
    lora_rank: int = Field(8, ge=1)
    num_examples: int = Field(8, ge=1)  # calibration sequences for the taylor / ppl metrics
    seed: int = 0  # metric="random"


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def layer_scores(model: nn.Module, calib: torch.Tensor, metric: str, num_examples: int,
                 batch_size: int | None = None) -> list[float]:  # fmt: skip
    """Importance per layer (lower = removed first) for the score-based metrics."""
    examples = calib[:num_examples]
    if metric == "bi":
        return [block_influence(c) for c in layer_io_cosine(model, calib, batch_size=batch_size)]
    if metric == "taylor":
        return block_taylor(model, examples, batch_size=batch_size)
    if metric in ("magnitude-l1", "magnitude-l2"):
        return block_magnitude(model, 1 if metric.endswith("l1") else 2)
    n = len(decoder_layers(model))
    return [math.exp(min(v, 700.0)) for v in removal_losses(model, examples, [("block", i) for i in range(n)],
                                                             batch_size=batch_size)]  # fmt: skip


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove `config.layers` layers chosen by `config.metric`, then recover with equal-budget fine-tuning."""
    n = len(decoder_layers(model))
    k = layers_to_remove(config, model, default=lambda n: max(1, math.ceil(n / 4)))
    details: dict[str, object] = {"metric": config.metric, "recovery": config.recovery}
    if config.metric == "reverse":
        drop = reverse_order(n, k)
    elif config.metric == "random":
        drop = sorted(random.Random(config.seed).sample(range(n), k))
    else:
        key = ("reassessing", config.metric, calib.data_ptr(), tuple(calib.shape), config.num_examples)
        scores = ctx.dense_statistic(key, lambda: layer_scores(model, calib, config.metric, config.num_examples,
                                                               ctx.batch_size))  # fmt: skip
        drop = individual(scores, k)
        details["scores"] = [round(s, 6) for s in scores]
    remove_layers(model, drop)
    if config.recovery != "none" and config.steps > 0:
        budget = Budget(config.steps, config.batch)
        if config.recovery == "partial":
            last = min(config.last, n - k)
            # the frozen layers are untouched dense layers: arms that keep the same ones share their output
            front = tuple(i for i in range(n) if i not in drop)[: n - k - last]
            prefix = ctx.dense_statistic(("frozen-prefix", front, calib.data_ptr(), tuple(calib.shape)),
                                         lambda: frozen_prefix(model, calib, len(front), ctx.batch_size))  # fmt: skip
            report = partial_layer_steps(model, calib, budget, last=last, head=config.head, norm=config.norm,
                                         lr=config.lr, seed=ctx.seed, progress=ctx.progress, prefix=prefix)  # fmt: skip
        else:
            report = lora_steps(model, calib, budget, lr=config.lr, rank=config.lora_rank,
                                alpha=2.0 * config.lora_rank, seed=ctx.seed, progress=ctx.progress)  # fmt: skip
        details["fine_tuning"] = report.summary()
    return Outcome(kind="depth", removed_layers=drop, details=details)
