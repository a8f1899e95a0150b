"""What Matters (LLM-Drop): drop the attention sublayers, MLP sublayers or blocks that change the stream least.

Paper:    He, Sun, Shen, Li. "What Matters in Transformers? Not All Attention is Needed". arXiv:2406.15786
          (2024). Record id: `what-matters`.
Official: CASE-Lab-UMD/LLM-Drop (`src/llmtuner/compression/prune/layer_drop.py`: importance = 1 - mean
          cosine similarity between a module's input and its input plus its output).
Idea:     The importance of a module (a whole block, its attention sublayer, or its MLP sublayer) is
          S = 1 - cos(X, X + f(X)), X the residual stream entering the module, averaged over calibration
          tokens. Attention Drop removes the k attention sublayers with the lowest S, MLP Drop and Block
          Drop likewise; Joint Drop ranks attention and MLP sublayers together. Deeper attention layers
          turn out highly redundant: dropping them costs little accuracy and shrinks the KV cache.
Differs:  (1) calibration from the run's corpus, not C4; (2) a dropped attention keeps a one-number-per-token
          placeholder in the KV cache (see `harness/pruned_llama.py`), so the cache shrinks by slightly less
          than k/L; (3) `mode="iterative"` re-scores after every drop on the pruned model, as the paper's
          iterative variant; one-shot is the default.
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
from .harness.structure import remove_layers, skip_sublayers, skipped
from .primitives.blocks import SublayerStats, sublayer_stats
from .primitives.depth import modules_to_drop

Target = Literal["attention", "mlp", "block", "joint"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(
        None, ge=1
    )  # modules to drop (sublayers or blocks); None = a quarter of the layers
    target: Target = "attention"
    mode: Literal["one-shot", "iterative"] = "one-shot"


# ---- pure math ------------------------------------------------------------------------------------
def importance(stats: SublayerStats, target: str) -> dict[tuple[str, int], float]:
    """S = 1 - mean cos for every candidate module of `target`, keyed by (kind, layer)."""
    out: dict[tuple[str, int], float] = {}
    if target in ("attention", "joint"):
        out.update({("attention", i): 1.0 - c for i, c in enumerate(stats.attention_cos)})
    if target in ("mlp", "joint"):
        out.update({("mlp", i): 1.0 - c for i, c in enumerate(stats.mlp_cos)})
    if target == "block":
        out.update({("block", i): 1.0 - c for i, c in enumerate(stats.block_cos)})
    return out


def least_important(scores: dict[tuple[str, int], float], k: int) -> list[tuple[str, int]]:
    """The k modules with the lowest importance; ties by layer, attention before MLP."""
    if k > len(scores):
        raise KBError(f"cannot drop {k} of {len(scores)} modules")
    return sorted(scores, key=lambda m: (scores[m], m[1], m[0]))[:k]


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def _drop_sublayers(model: nn.Module, chosen: list[tuple[str, int]]) -> None:
    skip_sublayers(model, attention=[i for kind, i in chosen if kind == "attention"],
                   mlp=[i for kind, i in chosen if kind == "mlp"])  # fmt: skip


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Drop `config.layers` modules of `config.target` with the lowest importance."""
    n = len(decoder_layers(model))
    k = modules_to_drop(config, model, config.target)
    details: dict[str, object] = {"target": config.target, "mode": config.mode}
    if config.mode == "one-shot":
        key = ("sublayer-stats", calib.data_ptr(), tuple(calib.shape))
        stats = ctx.dense_statistic(key, lambda: sublayer_stats(model, calib, batch_size=ctx.batch_size))
        scores = importance(stats, config.target)
        chosen = least_important(scores, k)
        by_layer = sorted(scores.items(), key=lambda x: x[0][1])
        details["importance"] = {f"{i}.{kind}": round(s, 6) for (kind, i), s in by_layer}
        if config.target != "block":
            _drop_sublayers(model, chosen)
    else:
        chosen = []
        alive = list(range(n))  # dense index of every current layer (blocks are removed as we go)
        for step in range(k):
            scores = importance(sublayer_stats(model, calib, batch_size=ctx.batch_size), config.target)
            gone = skipped(model)
            scores = {m: s for m, s in scores.items() if m[0] == "block" or m[1] not in gone[m[0]]}
            kind, i = least_important(scores, 1)[0]
            if kind == "block":
                remove_layers(model, [i])
                chosen.append((kind, alive.pop(i)))
            else:
                _drop_sublayers(model, [(kind, i)])
                chosen.append((kind, i))
            if ctx.progress is not None:
                ctx.progress(step + 1, k)
    details["dropped"] = [f"{i}.{kind}" for kind, i in chosen]
    if config.target == "block":
        drop = sorted(i for _kind, i in chosen)
        if config.mode == "one-shot":
            remove_layers(model, drop)
        return Outcome(kind="depth", removed_layers=drop, details=details)
    subs = [
        f"{i}.{'attn' if kind == 'attention' else 'mlp'}"
        for kind, i in sorted(chosen, key=lambda m: (m[1], m[0]))
    ]
    return Outcome(kind="depth", removed_sublayers=subs, details=details)
