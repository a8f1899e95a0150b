"""K-prune: retraining-free structured pruning that measures knowledge, searches masks under a FLOPs budget and
re-solves each pruned sublayer's output projection by least squares, sublayer by sublayer from the bottom.

Paper:    Park, Choi, Kang. "Accurate Retraining-free Pruning for Pretrained Encoder-based Language Models".
          ICLR 2024, arXiv:2308.03449. Record id: `k-prune`.
Official: snudm-starlab/K-prune, `src/prune.py` (`kprune`, `compute_scores`, `find_mask`,
          `knowledge_reconstruction`); defaults lambda_pred 1, lambda_rep 2.5e-4, mu 64, temperature 2.
Idea:     the sublayers (attention, MLP, attention, ...) are processed bottom-up, each once:
          (1) knowledge of every unit still present in this and every later sublayer: *predictive* knowledge
          1/2 (dKL/dm)^2, the squared gradient of the KL divergence from the dense model's output distribution
          (temperature T) to the current model's with respect to a unit's mask (per sample, averaged; zero on
          the untouched dense model, so the first sublayer is scored by representational knowledge alone),
          and *representational* knowledge sum_t x_u^2 * mean_k W_out[k, u]^2, the energy the unit adds to the
          sublayer output; per head both are averaged over the head's channels; the score is
          (lambda_rep * rep + lambda_pred * pred) / FLOPs(unit), times mu for heads;
          (2) mask search: all scores of this and the later sublayers are sorted together and the lowest
          are dropped until the kept units fit the FLOPs still allowed, but only this sublayer's mask is
          applied; (3) weight tuning: this sublayer's output projection is re-solved by least squares so that
          the pruned model's residual stream after the sublayer matches the dense model's
          (`primitives.reconstruct`); then the FLOPs allowed for the rest shrink by what this sublayer keeps.
Differs (an ADAPTATION: the paper prunes BERT-style encoders on classification and SQuAD):
          (1) decoder LLM: the KL is taken over next-token distributions at every position; units are whole
          KV groups (SmolLM2: 3 query heads + 1 KV head) and MLP channels; o_proj and down_proj are re-solved;
          (2) every sublayer keeps at least one unit (the official code may empty a sublayer); (3) FLOPs per
          unit are counted from the shapes (`primitives.flops`: projections plus causal attention at the
          window length); (4) a few calibration windows replace the 100K-token sample: `score_examples` for the
          knowledge (one backward pass per window and sublayer, from that sublayer up) and `recon_examples`
          for the least-squares problems (forward only), with a small ridge `damp` for numerical safety;
          `rescore_every=2` measures the knowledge once per decoder layer (at its attention sublayer) and reuses
          it for the MLP sublayer, halving the backward passes (the official code re-measures every sublayer);
          (5) `importance="magnitude"` is our retraining-free baseline on the same search and budget: a unit's
          squared weight norm per FLOP.
Use:      `kb prune k-prune --model tiny-llama --save DIR`; load with
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import PARAMS_TOLERANCE, Context
from .harness.layerwise import LayerInputs, capture_layer_inputs, decoder_layers, run_layer
from .harness.recovery import kl_to_teacher
from .primitives import groups as G
from .primitives.flops import unit_flops
from .primitives.importance import group_importance
from .primitives.reconstruct import least_squares_weight
from .primitives.sizing import decoder_params

Kind = Literal["attn", "mlp"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flops_reduction: float = Field(0.25, gt=0.0, lt=1.0)  # share of the prunable FLOPs removed
    importance: Literal["knowledge", "magnitude"] = "knowledge"
    reconstruct: bool = True  # knowledge-preserving weight tuning (least squares on o_proj / down_proj)
    lam_pred: float = Field(1.0, ge=0)
    lam_rep: float = Field(2.5e-4, ge=0)
    mu: float = Field(64.0, gt=0)  # weight of attention units
    temperature: float = Field(2.0, gt=0)
    score_examples: int = Field(2, ge=1)  # windows for the knowledge (a backward pass each, per measurement)
    rescore_every: int = Field(1, ge=1)  # sublayers between knowledge measurements (upstream: every sublayer)
    recon_examples: int = Field(32, ge=1)  # windows for the least-squares re-solve (forward only)
    example_len: int = Field(128, ge=2)
    damp: float = Field(1e-4, ge=0)
    params: float | None = None  # the `params` target: share of decoder params removed (a params budget)


# ---- pure helpers ---------------------------------------------------------------------------------
def unit_values(channel_values: torch.Tensor, units: int, head_dim: int | None) -> torch.Tensor:
    """Channel values -> one value per unit: an MLP channel is one channel; a KV group sums its query heads,
    each the mean over its head_dim channels (as upstream averages a head's channels)."""
    if head_dim is None:
        return channel_values.reshape(units)
    return channel_values.reshape(units, -1, head_dim).mean(-1).sum(-1)


def knowledge_score(pred: torch.Tensor, rep: torch.Tensor, flops: float, lam_pred: float, lam_rep: float,
                    weight: float = 1.0) -> torch.Tensor:  # fmt: skip
    """weight * (lam_rep * rep + lam_pred * pred) / FLOPs of one unit."""
    return weight * (lam_rep * rep + lam_pred * pred) / flops


def mask_search(scores: Sequence[torch.Tensor], flops: Sequence[float], budget: float) -> list[torch.Tensor]:
    """Keep masks for several sublayers: drop the lowest scores (over all of them together) until the kept
    units' FLOPs fit `budget`; the best unit of every sublayer always stays."""
    sizes = [s.numel() for s in scores]
    flat = torch.cat([s.detach().double().reshape(-1) for s in scores])
    cost = torch.cat(
        [torch.full((n,), float(f), dtype=torch.float64) for n, f in zip(sizes, flops, strict=True)]
    )
    protected = flat.clone()
    start = 0
    for n in sizes:  # never empty a sublayer
        protected[start + int(torch.argmax(flat[start : start + n]))] = float("inf")
        start += n
    order = torch.sort(protected, stable=True).indices
    total = float(cost.sum())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if total > budget:
        removed = torch.cumsum(cost[order], 0)
        need = (
            int(torch.searchsorted(removed, torch.tensor([total - budget], dtype=torch.float64)).item()) + 1
        )
        need = min(need, int(torch.isfinite(protected).sum()))
        keep[order[:need]] = False
    return list(keep.split(sizes))


# ---- sublayers run one at a time --------------------------------------------------------------------
@dataclass(frozen=True)
class Sublayer:
    layer: int
    kind: Kind


def sublayers(n: int) -> list[Sublayer]:
    return [Sublayer(i, k) for i in range(n) for k in ("attn", "mlp")]


def run_sublayer(layer: nn.Module, kind: Kind, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """The residual stream after one sublayer of a LLaMA decoder layer (pre-norm: h + f(norm(h)))."""
    block: Any = layer  # transformers' decoder layer: its sublayers are read as Any
    update: torch.Tensor
    if kind == "attn":
        out = block.self_attn(hidden_states=block.input_layernorm(hidden), **kwargs)
        update = out[0] if isinstance(out, tuple) else out
        return hidden + update
    update = block.mlp(block.post_attention_layernorm(hidden))
    return hidden + update


def run_from(model: nn.Module, start: Sublayer, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Logits of the model from the input of sublayer `start` to the end."""
    layers = decoder_layers(model)
    first = start.layer
    if start.kind == "mlp":
        hidden = run_sublayer(layers[first], "mlp", hidden, kwargs)
        first += 1
    for layer in list(layers)[first:]:
        hidden = run_layer(layer, LayerInputs(hidden, kwargs))
    lm: Any = model  # a transformers model: its final norm and LM head are read as Any
    logits: torch.Tensor = lm.lm_head(lm.model.norm(hidden))
    return logits


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = {id(p): p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])


def projection(model: nn.Module, sub: Sublayer) -> nn.Linear:
    layer: Any = decoder_layers(model)[sub.layer]  # transformers' decoder layer: its parts are read as Any
    proj: nn.Linear = layer.self_attn.o_proj if sub.kind == "attn" else layer.mlp.down_proj
    return proj


def family_of(model: nn.Module, sub: Sublayer) -> G.Family:
    return G.kv_head_family(model, sub.layer) if sub.kind == "attn" else G.mlp_family(model, sub.layer)


def sublayer_features(
    model: nn.Module, sub: Sublayer, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """The input of the sublayer's output projection (o_proj / down_proj) when it runs on `hidden`."""
    feats: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
        feats.append(args[0].detach())

    handle = projection(model, sub).register_forward_pre_hook(grab)
    try:
        run_sublayer(decoder_layers(model)[sub.layer], sub.kind, hidden, kwargs)
    finally:
        handle.remove()
    return feats[0]


Knowledge = tuple[list[torch.Tensor], list[torch.Tensor], int]


def knowledge(model: nn.Module, start: int, subs: Sequence[Sublayer], windows: Sequence[LayerInputs],
              teacher: Sequence[torch.Tensor], temperature: float) -> Knowledge:  # fmt: skip
    """Per channel of every sublayer from `start` on: summed 1/2 (dKL/dm)^2 over windows and summed x^2 over
    tokens of the output projection's input. Returns (pred per sublayer, x^2 per sublayer, tokens)."""
    later = list(subs[start:])
    masks = [torch.ones(projection(model, s).in_features, requires_grad=True) for s in later]
    pred = [torch.zeros(m.numel()) for m in masks]
    sq = [torch.zeros(m.numel()) for m in masks]
    hooks = []
    for k, s in enumerate(later):

        def pre(_m: nn.Module, args: tuple[Any, ...], k: int = k) -> tuple[Any, ...]:
            x = args[0]
            sq[k] += x.detach().float().reshape(-1, x.shape[-1]).square().sum(0)
            return (x * masks[k].to(x.dtype),)

        hooks.append(projection(model, s).register_forward_pre_hook(pre))
    tokens = 0
    try:
        with _frozen(model), torch.inference_mode(False), torch.enable_grad():
            for window, target in zip(windows, teacher, strict=True):
                logits = run_from(model, later[0], window.hidden, window.kwargs)
                loss = kl_to_teacher(logits, target, temperature)
                grads = torch.autograd.grad(loss, masks)
                for k, g in enumerate(grads):
                    pred[k] += 0.5 * g.float().square()
                tokens += window.hidden.shape[0] * window.hidden.shape[1]
    finally:
        for h in hooks:
            h.remove()
    return pred, sq, tokens


# ---- model driver ---------------------------------------------------------------------------------
def params_budget(
    model: nn.Module, families: dict[Sublayer, G.Family], params: float
) -> tuple[dict[Sublayer, float], float]:
    """The `params` target as the mask search's budget: every unit costs its parameters, and the kept units may
    hold what removing `params` of the decoder's parameters leaves (a one-line error when the search, which keeps
    one unit of every sublayer, cannot get there)."""
    cost = {s: float(f.params_per_unit(model)) for s, f in families.items()}
    total = decoder_params(model)
    most = sum((f.units - 1) * cost[s] for s, f in families.items()) / total
    if params - most > PARAMS_TOLERANCE:
        raise KBError(f"k-prune: --params {params} cannot be met on this model: keeping one unit of every "
                      f"sublayer, it removes at most {most:.3f} of the decoder's parameters")  # fmt: skip
    return cost, sum(f.units * cost[s] for s, f in families.items()) - params * total


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    layers = decoder_layers(model)
    subs = sublayers(len(layers))
    hd = G.head_dim(model)
    seq = min(config.example_len, calib.shape[1])
    score_ids = calib[: config.score_examples, :seq]
    recon_ids = calib[: config.recon_examples, :seq]
    families = {s: family_of(model, s) for s in subs}
    flops = {s: float(unit_flops(model, families[s], seq)) for s in subs}
    total = sum(families[s].units * flops[s] for s in subs)
    allowed = (1.0 - config.flops_reduction) * total
    cost = flops  # what a unit costs against `allowed`
    if config.params is not None:
        cost, allowed = params_budget(model, families, config.params)
    with torch.no_grad():
        teacher = [model(input_ids=w[None], use_cache=False).logits for w in score_ids]
        score_states = capture_layer_inputs(model, score_ids, 1)
        (recon,) = capture_layer_inputs(model, recon_ids, recon_ids.shape[0])
    current, dense = recon.hidden, recon.hidden.clone()
    kept_units: dict[str, list[int]] = {"attn": [], "mlp": []}
    before = sum(p.numel() for p in model.parameters())
    scores: list[torch.Tensor] = []
    for index, sub in enumerate(subs):
        layer = layers[sub.layer]
        # (1) knowledge (or magnitude) of every unit of this and the later sublayers
        later = subs[index:]
        fams = [family_of(model, s) for s in later]
        if config.importance == "knowledge" and index % config.rescore_every:
            scores = scores[1:]  # the last measurement, without the sublayer just pruned
        elif config.importance == "knowledge":
            pred, sq, tokens = knowledge(model, index, subs, score_states, teacher, config.temperature)
            scores = []
            for s, f, p, x in zip(later, fams, pred, sq, strict=True):
                w = projection(model, s).weight.detach().float().square().mean(0)
                head = hd if s.kind == "attn" else None
                rep = unit_values(x * w / tokens, f.units, head)
                pr = unit_values(p / len(score_states), f.units, head)
                scores.append(knowledge_score(pr, rep, flops[s], config.lam_pred, config.lam_rep,
                                              config.mu if s.kind == "attn" else 1.0))  # fmt: skip
        else:
            mags = group_importance(model, fams, "l2")
            scores = [mags[f] / flops[s] for s, f in zip(later, fams, strict=True)]
        # (2) mask search over this and the later sublayers; only this sublayer's mask is applied
        keep = mask_search(scores, [cost[s] for s in later], allowed)[0]
        family = fams[0]
        removed = [u for u in range(family.units) if not bool(keep[u])]
        with torch.no_grad():
            if config.reconstruct:
                current, dense = _reconstruct(
                    model, sub, family, keep, current, dense, recon.kwargs, config.damp
                )
            elif removed:
                G.compact(model, {family: removed})
            score_states = [LayerInputs(run_sublayer(layer, sub.kind, w.hidden, w.kwargs), w.kwargs)
                            for w in score_states]  # fmt: skip
        kept = family.units - len(removed)
        allowed -= kept * cost[sub]
        kept_units[sub.kind].append(kept)
        if ctx.progress is not None:
            ctx.progress(index + 1, len(subs))
    after = sum(p.numel() for p in model.parameters())
    kept_flops = sum(n * flops[Sublayer(i, k)] for k in ("attn", "mlp") for i, n in enumerate(kept_units[k]))
    shapes = {n: list(p.shape) for n, p in model.named_parameters() if n.startswith("model.layers.")}
    details: dict[str, object] = {
        "importance": config.importance, "reconstruct": config.reconstruct,
        "kv_groups_per_layer": kept_units["attn"], "mlp_channels_per_layer": kept_units["mlp"],
        "prunable_flops_per_token_before": int(total), "prunable_flops_per_token_after": int(kept_flops),
        "prunable_flops_removed_fraction": round(1 - kept_flops / total, 4),
        "score_tokens": int(score_ids.numel()), "reconstruction_tokens": int(recon_ids.numel()),
        "params_before": before, "params_after": after, "params_removed_fraction": round(1 - after / before, 4),
    }  # fmt: skip
    return Outcome(kind="width", shapes=shapes, details=details)


Streams = tuple[torch.Tensor, torch.Tensor]


def _reconstruct(model: nn.Module, sub: Sublayer, family: G.Family, keep: torch.Tensor, current: torch.Tensor,
                 dense: torch.Tensor, kwargs: dict[str, Any], damp: float) -> Streams:  # fmt: skip
    """Remove the sublayer's dropped units and re-solve its output projection so that the residual stream after
    it matches the dense model's on the reconstruction windows; returns both streams after the sublayer."""
    layer = decoder_layers(model)[sub.layer]
    dense_next = run_sublayer(layer, sub.kind, dense, kwargs)  # while the sublayer still has all its units
    feats = sublayer_features(model, sub, current, kwargs)
    removed = [u for u in range(family.units) if not bool(keep[u])]
    if removed:
        G.compact(model, {family: removed})
    proj = projection(model, sub)
    kept = feats[..., _kept_channels(family.units, feats.shape[-1] // family.units, keep)]
    target = dense_next - current
    if proj.bias is not None:
        target = target - proj.bias
    proj.weight.copy_(least_squares_weight(kept, target, damp).to(proj.weight.dtype))
    # the kept units' inputs to the projection do not depend on the removed ones, so the new stream is
    # the old one plus the re-solved projection of those inputs (no second pass through the sublayer)
    return current + proj(kept), dense_next


def _kept_channels(units: int, block: int, keep: torch.Tensor) -> torch.Tensor:
    """Input channels of the output projection that belong to kept units, in the compacted order."""
    kept = [u for u in range(units) if bool(keep[u])]
    return torch.tensor([u * block + j for u in kept for j in range(block)], dtype=torch.long)
