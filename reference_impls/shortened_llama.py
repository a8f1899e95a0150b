"""Shortened LLaMA: remove the blocks whose individual removal hurts least (perplexity or Taylor+ criterion).

Paper:    Kim, Kim, Kim, Castells, Choi, Shin, Song. "Shortened LLaMA: Depth Pruning for Large Language
          Models with Comparison of Retraining Methods". ICLR 2024 Workshop ME-FoMo, arXiv:2402.02834.
          Record id: `shortened-llama`.
Official: Nota-NetsPresso/shortened-llm (`src/anal_block_sensitivity_ppl.py` for the PPL criterion: 10
          calibration samples of 128 tokens, one block removed at a time).
Idea:     Score every Transformer block once on the dense model, then remove the k least important in one
          shot. PPL criterion: the calibration perplexity with that block alone removed (lower = less
          important). Taylor+: the sum over the block's weights of |w * dL/dw|, with the first and last few
          blocks protected from removal. Optional LoRA retraining afterwards. A depth-pruned model keeps
          full-width matrices, so at batch 1 it decodes faster than a width-pruned model of the same size.
Differs:  (1) calibration from the run's corpus instead of BookCorpus; (2) the protected blocks of Taylor+
          scale with depth: the first round(L x 4/32) and last round(L x 2/32) (4 and 2 on 32 layers);
          (3) `criterion="random"` (seeded) and `"magnitude"` are comparison arms; (4) retraining is a few
          LoRA steps on calibration windows instead of Alpaca or continued pre-training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
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
from .primitives.blocks import block_magnitude, block_taylor, removal_losses
from .primitives.depth import layers_to_remove


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # blocks to remove; None = a fifth of them (rounded down, >= 1)
    criterion: Literal["ppl", "taylor+", "taylor", "magnitude", "random"] = "ppl"
    num_examples: int = Field(10, ge=1)  # calibration sequences for the scores (upstream: 10)
    example_len: int = Field(128, ge=2)  # tokens of each (upstream: 128)
    protect_first: int | None = Field(None, ge=0)  # Taylor+: blocks kept at the start; None = round(L x 4/32)
    protect_last: int | None = Field(None, ge=0)  # ... and at the end; None = round(L x 2/32)
    seed: int = 0  # criterion="random"
    recovery_steps: int = Field(0, ge=0)  # LoRA steps after removal (0 = none: the one-shot comparison)
    recovery_batch: int = Field(2, ge=1)
    lora_lr: float = Field(1e-4, gt=0)


# ---- pure helpers -------------------------------------------------------------------------------------
def protected(layers: int, first: int | None = None, last: int | None = None) -> set[int]:
    f = first if first is not None else int(layers * 4 / 32 + 0.5)
    la = last if last is not None else int(layers * 2 / 32 + 0.5)
    return set(range(min(f, layers))) | set(range(max(0, layers - la), layers))


def least_important(scores: list[float], k: int, excluded: Collection[int] = ()) -> list[int]:
    """The k lowest-scoring blocks outside `excluded` (ties by index), sorted."""
    allowed = [i for i in range(len(scores)) if i not in excluded]
    if k > len(allowed):
        raise KBError(f"cannot remove {k} blocks: only {len(allowed)} may be removed")
    return sorted(sorted(allowed, key=lambda i: (scores[i], i))[:k])


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def block_scores(model: nn.Module, examples: torch.Tensor | None, criterion: str, batch_size: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[float]:  # fmt: skip
    """Per-block scores; `examples` (calibration tokens) are needed by every criterion but magnitude."""
    n = len(decoder_layers(model))
    if criterion == "ppl":
        assert examples is not None
        losses = removal_losses(model, examples, [("block", i) for i in range(n)], batch_size=batch_size,
                                progress=progress)  # fmt: skip
        return [math.exp(min(v, 700.0)) for v in losses]
    if criterion in ("taylor", "taylor+"):
        assert examples is not None
        return block_taylor(model, examples, batch_size=batch_size)
    return block_magnitude(model, 1)


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove `config.layers` blocks by the chosen criterion, optionally recover with LoRA."""
    n = len(decoder_layers(model))
    k = layers_to_remove(config, model, default=lambda n: max(1, n // 5))
    details: dict[str, object] = {"criterion": config.criterion}
    if config.criterion == "random":
        drop = sorted(random.Random(config.seed).sample(range(n), k))
        details["seed"] = config.seed
    else:
        examples = None
        if config.criterion != "magnitude":
            examples = calib[: config.num_examples, : config.example_len]
        kind = "taylor" if config.criterion == "taylor+" else config.criterion
        key = ("shortened-llama", kind, examples.data_ptr() if examples is not None else None,
               tuple(examples.shape) if examples is not None else None)  # fmt: skip
        scores = ctx.dense_statistic(key, lambda: block_scores(model, examples, kind, ctx.batch_size,
                                                               ctx.progress))  # fmt: skip
        excluded = (
            protected(n, config.protect_first, config.protect_last)
            if config.criterion == "taylor+"
            else set()
        )
        drop = least_important(scores, k, excluded)
        details["scores"] = [round(s, 6) for s in scores]
        if excluded:
            details["protected"] = sorted(excluded)
    remove_layers(model, drop)
    if config.recovery_steps > 0:
        report = lora_steps(model, calib, Budget(config.recovery_steps, config.recovery_batch), lr=config.lora_lr,
                            seed=ctx.seed, progress=ctx.progress)  # fmt: skip
        details["recovery"] = report.summary()
    return Outcome(kind="depth", removed_layers=drop, details=details)
