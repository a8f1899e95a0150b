"""A Deeper Look at depth pruning: score blocks or sublayers (cosine or Shapley), drop them, emulate their mean update.

Paper:    Siddiqui, Dong, Heinrich, Breuel, Kautz, Krueger, Molchanov. "A deeper look at depth pruning of
          LLMs". ICML 2024 Workshop on Theoretical Foundations of Foundation Models, arXiv:2407.16286.
          Record id: `deeper-look-depth`.
Official: shoaibahmed/llm_depth_pruning (MIT).
Idea:     Compare static importance (the cosine similarity between what enters and leaves a block) with
          adaptive importance (the Shapley value of each block for the loss, estimated from sampled orders),
          apply them to whole blocks and to self-attention and feed-forward sublayers separately, and repair
          a removed sublayer cheaply by emulating its update: add its average output over calibration
          tokens, E[f(x)], as a constant bias in its place. Attention sublayers turn out far more prunable
          than feed-forward ones, and the mean update helps.
Differs:  (1) calibration from the run's corpus; (2) the mean update is measured on the dense model in one
          pass (not re-estimated after each removal); (3) Shapley values use a bounded number of random
          orders on a small calibration slice (`permutations`, `examples`, `example_len`), value = -loss;
          (4) the low-rank adapter alternative of the paper is not implemented.
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
from .harness.structure import remove_layers, skip_sublayers
from .primitives.blocks import Part, bypassed, mean_loss, shapley_permutations, sublayer_stats
from .primitives.depth import modules_to_drop
from .primitives.selection import individual


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # modules to drop; None = a quarter of the layers
    target: Literal["attention", "mlp", "block"] = "attention"
    metric: Literal["cosine", "shapley"] = "cosine"
    emulate: Literal["none", "mean"] = "none"  # mean: a dropped sublayer adds its mean calibration update
    permutations: int = Field(2, ge=1)  # Shapley: sampled orders (cost: layers x permutations + 1 losses)
    examples: int = Field(2, ge=1)  # Shapley: calibration sequences of the value function
    example_len: int = Field(128, ge=2)
    seed: int = 0


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def shapley_scores(model: nn.Module, ids: torch.Tensor, target: str, permutations: int, seed: int = 0,
                   batch_size: int | None = None) -> list[float]:  # fmt: skip
    """Shapley value of every layer's `target` module for -loss on `ids`."""
    n = len(decoder_layers(model))

    def value(present: frozenset[int]) -> float:
        absent: list[Part] = [(target, i) for i in range(n) if i not in present]
        with bypassed(model, absent):
            return -mean_loss(model, ids, batch_size=batch_size)

    return shapley_permutations(value, n, permutations, seed)


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Drop the `config.layers` least important modules of `config.target`, optionally with mean updates."""
    k = modules_to_drop(config, model, config.target)
    if config.emulate == "mean" and config.target == "block":
        raise KBError("deeper-look-depth: the mean update emulates sublayers; use target=attention or mlp")
    key = ("sublayer-stats", calib.data_ptr(), tuple(calib.shape))
    stats = ctx.dense_statistic(key, lambda: sublayer_stats(model, calib, batch_size=ctx.batch_size))
    if config.metric == "cosine":
        cos = {"attention": stats.attention_cos, "mlp": stats.mlp_cos, "block": stats.block_cos}[
            config.target
        ]
        scores = [1.0 - c for c in cos]
    else:
        ids = calib[: config.examples, : config.example_len]
        skey = (
            "deeper-look-shapley",
            config.target,
            ids.data_ptr(),
            tuple(ids.shape),
            config.permutations,
            config.seed,
        )
        scores = ctx.dense_statistic(skey, lambda: shapley_scores(model, ids, config.target, config.permutations,
                                                                  config.seed, ctx.batch_size))  # fmt: skip
    drop = individual(scores, k)
    details: dict[str, object] = {"target": config.target, "metric": config.metric, "emulate": config.emulate,
                                  "scores": [round(s, 6) for s in scores]}  # fmt: skip
    if ctx.progress is not None:
        ctx.progress(1, 1)
    if config.target == "block":
        return Outcome(kind="depth", removed_layers=remove_layers(model, drop), details=details)
    means = stats.attention_mean if config.target == "attention" else stats.mlp_mean
    bias = {i: means[i] for i in drop} if config.emulate == "mean" else None
    if config.target == "attention":
        skip_sublayers(model, attention=drop, attention_bias=bias)
    else:
        skip_sublayers(model, mlp=drop, mlp_bias=bias)
    if bias:
        details["mean_update_norm"] = {str(i): round(float(v.norm()), 6) for i, v in bias.items()}
    suffix = "attn" if config.target == "attention" else "mlp"
    return Outcome(kind="depth", removed_sublayers=[f"{i}.{suffix}" for i in drop], details=details)
