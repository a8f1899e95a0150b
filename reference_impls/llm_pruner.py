"""LLM-Pruner: remove coupled attention and MLP structures chosen by a Taylor estimate of the loss change.

Paper:    Ma, Fang, Wang. "LLM-Pruner: On the Structural Pruning of Large Language Models". NeurIPS 2023,
          arXiv:2305.11627. Record id: `llm-pruner`.
Official: horseee/LLM-Pruner, `hf_prune.py` (block-wise mode) and `llama3.py` (its GQA variant, which roots
          the attention groups at k_proj, i.e. removes whole key/value groups), importance in
          `LLMPruner/pruner/hf_llama_pruner.py::TaylorImportance`; defaults from the README command:
          `--pruning_ratio 0.25 --block_wise` on layers [4, 30) of LLaMA-7B's 32, `--pruner_type taylor`,
          `--taylor param_first`, `--grouping_strategy sum`, 10 calibration samples of 64 tokens; recovery
          with LoRA (r 8, alpha 16, dropout 0.05, lr 1e-4, on q/k/v/o/gate/up/down) in `post_training.py`.
Idea:     (1) discovery: find the groups that must go together (`primitives.groups`: a KV head with its
          query heads; an MLP channel); (2) estimation: score each group by the loss change its removal
          would cause, estimated from one backward pass over a few calibration sequences (first-order
          Taylor |w * dL/dw| summed over the group's weights); (3) remove the lowest-scoring share of the
          groups in every layer of the middle block (the first and last layers stay whole), which leaves a
          smaller dense model; (4) optionally recover with a short LoRA run, merged into the weights.
Differs:  (1) explicit LLaMA groups instead of the DepGraph tracer; attention groups are whole KV groups (as
          in upstream's `llama3.py`; `attention="q-head"` removes query heads only, evenly under every KV
          head); (2) the count of groups removed per layer is rounded to nearest, not truncated (on
          SmolLM2's 3 KV heads truncating 0.25 x 3 would leave attention untouched); (3) the kept layers
          scale with depth: the first round(n x 4/32) and last round(n x 2/32) layers stay whole (4 and 2 on
          SmolLM2's 30, as upstream on LLaMA's 32); (4) calibration comes from the run's corpus, not
          BookCorpus; (5) recovery runs a few steps on calibration windows instead of two Alpaca epochs;
          (6) the model is saved as a Hugging Face directory (upstream pickles the module): layers of
          different widths load with the project's modeling file (`harness/pruned_llama.py`).
Use:      `kb prune llm-pruner --model tiny-llama --save DIR [--set recovery_steps=20]`, then
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` (or `harness.models.load_model(DIR)`)
          and `generate` as with any LLaMA.
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
from .primitives import groups as G
from .primitives.importance import group_importance, lowest, lowest_per_block, removal_count
from .primitives.sizing import share_for_params


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        0.25, ge=0.0, lt=1.0
    )  # share of attention groups and MLP channels removed per pruned layer
    importance: Literal[
        "taylor", "second", "mix", "vectorize", "l2", "l1", "activation", "contribution", "random"
    ] = "taylor"
    reduce: Literal["sum", "mean", "max"] = "sum"  # how a group's member scores combine (upstream: sum)
    attention: Literal["kv-head", "q-head", "none"] = "kv-head"
    mlp: bool = True
    keep_first: int | None = Field(None, ge=0)  # layers left whole at the start; None = round(n x 4/32)
    keep_last: int | None = Field(None, ge=0)  # ... and at the end; None = round(n x 2/32)
    num_examples: int = Field(10, ge=1)  # calibration sequences for the gradients (upstream: 10)
    example_len: int = Field(64, ge=2)  # tokens of each (upstream: 64)
    seed: int = 0  # random importance
    recovery_steps: int = Field(0, ge=0)  # LoRA steps after pruning (0 = none)
    recovery_batch: int = Field(4, ge=1)  # calibration windows per step
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_lr: float = Field(1e-4, gt=0)
    params: float | None = None  # the `params` target: share of decoder parameters removed; sets `ratio`


# ---- pure helpers ---------------------------------------------------------------------------------
def pruned_layers(n: int, keep_first: int | None = None, keep_last: int | None = None) -> list[int]:
    """The decoder layers LLM-Pruner prunes: all but the first and last few (scaled from 4 and 2 of 32)."""
    first = keep_first if keep_first is not None else int(n * 4 / 32 + 0.5)
    last = keep_last if keep_last is not None else int(n * 2 / 32 + 0.5)
    return list(range(first, max(first, n - last)))


def choose(family: G.Family, scores: torch.Tensor, ratio: float, model: nn.Module) -> list[int]:
    """The groups of one family to remove: the lowest `ratio` share (query heads: evenly per KV head)."""
    if family.kind == "q-head":
        assert family.layer is not None
        heads, kv = G.attention_widths(model, family.layer)
        rep = heads // kv
        return lowest_per_block(scores, removal_count(rep, ratio), rep)
    return lowest(scores, removal_count(family.units, ratio))


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Score every group of the middle layers, remove the lowest share in each layer, optionally recover."""
    return prune_groups(model, calib, config, ctx, name="llm-pruner")


def prune_groups(
    model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context, *, name: str
) -> Outcome:
    """The per-layer group removal behind `prune`, shared by papers that differ only in the group scores
    (coupled components); `name` labels errors and logs."""
    n = len(decoder_layers(model))
    layers = pruned_layers(n, config.keep_first, config.keep_last)
    if not layers:
        raise KBError(f"{name}: no layer left to prune in a {n}-layer model with keep_first/keep_last "
                      f"{config.keep_first}/{config.keep_last}")  # fmt: skip
    if config.attention == "none" and not config.mlp:
        raise KBError(f"{name}: nothing to prune (attention=none and mlp=false)")
    families = [f for i in layers for f in G.layer_families(model, i, config.attention, config.mlp)]
    if (
        config.params is not None
    ):  # the ratio whose removals (counted as `choose` does) are nearest the target
        per_unit = {f: f.params_per_unit(model) for f in families}

        def removed(ratio: float) -> int:
            return sum(len(choose(f, torch.zeros(f.units), ratio, model)) * per_unit[f] for f in families)

        config = config.model_copy(
            update={"ratio": share_for_params(model, config.params, removed, name=name)}
        )
    examples = calib[: config.num_examples, : config.example_len]
    scores = group_importance(model, families, config.importance, tokens=examples, reduce=config.reduce,
                              chunk=ctx.batch_size or config.num_examples, seed=config.seed)  # fmt: skip
    removals = {f: choose(f, scores[f], config.ratio, model) for f in families}
    before = sum(p.numel() for p in model.parameters())
    expected = G.analytic_params_removed(model, removals)
    heads = {
        str(f.layer): units for f, units in removals.items() if f.kind in ("kv-head", "q-head") and units
    }
    channels = {str(f.layer): len(units) for f, units in removals.items() if f.kind == "mlp" and units}
    shapes = G.compact(model, removals)
    after = sum(p.numel() for p in model.parameters())
    if before - after != expected:
        raise KBError(f"{name}: removed {before - after} parameters, the groups hold {expected}")
    details: dict[str, object] = {
        "pruned_layers": layers, "importance": config.importance, f"removed_{config.attention}s": heads,
        "removed_mlp_channels": channels,
        "params_before": before, "params_after": after, "params_removed_fraction": round(1 - after / before, 4),
    }  # fmt: skip
    if config.params is not None:
        details["ratio"] = config.ratio  # derived from the target
    if ctx.progress is not None:
        ctx.progress(1, 1)
    if config.recovery_steps > 0:
        ctx.log(f"{name}: LoRA recovery, {config.recovery_steps} steps of {config.recovery_batch} windows")
        report = lora_steps(
            model, calib, Budget(config.recovery_steps, config.recovery_batch), lr=config.lora_lr,
            rank=config.lora_rank, alpha=config.lora_alpha, dropout=config.lora_dropout, seed=ctx.seed,
            progress=ctx.progress,
        )  # fmt: skip
        details["recovery"] = report.summary()
    return Outcome(kind="width", shapes=shapes, details=details)
