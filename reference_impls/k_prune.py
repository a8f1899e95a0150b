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
          window length); (4) calibration: the official code draws 100K tokens (`src/main.py:66`) and uses
          them for both steps; here `score_examples` windows feed the knowledge (one backward pass per
          window and measurement, from that sublayer up) and `recon_examples` windows (160 x 128 = 20,480
          tokens by default, about 13 tokens per unknown of a down_proj row) the least-squares problems
          (forward only); `rescore_every=2` measures the knowledge once per decoder layer (at its attention
          sublayer) and reuses it for the MLP sublayer, halving the backward passes (the official code
          re-measures every sublayer); (5) the official re-solve is the plain problem (`torch.linalg.lstsq`
          on the normal equations, rcond 0, no damping: `src/prune.py:451-455`); on 5x fewer tokens we add
          a ridge `damp` (a share of the Gram's mean diagonal, default 1e-2) that pulls the solution toward
          the sublayer's original weights for the kept channels rather than toward zero, so the re-solve
          never fits the calibration tokens worse than keeping those weights (`damp=0` is the official
          problem); (6) `masks_only=True` is our identical-mask ablation: the masks are searched exactly as
          K-prune searches them (the re-solve runs in the loop, so later scores see re-solved sublayers),
          then the original weights of the kept channels are put back, so the model differs from K-prune's
          only in the values of o_proj and down_proj (equal `mask_digest` in the details); the official
          switch without tuning (`--sublayerwise_tuning` off, masks then follow the untuned model) is
          `reconstruct=False`; (7) `importance="magnitude"` is our retraining-free baseline on the same
          search and budget: a unit's squared weight norm per FLOP.
Use:      `kb prune k-prune --model tiny-llama --save DIR`; load with
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
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
    masks_only: bool = False  # with reconstruct: K-prune's masks, then its original weights put back
    lam_pred: float = Field(1.0, ge=0)
    lam_rep: float = Field(2.5e-4, ge=0)
    mu: float = Field(64.0, gt=0)  # weight of attention units
    temperature: float = Field(2.0, gt=0)
    score_examples: int = Field(2, ge=1)  # windows for the knowledge (a backward pass each, per measurement)
    rescore_every: int = Field(1, ge=1)  # sublayers between knowledge measurements (upstream: every sublayer)
    recon_examples: int = Field(160, ge=1)  # windows for the least-squares re-solve (160 x 128 = 20,480)
    example_len: int = Field(128, ge=2)
    damp: float = Field(1e-2, ge=0)  # ridge toward the original weights, a share of the Gram's mean diagonal
    params: float | None = None  # the `params` target: share of decoder params removed (a params budget)

    @model_validator(mode="after")
    def _ablation_needs_the_resolve(self) -> Config:
        if self.masks_only and not self.reconstruct:
            raise ValueError("masks_only=True replays K-prune's search, re-solve included: needs reconstruct")
        return self


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


class _Reached(Exception):
    """Raised by a hook to stop a sublayer at its output projection (what follows is not needed)."""


def sublayer_features(
    model: nn.Module, sub: Sublayer, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """(batch, seq, in_features) the input of the sublayer's output projection (o_proj / down_proj) when it
    runs on `hidden`; the sublayer stops there."""
    feats: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
        feats.append(args[0].detach())
        raise _Reached

    handle = projection(model, sub).register_forward_pre_hook(grab)
    try:
        run_sublayer(decoder_layers(model)[sub.layer], sub.kind, hidden, kwargs)
    except _Reached:
        pass
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
    score_ids = calib[: config.score_examples, :seq]  # (score windows, seq)
    recon_ids = calib[: config.recon_examples, :seq] if config.reconstruct else calib[:0, :seq]
    if config.reconstruct and recon_ids.shape[0] < config.recon_examples:
        ctx.log(f"k-prune: the re-solve asked for {config.recon_examples} windows, the calibration set holds "
                f"{recon_ids.shape[0]}: it fits on {recon_ids.numel()} tokens (--nsamples sets more)")  # fmt: skip
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
        recon = capture_layer_inputs(model, recon_ids, recon_ids.shape[0])[0] if config.reconstruct else None
    resolve = Resolve(recon.hidden, recon.hidden.clone(), recon.kwargs) if recon is not None else None
    kept_units: dict[str, list[int]] = {"attn": [], "mlp": []}
    kept_index: list[list[int]] = []  # per sublayer, its kept units in dense numbering (for the digest)
    originals: dict[Sublayer, torch.Tensor] = {}  # masks_only: the original weights of the kept channels
    widest = 0  # most unknowns per row of any re-solve (kept input channels)
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
        kept_index.append([u for u in range(family.units) if bool(keep[u])])
        # (3) compact the sublayer and (with reconstruct) re-solve its output projection
        with torch.no_grad():
            if resolve is not None:
                original = _reconstruct(model, sub, family, removed, resolve, config.damp)
                widest = max(widest, original.shape[1])
                if config.masks_only:
                    originals[sub] = original
            elif removed:
                G.compact(model, {family: removed})
            score_states = [LayerInputs(run_sublayer(layer, sub.kind, w.hidden, w.kwargs), w.kwargs)
                            for w in score_states]  # fmt: skip
        kept = family.units - len(removed)
        allowed -= kept * cost[sub]
        kept_units[sub.kind].append(kept)
        if ctx.progress is not None:
            ctx.progress(index + 1, len(subs))
    # the identical-mask ablation: the same compacted model, the re-solved values replaced by the original ones
    with torch.no_grad():
        for sub, original in originals.items():
            projection(model, sub).weight.copy_(original)
    after = sum(p.numel() for p in model.parameters())
    kept_flops = sum(n * flops[Sublayer(i, k)] for k in ("attn", "mlp") for i, n in enumerate(kept_units[k]))
    shapes = {n: list(p.shape) for n, p in model.named_parameters() if n.startswith("model.layers.")}
    resolve_tokens = int(recon_ids.numel())
    details: dict[str, object] = {
        "importance": config.importance, "reconstruct": config.reconstruct, "masks_only": config.masks_only,
        "weights_resolved": config.reconstruct and not config.masks_only,
        "kv_groups_per_layer": kept_units["attn"], "mlp_channels_per_layer": kept_units["mlp"],
        "mask_digest": mask_digest(subs, kept_index),
        "prunable_flops_per_token_before": int(total), "prunable_flops_per_token_after": int(kept_flops),
        "prunable_flops_removed_fraction": round(1 - kept_flops / total, 4),
        "score_tokens": int(score_ids.numel()), "reconstruction_tokens": resolve_tokens,
        "reconstruction_damp": config.damp, "reconstruction_ridge_toward": "original kept weights",
        "reconstruction_tokens_per_unknown": round(resolve_tokens / widest, 1) if widest else None,
        "params_before": before, "params_after": after, "params_removed_fraction": round(1 - after / before, 4),
    }  # fmt: skip
    return Outcome(kind="width", shapes=shapes, details=details)


def mask_digest(subs: Sequence[Sublayer], kept: Sequence[Sequence[int]]) -> str:
    """A short fingerprint of every sublayer's kept units (dense numbering): equal digests = identical masks."""
    text = ";".join(f"{s.layer}.{s.kind}:{','.join(map(str, k))}" for s, k in zip(subs, kept, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Resolve:
    """The re-solve windows at the sublayer being processed: the pruned model's residual stream, the dense
    model's, both (windows, seq, hidden), and the decoder layers' keyword arguments for these windows."""

    current: torch.Tensor
    dense: torch.Tensor
    kwargs: dict[str, Any]


def _reconstruct(model: nn.Module, sub: Sublayer, family: G.Family, removed: Sequence[int], state: Resolve,
                 damp: float) -> torch.Tensor:  # fmt: skip
    """Remove the sublayer's dropped units and re-solve its output projection so that the residual stream after
    it matches the dense model's on the re-solve windows (a ridge `damp` toward the original weights of the
    kept channels); moves `state` past the sublayer. Returns those original weights (out, kept channels)."""
    layer = decoder_layers(model)[sub.layer]
    current, kwargs = state.current, state.kwargs
    dense_next = run_sublayer(
        layer, sub.kind, state.dense, kwargs
    )  # while the sublayer still has all its units
    if removed:
        G.compact(model, {family: list(removed)})
    proj = projection(model, sub)
    original = proj.weight.detach().clone()  # (out, kept channels): the no-re-solve weights
    # the kept units' inputs to the projection do not depend on the removed ones: compute them on the
    # compacted sublayer, (windows, seq, kept channels)
    feats = sublayer_features(model, sub, current, kwargs)
    target = dense_next - current  # what the sublayer must add, (windows, seq, hidden)
    if proj.bias is not None:
        target = target - proj.bias
    proj.weight.copy_(least_squares_weight(feats, target, damp, prior=original).to(proj.weight.dtype))
    state.current, state.dense = current + proj(feats), dense_next
    return original
