"""2SSP: narrow every MLP by neuron activation norms, then drop whole attention sublayers by perplexity.

Paper:    Sandri, Cunegatti, Iacca. "2SSP: A Two-Stage Framework for Structured Pruning of LLMs". SLLM workshop
          at ICLR 2025, arXiv:2501.17771. Record id: `2ssp` (this module is `two_ssp`: a Python module name
          cannot start with a digit; the claim module keeps the record id, `claims/2ssp.py`).
Official: FabrizioSandri/2SSP (`src/pruning.py`: `two_stage_2ssp`; `src/utilities.py`: `get_mlp_hidden_state`,
          `prune_mlp`, `second_stage_attention`; `src/ablations.py`: `one_stage_2ssp`, stage 1 alone).
Idea:     A share `s` of the decoder layers' parameters is removed in two stages. The number of attention
          sublayers to drop is set first (the paper's Eq. 5): N = round(L * s ** ((P_mlp / P_attn) / alpha)),
          P_mlp and P_attn the parameters of one MLP and one attention, alpha = 1.5; the rest of the budget is
          spread evenly over the L MLPs. Stage 1 (width) scores MLP neuron j of every layer by the L2 norm
          over a sequence's tokens of its activation (the input of down_proj), averaged over the calibration
          sequences, and keeps the same number of top neurons in every layer. Stage 2 (depth) then removes
          attention sublayers one at a time, each time the one whose removal gives the lowest calibration
          perplexity on the MLP-pruned model (re-scored after every removal). No weight is updated.
Differs:  (1) calibration windows come from the run's corpus (the paper: 32 C4 sequences of 2048 tokens for
          stage 1 and the first of them for stage 2); (2) dropping an attention also drops its pre-norm (the
          harness's `skip_sublayers`), so the MLP budget subtracts what a skip really frees (the official
          count leaves the norm's few weights in); (3) `attention=0` is the paper's stage-1-only ablation and
          `attention=k` fixes N (its alpha ablation); (4) ties go to the lower layer / neuron index.
Use:      `kb prune 2ssp --model tiny-llama --params 0.25 --save DIR`; load the directory with
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` (skipped attention sublayers
          need the project's modeling file).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.structure import skip_sublayers
from .primitives import groups as G
from .primitives.blocks import removal_losses
from .primitives.importance import input_sq_norms, lowest
from .primitives.selection import progressive


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(0.25, gt=0.0, lt=1.0)  # share of decoder-layer parameters removed (paper: 25-50%)
    params: float | None = None  # the `params` target: when set, it is the rate
    alpha: float = Field(1.5, gt=0.0)  # how the budget is split between the stages (Eq. 5; paper: 1.5)
    attention: int | None = Field(None, ge=0)  # attention sublayers dropped; None: Eq. 5; 0: stage 1 only
    examples: int = Field(32, ge=1)  # windows for the neuron norms (paper: 32; capped by what is given)
    stage2_examples: int = Field(1, ge=1)  # windows the attention search scores on (paper: 1)


# ---- the budget split (pure arithmetic) -------------------------------------------------------------
def attention_count(layers: int, rate: float, mlp_params: int, attn_params: int, alpha: float) -> int:
    """Eq. 5: attention sublayers to drop, round(L * rate ** ((P_mlp / P_attn) / alpha)) (Python's rounding,
    as upstream)."""
    share = float(rate ** ((mlp_params / attn_params) / alpha))  # the share of attention sublayers dropped
    return round(layers * share)


def mlp_keep(layers: int, rate: float, total: int, freed_per_attention: int, attention: int, mlp_params: int,
             width: int) -> int:  # fmt: skip
    """Neurons every MLP keeps so that `attention` dropped sublayers plus the MLP cuts remove `rate` of the `total`
    decoder-layer parameters; a `KBError` when the attention alone exceeds the budget or everything cannot meet it."""
    target = round(rate * total)
    freed = attention * freed_per_attention
    if freed > target:
        raise KBError(f"2ssp: dropping {attention} attention sublayers removes {freed / total:.3f} of the decoder "
                      f"layers' parameters, more than the {rate} asked; ask for fewer")  # fmt: skip
    if freed + layers * mlp_params < target:
        raise KBError(f"2ssp: {attention} attention sublayers and every MLP neuron cannot remove {rate} of the "
                      "decoder layers' parameters; drop more attention sublayers")  # fmt: skip
    per_mlp = round((target - freed) / layers)  # parameters each MLP gives up
    return round(width * (1 - per_mlp / mlp_params))


# ---- stage 1: neuron norms ----------------------------------------------------------------------------
def neuron_norms(model: nn.Module, families: list[G.Family], tokens: torch.Tensor) -> list[torch.Tensor]:
    """Per MLP family, (width,) scores: for every sequence of `tokens` (n, t) the L2 norm over its t tokens of each
    neuron's activation entering down_proj, averaged over the n sequences."""
    total = [torch.zeros(f.units) for f in families]  # per family (width,)
    for seq in tokens.split(1):  # (1, t): one sequence per pass, the norm is taken within a sequence
        sq = input_sq_norms(model, families, seq)  # per family (width,): sum over the t tokens of x^2
        for i, f in enumerate(families):
            total[i] += sq[f].sqrt().cpu()
    return [t / tokens.shape[0] for t in total]


# ---- model driver (mutates `model` in place) ----------------------------------------------------------
def _numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    rate = config.params if config.params is not None else config.rate
    layers: Any = decoder_layers(model)  # transformers' decoder layers: their parts are read as Any
    n = len(layers)
    total = _numel(layers)
    sizes = {(_numel(layer.self_attn), _numel(layer.mlp), _numel(layer.self_attn, layer.input_layernorm))
             for layer in layers}  # fmt: skip
    if len(sizes) != 1 or min(next(iter(sizes))) == 0:
        raise KBError("2ssp: every layer must have the same attention and MLP sizes (a model not yet width- or "
                      "sublayer-pruned)")  # fmt: skip
    attn_params, mlp_params, freed = next(iter(sizes))  # freed: what one skip removes (attention + pre-norm)
    rule = attention_count(n, rate, mlp_params, attn_params, config.alpha)
    k = rule if config.attention is None else config.attention
    if k > n:
        raise KBError(f"2ssp: cannot drop {k} attention sublayers of a {n}-layer model")
    width = G.mlp_width(model, 0)
    keep = mlp_keep(n, rate, total, freed, k, mlp_params, width)
    if not 0 < keep < width:
        raise KBError(f"2ssp: at rate {rate} every MLP would keep {keep} of {width} neurons: nothing to cut")
    # stage 1: the same neurons scores serve every arm that prunes this dense model with these windows
    families = [G.mlp_family(model, i) for i in range(n)]
    stage1 = calib[: config.examples]
    key = ("2ssp-neuron-norms", calib.data_ptr(), tuple(calib.shape), stage1.shape[0])
    scores = ctx.dense_statistic(key, lambda: neuron_norms(model, families, stage1))
    shapes = G.compact(model, {f: lowest(s, width - keep) for f, s in zip(families, scores, strict=True)})
    ctx.log(f"2ssp: stage 1 keeps {keep} of {width} MLP neurons a layer; stage 2 drops {k} attentions")
    # stage 2: greedy attention removal by calibration loss (the argmin of perplexity), re-scored every step
    ids = calib[: config.stage2_examples]

    def score(remaining: list[int]) -> dict[int, float]:
        losses = removal_losses(model, ids, [("attention", i) for i in remaining], batch_size=ctx.batch_size)
        if ctx.progress is not None:
            ctx.progress(n - len(remaining) + 1, k)
        return dict(zip(remaining, losses, strict=True))

    def drop(i: int) -> None:
        skip_sublayers(model, attention=[i])

    chosen = progressive(list(range(n)), score, lambda _i: 1, k, drop)
    after = _numel(decoder_layers(model))
    details: dict[str, object] = {
        "rate": rate, "alpha": config.alpha, "attention_rule": rule, "attention_dropped": k,
        "mlp_width": [width, keep], "order": chosen.removed,
        "first_round_loss": {str(i): round(v, 6) for i, v in (chosen.rounds or [{}])[0].items() if math.isfinite(v)},
        "stage1_windows": list(stage1.shape), "stage2_windows": list(ids.shape),
        "params_before": total, "params_after": after, "params_removed_fraction": round(1 - after / total, 6),
    }  # fmt: skip
    subs = [f"{i}.attn" for i in sorted(chosen.removed)]
    return Outcome(kind="width", shapes=shapes, removed_sublayers=subs, details=details)
