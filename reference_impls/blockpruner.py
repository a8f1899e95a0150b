"""BlockPruner: remove attention and MLP sublayers one at a time, each the one whose removal keeps perplexity lowest.

Paper:    Zhong, Wan, Chen, Quan, Li. "BlockPruner: Fine-grained Pruning for Large Language Models". Findings of
          ACL 2025, arXiv:2406.10594. Record id: `blockpruner`.
Official: MrGGLS/BlockPruner (`block_search.py`: the search over "mha" and "mlp" blocks; `utils.evaluate_ppl`:
          the score). Defaults there: Alpaca text cut into 2048-token windows, `--cal-nsamples` 128 in the
          script (256 in the paper, 32 and 64 in the shipped shell scripts), `--del-block-num` chosen per model
          (12 for Llama-2-7B in `eval.sh`, "about a third of the blocks" at most).
Idea:     A decoder layer is two residual blocks, attention and MLP, and they are not equally redundant.
          Every round masks each remaining sublayer on its own (with the ones already removed still masked),
          measures calibration perplexity, and removes the lowest (on ties the first in upstream's order: every
          attention sublayer by layer, then every MLP). Re-scoring after each removal is what makes perplexity
          a good criterion (the paper's "- search" ablation). `--layers K` counts removed sublayers, as
          upstream's `--del-block-num`; a layer losing both keeps two empty slots.
Differs:  (1) calibration windows from the run's corpus instead of Alpaca, and in our claim far fewer tokens;
          (2) the search is SLEB's (`sleb.search`: each candidate's forward starts at its own layer from a
          cached stream, the same numbers as a full forward) over sublayers with no barriers; upstream averages
          per-window losses before `exp`, we average the loss: the same order for equal windows; (3)
          `params_of_layers=k` (ours, for comparisons at equal size) replaces the module count by a parameter
          budget: sublayers go until at least the parameters of k average decoder layers are removed.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.structure import skip_sublayers
from .primitives.blocks import Part
from .primitives.depth import modules_to_drop
from .sleb import round_summary, search


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # sublayers to remove; None = a quarter of the layer count
    params_of_layers: int | None = Field(None, ge=1)  # instead: the parameters of this many layers (ours)
    examples: int | None = Field(None, ge=1)  # calibration windows scored; None = all of them


# ---- pure helpers ---------------------------------------------------------------------------------------
def pool(layers: int) -> list[Part]:
    """Upstream's candidate order: every attention sublayer by layer, then every MLP (ties go to the earlier)."""
    return [("attention", i) for i in range(layers)] + [("mlp", i) for i in range(layers)]


def name(part: Part) -> str:
    kind, i = part
    return f"{i}.{'attn' if kind == 'attention' else 'mlp'}"


def sublayer_size(model: nn.Module, part: Part) -> int:
    """Parameters a skip frees: the sublayer and the norm in front of it."""
    layer: Any = decoder_layers(model)[part[1]]  # a transformers decoder layer: its parts are read as Any
    modules = (
        (layer.self_attn, layer.input_layernorm)
        if part[0] == "attention"
        else (layer.mlp, layer.post_attention_layernorm)
    )
    return sum(p.numel() for m in modules for p in m.parameters())


# ---- model driver (mutates `model` in place) ------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove sublayers one per round, each the one whose removal keeps the calibration loss lowest, until
    `config.layers` sublayers (or the parameters of `config.params_of_layers` layers) are gone."""
    layers = decoder_layers(model)
    n = len(layers)
    candidates = pool(n)
    size = {part: sublayer_size(model, part) for part in candidates}
    if config.params_of_layers is None:
        budget, cost = modules_to_drop(config, model, "joint"), dict.fromkeys(candidates, 1)
    elif config.layers is not None:
        raise KBError(f"blockpruner: --layers {config.layers} (sublayers) and params_of_layers="
                      f"{config.params_of_layers} are two sizes; give one")  # fmt: skip
    elif config.params_of_layers >= n:
        raise KBError(f"blockpruner: the parameters of {config.params_of_layers} layers leave nothing of {n}")
    else:
        budget, cost = round(config.params_of_layers * sum(p.numel() for p in layers.parameters()) / n), size
    ids = calib[: config.examples]  # (examples, seq)
    result = search(model, ids, candidates, budget, cost, ctx)
    gone = sorted(result.removed, key=lambda part: (part[1], part[0]))
    skip_sublayers(model, attention=[i for kind, i in gone if kind == "attention"],
                   mlp=[i for kind, i in gone if kind == "mlp"])  # fmt: skip
    details: dict[str, object] = {
        "order": [name(part) for part in result.removed], "loss_after_each_removal": round_summary(result),
        "first_round_loss": {name(part): round(v, 6) for part, v in result.rounds[0].items()},
        "params_removed": sum(size[part] for part in result.removed),
        "budget": {"params": budget} if config.params_of_layers is not None else {"sublayers": budget},
        "emptied_layers": sorted({i for _k, i in gone if ("attention", i) in gone and ("mlp", i) in gone}),
        "score_windows": list(ids.shape), "score_tokens": ids.numel(),
    }  # fmt: skip
    return Outcome(kind="depth", removed_sublayers=[name(part) for part in gone], details=details)
