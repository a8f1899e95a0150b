"""LaCo: collapse runs of adjacent decoder layers into one by adding their parameter differences.

Paper:    Yang, Cao, Zhao. "LaCo: Large Language Model Pruning via Layer Collapse". Findings of EMNLP 2024,
          arXiv:2402.11187. Record id: `laco`.
Official: yangyifei729/LaCo (`laco_llama-13b.ipynb`, a preliminary notebook). Its settings for the 40-layer
          Llama-2-13B: MERGE_LAYERS = 7 (a layer and the 6 after it become one), INTERVAL = 1, layer range
          0..39, THRESHOLD = 0.45, five short English Wikipedia snippets as calibration.
Idea:     Reserving-Differences-while-Seeking-Common: layer l absorbs the m layers behind it,
          theta*_l = theta_l + sum_k (theta_{l+k} - theta_l) for the attention and MLP parameters (the layer
          keeps its own norms), and the m layers are deleted. Starting near the top and moving down, a merge is
          kept only while the pruned model's last hidden states (after the final norm) stay similar to the
          dense model's: the mean over the calibration sentences of the cosine between the two flattened
          (tokens x hidden) outputs must exceed the threshold; after a kept merge the scan moves down by the
          interval, after a rejected one by a layer. The result is a stock model with fewer layers.
Differs:  (1) calibration sentences are the first `sentences` calibration windows cut to `sentence_tokens`
          tokens, not Wikipedia snippets; (2) the notebook updates the base layer in place while it sums, so
          each term subtracts the already-updated weights and the merged layer ends up equal to the last absorbed
          one (theta_{l+m}); we follow the paper's formula, and `rule="released"` reproduces the notebook; it
          lists the seven projection weights, we take every attention and MLP parameter (the same on LLaMA);
          (3) `layers` (ours, to compare arms at one depth) stops the scan once that many layers are gone, the
          last merge absorbing only what is left; if the scan ends short, the most similar merge of the current
          model is taken until the count is met, below the threshold (counted in `details`); (4) `merge=False`
          runs the same search, then only deletes the layers it chose (the ablation arm); (5) C defaults to the
          notebook's 7 per 40 layers scaled to the model's depth (5 on 30 layers), and a model shorter than the
          merge starts its scan at the lowest layer.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, input_embedding
from .harness.structure import remove_layers

Rule = Literal["rdsc", "released"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int | None = Field(None, ge=1)  # layers to remove (ours); None = as many as the threshold allows
    merge_layers: int | None = Field(None, ge=2)  # C: layers that become one; None = 7 per 40 layers
    interval: int = Field(1, ge=1)  # I: layers the scan moves down after a kept merge (notebook: 1)
    threshold: float = Field(0.45, ge=-1.0, le=1.0)  # T: the similarity a merge must exceed (notebook: 0.45)
    lowest: int = Field(0, ge=0)  # L: the lowest layer a merge may start at
    highest: int | None = Field(None, ge=0)  # H: the scan starts at H - C; None = the last layer
    sentences: int = Field(5, ge=1)  # calibration sentences (notebook: 5)
    sentence_tokens: int = Field(16, ge=2)  # tokens of each (ours: the notebook's snippets are 7-20 tokens)
    rule: Rule = "rdsc"  # the paper's formula, or "released": the notebook's in-place sum
    merge: bool = True  # False: the same search, then the chosen layers are deleted without merging


# ---- pure tensor math -----------------------------------------------------------------------------------
def merged(base: torch.Tensor, absorbed: list[torch.Tensor], rule: Rule) -> torch.Tensor:
    """theta_l + sum_k (theta_{l+k} - theta_l) ("rdsc"); "released" subtracts the running result instead of
    theta_l in each term, as the notebook's in-place update does, which leaves theta_{l+m} up to rounding."""
    out = base.clone()
    for other in absorbed:
        out += other - (base if rule == "rdsc" else out)
    return out


def similarity(reference: torch.Tensor, pruned: torch.Tensor) -> float:
    """(sentences, tokens, hidden) x2 -> mean over sentences of the cosine of the flattened outputs."""
    a, b = reference.flatten(1).double(), pruned.flatten(1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


# ---- model driver ---------------------------------------------------------------------------------------
def last_hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(sentences, tokens, hidden): the output of the final norm, as the notebook's `hidden_states[-1]`."""
    with torch.inference_mode():
        out = model(input_ids=ids.to(input_embedding(model).weight.device), output_hidden_states=True,
                    use_cache=False, logits_to_keep=1)  # fmt: skip
    last: torch.Tensor = out.hidden_states[-1]
    return last.float()


def collapse(model: nn.Module, base: int, m: int, rule: Rule, merge: bool = True) -> None:
    """Layer `base` absorbs layers base+1..base+m (their attention and MLP parameters), which are deleted."""
    layers: Any = decoder_layers(model)
    if merge:
        with torch.no_grad():
            for part in ("self_attn", "mlp"):
                absorbed = [dict(getattr(layers[base + k], part).named_parameters()) for k in range(1, m + 1)]
                for name, param in getattr(layers[base], part).named_parameters():
                    param.copy_(merged(param, [a[name] for a in absorbed], rule))
    remove_layers(model, range(base + 1, base + m + 1))


def merge_size(config: Config, layers: int) -> int:
    """C: the configured value, or the notebook's 7 for 40 layers scaled to this depth (at least 2)."""
    return config.merge_layers if config.merge_layers is not None else max(2, round(layers * 7 / 40))


def search(
    model: nn.Module, ids: torch.Tensor, config: Config, ctx: Context
) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
    """LaCo's scan on copies of `model` (which is not changed): the kept merges as (base, m) in the order made,
    each in the layer indices of the model at that moment, and every trial (the base's original index, layers
    absorbed, similarity, kept, forced)."""
    reference = last_hidden(model, ids)
    n = len(decoder_layers(model))
    c, target = merge_size(config, n), config.layers if config.layers is not None else n
    work, orig = model, list(range(n))  # the model as collapsed so far; the original index of each layer
    plan: list[tuple[int, int]] = []
    trials: list[dict[str, Any]] = []

    def attempt(base: int) -> tuple[nn.Module, int, float]:
        m = min(c - 1, len(orig) - base - 1, target - (n - len(orig)))  # the notebook clamps at the top
        trial = copy.deepcopy(work)
        collapse(trial, base, m, config.rule)
        return trial, m, similarity(reference, last_hidden(trial, ids))

    def record(base: int, m: int, sim: float, kept: bool, forced: bool = False) -> None:
        trials.append(
            {"at": orig[base], "absorbed": m, "similarity": round(sim, 6), "kept": kept, "forced": forced}
        )
        ctx.log(f"laco: layer {orig[base]} absorbing {m}: similarity {sim:.4f}, {'kept' if kept else 'rejected'}"
                + (" (forced)" if forced else ""))  # fmt: skip
        if kept:
            plan.append((base, m))
            del orig[base + 1 : base + m + 1]

    highest = config.highest if config.highest is not None else n - 1

    def start() -> (
        int
    ):  # the scan's first base: its window ends just below the highest layer (notebook: H - C)
        return max(config.lowest, highest - (n - len(orig)) - c)

    lay = start()
    while lay >= config.lowest and n - len(orig) < target:
        if lay >= len(orig) - 1:  # nothing above it to absorb
            lay -= 1
            continue
        trial, m, sim = attempt(lay)
        record(lay, m, sim, kept=sim > config.threshold)
        if sim > config.threshold:
            work, lay = trial, lay - config.interval
        else:
            lay -= 1
    while config.layers is not None and n - len(orig) < target:  # short of the count: the most similar merge
        bases = [b for b in range(start(), config.lowest - 1, -1) if b < len(orig) - 1]  # ties: the higher
        if not bases:
            raise KBError(f"laco: no merge starts in layers {config.lowest}..{start()} of {len(orig)}")
        (trial, m, sim), base = max(((attempt(b), b) for b in bases), key=lambda t: t[0][2])
        record(base, m, sim, kept=True, forced=True)
        work = trial
    return plan, trials


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Collapse layers top-down while the output stays similar (or until `config.layers` are gone)."""
    n = len(decoder_layers(model))
    if config.layers is not None and config.layers >= n:
        raise KBError(f"cannot remove {config.layers} of {n} decoder layers; ask for fewer with --layers")
    ids = calib[: config.sentences, : config.sentence_tokens]  # (sentences, tokens)
    # the search depends on the dense model, the sentences and every option but `merge`: the merged arm and the
    # ablation arm of one comparison share it
    options = tuple(sorted(config.model_dump(exclude={"merge"}).items()))
    key = ("laco-search", calib.data_ptr(), tuple(calib.shape), options)
    plan, trials = ctx.dense_statistic(key, lambda: search(model, ids, config, ctx))
    if not plan:
        raise KBError(f"laco: no merge of {merge_size(config, n)} layers kept the output similarity above "
                      f"{config.threshold}; lower --set threshold or ask for a count with --layers")  # fmt: skip
    kept = list(range(n))
    for base, m in plan:  # replay the kept merges on the model itself
        collapse(model, base, m, config.rule, merge=config.merge)
        del kept[base + 1 : base + m + 1]
    details: dict[str, object] = {
        "rule": config.rule, "merged": config.merge, "merge_layers": merge_size(config, n),
        "threshold": config.threshold, "trials": trials, "forced_merges": sum(t["forced"] for t in trials),
        "kept_layers": kept, "sentences": list(ids.shape),
    }  # fmt: skip
    return Outcome(kind="depth", removed_layers=sorted(set(range(n)) - set(kept)), details=details)
