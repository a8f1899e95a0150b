"""SLEB: remove decoder blocks one at a time, each time the block whose absence keeps the calibration loss lowest.

Paper:    Song, Oh, Kim, Kim, Kim, Kim. "SLEB: Streamlining LLMs through Redundancy Verification and Elimination
          of Transformer Blocks". ICML 2024, arXiv:2402.09025. Record id: `sleb`.
Official: jiwonsong-dev/SLEB (`sleb.py`: the greedy search; `utils/onoff_utils`: a block switched off passes
          its input through). Defaults there: 128 windows of 2048 WikiText-2 training tokens, 7 of 32 blocks
          removed (the README removes 16 of 80, the paper reports 10% and 20%), the first and the last alive
          block never candidates (`early_barrier = latter_barrier = 1`).
Idea:     Redundancy is verified on the model as it is now, not on the dense one: in every round each remaining
          candidate block is switched off on its own, the calibration loss of the shortened model is measured,
          and the block with the lowest loss goes (the first candidate on ties, as upstream's strict `<`). Then
          the next round re-scores the survivors. No retraining; the result is a stock model with fewer layers.
Differs:  (1) calibration from the run's corpus, and in our claims far fewer tokens than upstream's 128 x 2048
          (`examples` windows of the run's length); (2) the default count is a fifth of the blocks, rounded down
          (6 of 32 where upstream's script says 7); (3) the loss of each candidate comes from
          `primitives.blocks.stream_removal_losses`: the residual stream is cached once per round and each
          candidate's forward starts at its own block, the same numbers as upstream's full forward, about twice
          as fast. Upstream sums the per-window mean loss, we average it: the same order. (4) A model too shallow
          for the barriers and the removal count is searched without them.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.structure import remove_layers
from .primitives.blocks import Part, bypassed, stream_removal_losses
from .primitives.depth import layers_to_remove
from .primitives.selection import Progressive, progressive


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # blocks to remove; None = a fifth of them (rounded down, >= 1)
    early_barrier: int = Field(1, ge=0)  # the first blocks are never candidates (upstream: 1)
    latter_barrier: int = Field(1, ge=0)  # ... nor the last ones (upstream: 1)
    examples: int | None = Field(None, ge=1)  # calibration windows scored; None = all of them


def fifth(n: int) -> int:
    return max(1, n // 5)


# ---- pure helpers ---------------------------------------------------------------------------------------
def candidates(layers: int, early: int, latter: int, k: int) -> list[int]:
    """Blocks that may be removed: all but the first `early` and the last `latter` (they stay first and last
    among the alive blocks, since they are never removed). A model too shallow for the barriers and `k`
    removals (random-llama's two layers) gets no barriers: every block is a candidate."""
    allowed = list(range(early, layers - latter))
    return allowed if k <= len(allowed) else list(range(layers))


# ---- model driver (mutates `model` in place) ------------------------------------------------------------
def search(
    model: nn.Module, ids: torch.Tensor, pool: list[Part], budget: int, cost: dict[Part, int], ctx: Context
) -> Progressive[Part]:
    """Greedy removal over `pool` until `budget` cost is gone: every round scores each remaining part by the
    calibration loss over `ids` (samples, seq) with the parts removed so far and that part switched off, and
    removes the lowest (the earliest in `pool` on ties). The model is left unchanged (parts are only bypassed)."""
    gone: list[Part] = []

    def score(remaining: list[Part]) -> dict[Part, float]:
        with bypassed(model, gone):  # the model as shortened so far
            losses = stream_removal_losses(model, ids, remaining, batch_size=ctx.batch_size)
        ctx.log(f"round {len(gone) + 1}: {len(remaining)} candidates, lowest loss {min(losses):.4f}")
        return dict(zip(remaining, losses, strict=True))

    def remove(part: Part) -> None:
        gone.append(part)
        if ctx.progress is not None:
            ctx.progress(min(budget, sum(cost[p] for p in gone)), budget)

    return progressive(pool, score, lambda part: cost[part], budget, remove)


def round_summary(result: Progressive[Part]) -> list[float]:
    """The loss of the model after each round's removal (the lowest score of that round)."""
    return [round(scores[part], 6) for part, scores in zip(result.removed, result.rounds, strict=True)]


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove `config.layers` blocks, one per round, each the block whose removal keeps the loss lowest."""
    n = len(decoder_layers(model))
    k = layers_to_remove(config, model, default=fifth)
    pool: list[Part] = [("block", i) for i in candidates(n, config.early_barrier, config.latter_barrier, k)]
    ids = calib[: config.examples]  # (examples, seq)
    result = search(model, ids, pool, k, dict.fromkeys(pool, 1), ctx)
    order = [i for _kind, i in result.removed]
    remove_layers(model, order)
    details: dict[str, object] = {
        "order": order, "loss_after_each_removal": round_summary(result),
        "first_round_loss": {str(i): round(v, 6) for (_kind, i), v in result.rounds[0].items()},
        "barriers": [pool[0][1], n - 1 - pool[-1][1]], "score_windows": list(ids.shape),
        "score_tokens": ids.numel(),
    }  # fmt: skip
    return Outcome(kind="depth", removed_layers=sorted(order), details=details)
