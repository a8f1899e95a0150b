"""KV-cache eviction: cache policies, the attention function that enforces them, and their two modes.

A `CachePolicy` decides, in every decoder layer and for every KV head, which keys and values stay in the cache
while a model reads a prompt and then generates. It has two parts:
- a `Budget`: how many entries the cache holds after each step, as a fraction of the prompt length or as a
  count, split into a *recent* window (the newest positions, never evicted) and a *scored* part (the best-ranked
  older positions);
- a `Scorer`: how the older positions are ranked. At every forward call it sees the layer's attention logits and
  probabilities for the new query rows over the keys the cache holds (`AttentionView`) and returns updated scores.
  No scorer: a plain recent window. Earliest position first: StreamingLLM's attention sinks. Accumulated
  attention: H2O. Accumulated Gumbel-softmax: Keyformer.

Where a policy lives: nowhere on the model. A kv-cache method module exposes `policy(config) -> CachePolicy`;
its `prune` changes no weight and returns `policy_outcome(policy)` (the policy's description). The harness takes
the policy object from the module (`contract.cache_policy`, checked against that description) and passes it as
an argument to everything that runs it: `simulate_logits`, `evicting`, `cacheeval.evaluate_cache` and
`metrics.measure` (None: the full cache).

Step semantics (those of both papers' real-eviction code): the prompt is read with full causal attention, its
rows update the scores, and the cache is cut to the budget B. Each decoding step writes the new token, attends
over the cache plus that token (at most B + 1 keys), updates the scores and evicts back to B: keep the R newest
positions and the B - R best-scored others (ties: the earlier position). So between steps the cache never holds
more than B entries per layer and KV head, and the newest token is always kept (R >= 1).
Two options of a policy, both off by default: `prompt_only` cuts the cache once after the prompt and then keeps
every generated token (SnapKV, PyramidKV: the cache grows by one entry per step, scores are not updated), and
`layer_splits` gives each layer its own split of the budget (PyramidKV's pyramid).

GQA: one KV head serves `g` query heads, so scores live per KV head: a scorer's per-query-head contributions are
summed over the g query heads of the group (and over the new rows), the natural reading of the papers' per-head
score when heads share entries; evicting per query head would need g copies of each entry.

Two modes share the scorer and the selection (`keep_mask`):
- `simulate` (teacher forcing, no cache): one forward over prompt + continuation; in every layer the prompt rows
  are causal, then each continuation row t attends only to the positions the policy would still hold at step t,
  one row after the other. This is the continuation NLL real eviction would give, at the cost of one forward.
- `evict` (a real cache): inside `evicting(...)`, the attention function cuts each layer of a transformers
  `DynamicCache` after every forward call, for `generate` or a hand-written loop (`decode`).
Both modes keep the same positions and give the same logits up to float rounding (tests check it). With no policy
the same function computes plain causal attention (the full-cache baseline, timed the same way).

After eviction the cache is shorter than the sequence, so callers pass `position_ids` (`generate` does, and so
does `decode`); cached keys keep the rotary position they were written with, unless the policy sets
`positions="cache"` (StreamingLLM: keys and queries re-rotated to their slot in the cache, in both modes; see
`cache_positions`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from . import cache_positions
from .kvcache import cache_kwarg, output_cache
from .layerwise import decoder_layers, input_embedding, model_config

ATTENTION = "kb_kv_policy"  # the name our attention function is registered under
_RUNTIME_ATTR = "_kb_kv_runtime"  # per attention module, while a mode is active


# ---- budget ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    total: int  # entries kept per layer and KV head between steps
    recent: int  # of which the newest positions
    scored: int  # of which the best-scored older positions


@dataclass(frozen=True)
class Budget:
    """Cache size: `fraction` of the prompt length or a count of `tokens`; the recent window is `recent` (a share
    of the budget) unless `scored_tokens` fixes the scored part (e.g. 4 attention sinks) or `recent_tokens` fixes
    the recent window (e.g. SnapKV's observation window)."""

    fraction: float | None = None
    tokens: int | None = None
    recent: float = 1.0
    scored_tokens: int | None = None
    recent_tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.tokens is None):
            raise KBError("a KV budget is either a fraction of the prompt or a number of tokens")
        if self.fraction is not None and not (self.fraction > 0 and math.isfinite(self.fraction)):
            raise KBError(f"KV budget fraction must be positive, got {self.fraction}")
        if self.tokens is not None and self.tokens < 1:
            raise KBError(f"KV budget must be at least 1 token, got {self.tokens}")
        if not 0.0 <= self.recent <= 1.0:
            raise KBError(f"recent share of the KV budget must be in [0, 1], got {self.recent}")
        if self.scored_tokens is not None and self.scored_tokens < 0:
            raise KBError(f"scored part of the KV budget must be >= 0, got {self.scored_tokens}")
        if self.recent_tokens is not None and (self.recent_tokens < 1 or self.scored_tokens is not None):
            raise KBError(f"recent window of the KV budget must be >= 1 token and not set with scored_tokens, "
                          f"got {self.recent_tokens}")  # fmt: skip

    def resolve(self, prompt_tokens: int) -> Split:
        if self.tokens is not None:
            total = self.tokens
        else:
            assert self.fraction is not None  # __post_init__: exactly one of the two is set
            total = max(1, int(self.fraction * prompt_tokens + 0.5))
        if self.scored_tokens is not None:
            scored = min(self.scored_tokens, total - 1)
        elif self.recent_tokens is not None:
            scored = total - min(total, self.recent_tokens)
        else:
            scored = total - min(total, max(1, int(self.recent * total + 0.5)))
        return Split(total=total, recent=total - scored, scored=scored)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = (
            {"fraction_of_prompt": self.fraction} if self.fraction is not None else {"tokens": self.tokens}
        )
        if self.scored_tokens is not None:
            out["scored_tokens"] = self.scored_tokens
        elif self.recent_tokens is not None:
            out["recent_tokens"] = self.recent_tokens
        else:
            out["recent_share"] = self.recent
        return out


# ---- scorer interface --------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionView:
    """What a scorer sees of one forward call in one layer: the new query rows over the keys it may attend to."""

    logits: torch.Tensor  # (b, Hq, q, k) scaled q.k, -inf where the key is not visible (future or evicted)
    probs: torch.Tensor  # (b, Hq, q, k) softmax of `logits`, float32
    key_positions: torch.Tensor  # (b, Hkv, k) absolute position of every key
    query_positions: torch.Tensor  # (q,) absolute positions of the new rows
    groups: int  # query heads per KV head
    layer: int
    step: int  # 0: the prompt; i: the i-th decoding step
    decode_steps: int | None  # decoding steps planned (for schedules), if known
    stream: int  # which sequence of an evaluation (seeds noise)


class Scorer(Protocol):
    name: str

    def update(self, previous: torch.Tensor, view: AttentionView) -> torch.Tensor:
        """New scores (b, Hkv, k) from the scores the keys had before this call (0 for new keys)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def per_kv_head(values: torch.Tensor, groups: int) -> torch.Tensor:
    """(b, Hq, q, k) -> (b, Hkv, k): sum over the new rows and over the query heads sharing a KV head."""
    b, hq, _q, k = values.shape
    return values.sum(dim=2).reshape(b, hq // groups, groups, k).sum(dim=2)


class LayerSplits(Protocol):
    """Per-layer cache sizes (e.g. PyramidKV's pyramid): the split of `layer` (of `layers`) from `uniform`, the
    split every layer would get for a prompt of `prompt_tokens` tokens."""

    def split(self, uniform: Split, prompt_tokens: int, layer: int, layers: int) -> Split: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CachePolicy:
    name: str
    budget: Budget
    scorer: Scorer | None = None  # None: no scored part (a plain recent window)
    prompt_only: bool = False  # True: cut once after the prompt, then keep every generated token (SnapKV)
    layer_splits: LayerSplits | None = None  # None: every layer gets the budget's split
    positions: str = "original"  # rotary positions of kept keys: "original" or "cache" (StreamingLLM)

    def __post_init__(self) -> None:
        if self.positions not in cache_positions.MODES:
            modes = ", ".join(cache_positions.MODES)
            raise KBError(f"cache positions are one of {modes}, got {self.positions!r}")

    def split(self, prompt_tokens: int, layer: int = 0, layers: int = 1) -> Split:
        split = self.budget.resolve(prompt_tokens)
        if self.layer_splits is not None:
            split = self.layer_splits.split(split, prompt_tokens, layer, layers)
        if split.scored and self.scorer is None:
            raise KBError(
                f"cache policy {self.name} has a scored part of {split.scored} tokens but no scorer"
            )
        return split

    def describe(self) -> dict[str, Any]:
        out = {
            "name": self.name, "budget": self.budget.describe(),
            "scorer": self.scorer.describe() if self.scorer is not None else None,
            "gqa": "scores summed over the query heads of each KV head; eviction per KV head",
            "steps": "prompt with full attention, then cut to the budget; each decoding step attends over the cache "
                     "plus the new token and evicts back to the budget",
        }  # fmt: skip
        if self.prompt_only:
            out["steps"] = ("prompt with full attention, then cut to the budget once; decoding steps keep every "
                            "new token (no eviction)")  # fmt: skip
        if self.layer_splits is not None:
            out["layer_splits"] = self.layer_splits.describe()
        if self.positions != "original":
            out["positions"] = cache_positions.DESCRIPTION
        return out


def policy_outcome(policy: CachePolicy) -> Outcome:
    """The outcome a kv-cache method's `prune` returns: no weight changes, and `cache_policy` describes `policy`.

    The policy object itself does not travel on the model or the outcome: the method module builds it with its
    `policy(config)` function, the harness takes it from there (`contract.cache_policy`, which checks that the
    outcome describes that very policy) and passes it to the cache evaluation as an argument."""
    return Outcome(kind="kv-cache", cache_policy=policy.describe())


# ---- the selection (shared by both modes) -------------------------------------------------------
def keep_mask(
    scores: torch.Tensor, positions: torch.Tensor, held: torch.Tensor, newest: int, split: Split
) -> torch.Tensor:
    """Which held entries stay: all when they fit, else the `split.recent` newest positions and the
    `split.scored` best-scored others (stable sort over keys in position order: ties keep the earlier one).
    All tensors (b, Hkv, k); keys must be in increasing position order along the last axis."""
    if int(held.sum(dim=-1).max()) <= split.total:
        return held
    recent = held & (positions > newest - split.recent)
    keep = recent
    if split.scored > 0:
        candidates = held & ~recent
        ranked = scores.float().masked_fill(~candidates, -math.inf)
        order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., : split.scored]
        picked = torch.zeros_like(held).scatter(-1, order, True) & candidates
        keep = keep | picked
    return keep


# ---- runtime: what the attention function consults ----------------------------------------------
@dataclass
class _LayerState:
    positions: torch.Tensor | None = None  # (b, Hkv, n) positions held by the real cache
    scores: torch.Tensor | None = None  # (b, Hkv, n)
    seen: int = 0  # tokens written so far
    calls: int = 0
    split: Split | None = None


@dataclass
class Runtime:
    """State of one active mode: the policy (None = full cache), per-layer state, and an optional trace."""

    policy: CachePolicy | None
    mode: str  # "simulate" | "evict"
    prompt_tokens: int | None = None  # simulate: where the continuation starts
    decode_steps: int | None = None
    stream: int = 0
    record: bool = False
    cache: Any = None  # evict: the transformers cache being cut
    num_layers: int = 1  # decoder layers of the model (set when a mode starts; for per-layer budgets)
    layers: dict[int, _LayerState] = field(default_factory=dict)
    trace: dict[int, list[torch.Tensor]] = field(
        default_factory=dict
    )  # layer -> kept positions after each step
    final_scores: dict[int, torch.Tensor] = field(
        default_factory=dict
    )  # layer -> scores over positions (simulate)

    def _note(self, layer: int, kept_positions: torch.Tensor) -> None:
        if self.record:
            self.trace.setdefault(layer, []).append(kept_positions.clone())

    def new_cache(self, model: nn.Module) -> Any:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=model.config)
        self.layers.clear()
        self.trace.clear()
        return self.cache

    def cache_lengths(self) -> list[int]:
        return [
            int(layer.keys.shape[-2]) for layer in getattr(self.cache, "layers", ()) if layer.keys is not None
        ]


def _causal(q: int, k: int, device: torch.device) -> torch.Tensor:
    """(q, k) bool: query i (the i-th of the q newest tokens) sees key j iff j <= k - q + i."""
    rows = torch.arange(q, device=device).unsqueeze(1) + (k - q)
    return torch.arange(k, device=device).unsqueeze(0) <= rows


def _expand_kv(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """(b, Hkv, ...) -> (b, Hq, ...): every query head reads its KV head's entries."""
    return mask.repeat_interleave(groups, dim=1)


def _repeat(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _policy_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    runtime: Runtime | None = getattr(module, _RUNTIME_ATTR, None)
    if runtime is None:
        raise KBError("the KV-policy attention was called outside `simulate`/`evicting`")
    attn: Any = module  # transformers' attention module: its bookkeeping attributes are read as Any
    groups: int = attn.num_key_value_groups
    layer = int(attn.layer_idx)
    by_slot = runtime.policy is not None and runtime.policy.positions == "cache"  # see `cache_positions`
    if by_slot and runtime.mode == "evict":
        state = runtime.layers.get(layer)
        logits = cache_positions.cache_logits(module, query, key, scaling, state.positions if state else None,
                                              state.seen if state else 0)  # fmt: skip
    else:
        logits = torch.matmul(query, _repeat(key, groups).transpose(2, 3)) * scaling
    q, k = query.shape[2], key.shape[2]
    logits = logits.masked_fill(~_causal(q, k, query.device), -math.inf)
    if runtime.mode == "simulate" and runtime.policy is not None:
        rows = cache_positions.simulated_rows(module, query, key, scaling) if by_slot else None
        probs = _simulate_layer(runtime, layer, logits, groups, rows)
    else:
        probs = torch.softmax(logits.float(), dim=-1)
    out = torch.matmul(probs.to(value.dtype), _repeat(value, groups)).transpose(1, 2).contiguous()
    if runtime.mode == "evict" and runtime.policy is not None:
        _evict_layer(runtime, layer, logits, probs, key, groups)
    return out, None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _policy_attention)


def _view(
    runtime: Runtime,
    layer: int,
    logits: torch.Tensor,
    probs: torch.Tensor,
    key_positions: torch.Tensor,
    query_positions: torch.Tensor,
    groups: int,
    step: int,
) -> AttentionView:
    return AttentionView(logits=logits, probs=probs, key_positions=key_positions, query_positions=query_positions,
                         groups=groups, layer=layer, step=step, decode_steps=runtime.decode_steps,
                         stream=runtime.stream)  # fmt: skip


def _simulate_layer(
    runtime: Runtime, layer: int, logits: torch.Tensor, groups: int, rows: Any = None
) -> torch.Tensor:
    """Teacher forcing under the policy: causal prompt rows, then one continuation row at a time over the
    positions the policy holds; returns the (b, Hq, T, T) probabilities the layer attends with."""
    policy = runtime.policy
    assert policy is not None and runtime.prompt_tokens is not None
    b, hq, t_len, _ = logits.shape
    prompt = runtime.prompt_tokens
    split = policy.split(prompt, layer, runtime.num_layers)
    device = logits.device
    positions = torch.arange(t_len, device=device).expand(b, hq // groups, t_len)
    probs = torch.softmax(logits.float(), dim=-1)  # prompt rows are final as they are
    scores = torch.zeros(b, hq // groups, t_len, device=device)
    held = positions < prompt
    if policy.scorer is not None:
        view = _view(runtime, layer, logits[:, :, :prompt], probs[:, :, :prompt], positions,
                     torch.arange(prompt, device=device), groups, 0)  # fmt: skip
        scores = policy.scorer.update(scores, view)
    held = keep_mask(scores, positions, held, prompt - 1, split)
    runtime._note(layer, _held_positions(held, positions))
    for t in range(prompt, t_len):
        held = held | (positions == t)
        row = logits[:, :, t : t + 1] if rows is None else rows(held, t)  # rows: positions inside the cache
        row = row.masked_fill(~_expand_kv(held, groups).unsqueeze(2), -math.inf)
        row_probs = torch.softmax(row.float(), dim=-1)
        probs[:, :, t : t + 1] = row_probs
        if policy.scorer is not None and not policy.prompt_only:
            view = _view(runtime, layer, row, row_probs, positions, torch.tensor([t], device=device), groups,
                         t - prompt + 1)  # fmt: skip
            scores = policy.scorer.update(scores.masked_fill(~held, 0.0), view)
        if not policy.prompt_only:
            held = keep_mask(scores, positions, held, t, split)
        runtime._note(layer, _held_positions(held, positions))
    if runtime.record:
        runtime.final_scores[layer] = scores.masked_fill(~held, 0.0)
    return probs


def _held_positions(held: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(b, Hkv, T) mask -> (b, Hkv, n) sorted positions (every head holds the same count)."""
    n = int(held[0, 0].sum())
    idx = torch.argsort((~held).to(torch.int8), dim=-1, stable=True)[..., :n]
    return positions.gather(-1, idx)


def _evict_layer(
    runtime: Runtime, layer: int, logits: torch.Tensor, probs: torch.Tensor, key: torch.Tensor, groups: int
) -> None:
    """Update the scores with this call's rows and cut the real cache of `layer` back to the budget."""
    policy = runtime.policy
    assert policy is not None
    cache_layer = (
        runtime.cache.layers[layer]
        if runtime.cache is not None and layer < len(runtime.cache.layers)
        else None
    )
    if cache_layer is None or cache_layer.keys is not key:
        raise KBError(
            "real eviction needs the cache made by `evicting(...).new_cache(model)`; pass it to the model"
        )
    state = runtime.layers.setdefault(layer, _LayerState())
    b, hkv, _k, _d = key.shape
    q = logits.shape[2]
    device = key.device
    if state.split is None:
        state.split = policy.split(q, layer, runtime.num_layers)  # the first call is the prompt
    new = torch.arange(state.seen, state.seen + q, device=device)
    if state.positions is None:
        positions, previous = new.expand(b, hkv, q), torch.zeros(b, hkv, q, device=device)
    else:
        assert state.scores is not None  # set together with `positions`
        positions = torch.cat([state.positions, new.expand(b, hkv, q)], dim=-1)
        previous = torch.cat([state.scores, torch.zeros(b, hkv, q, device=device)], dim=-1)
    scores = previous
    cut = not (policy.prompt_only and state.calls)  # prompt-only: after the prompt, every new token stays
    if policy.scorer is not None and cut:
        scores = policy.scorer.update(
            previous, _view(runtime, layer, logits, probs, positions, new, groups, state.calls)
        )
    keep = torch.ones_like(positions, dtype=torch.bool)
    if cut:
        keep = keep_mask(scores, positions, keep, state.seen + q - 1, state.split)
    if not bool(keep.all()):
        n = int(keep[0, 0].sum())
        idx = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :n]
        gather = idx.unsqueeze(-1).expand(-1, -1, -1, key.shape[-1])
        cache_layer.keys = cache_layer.keys.gather(2, gather)
        cache_layer.values = cache_layer.values.gather(2, gather)
        positions, scores = positions.gather(-1, idx), scores.gather(-1, idx)
    state.positions, state.scores = positions, scores
    state.seen += q
    state.calls += 1
    runtime._note(layer, positions)


# ---- the two modes ---------------------------------------------------------------------------------
@contextmanager
def _active(model: nn.Module, runtime: Runtime) -> Iterator[Runtime]:
    _register()
    lm: Any = model  # a transformers model: set_attn_implementation() is its own
    previous = model_config(model)._attn_implementation
    modules = [layer.self_attn for layer in decoder_layers(model)]
    runtime.num_layers = len(modules)
    lm.set_attn_implementation(ATTENTION)
    for m in modules:
        setattr(m, _RUNTIME_ATTR, runtime)
    try:
        yield runtime
    finally:
        for m in modules:
            if hasattr(m, _RUNTIME_ATTR):
                delattr(m, _RUNTIME_ATTR)
        lm.set_attn_implementation(previous)


def simulate_logits(
    model: nn.Module,
    ids: torch.Tensor,
    policy: CachePolicy | None,
    prompt_tokens: int,
    *,
    stream: int = 0,
    record: bool = False,
) -> tuple[torch.Tensor, Runtime]:
    """Teacher-forced logits (b, T, vocab) of `ids` (b, T) with the cache the policy would keep after a prompt of
    `prompt_tokens` tokens (None: the full cache). Returns the logits and the runtime (trace when `record`)."""
    if not 0 < prompt_tokens < ids.shape[1]:
        raise KBError(
            f"prompt of {prompt_tokens} tokens does not leave a continuation in {ids.shape[1]} tokens"
        )
    runtime = Runtime(policy, "simulate", prompt_tokens=prompt_tokens, decode_steps=ids.shape[1] - prompt_tokens,
                      stream=stream, record=record)  # fmt: skip
    device = input_embedding(model).weight.device
    with _active(model, runtime), torch.inference_mode():
        logits = model(input_ids=ids.to(device), use_cache=False).logits
    return logits, runtime


@contextmanager
def evicting(
    model: nn.Module, policy: CachePolicy | None, *, decode_steps: int | None = None, stream: int = 0,
    record: bool = False,
) -> Iterator[Runtime]:  # fmt: skip
    """Real eviction: inside the block, forward calls with the cache from `runtime.new_cache(model)` (and explicit
    `position_ids`, as `generate` passes them) keep that cache within the policy's budget."""
    runtime = Runtime(policy, "evict", decode_steps=decode_steps, stream=stream, record=record)
    with _active(model, runtime):
        yield runtime


def decode(
    model: nn.Module, runtime: Runtime, prompt: torch.Tensor, steps: int, *, forced: torch.Tensor | None = None,
    on_prefill: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Inside `evicting`: prefill `prompt` (1, P), then `steps` decoding calls of one token each: the previous
    argmax (greedy), or `forced` (1, steps) (teacher forcing). Returns (fed tokens (1, steps), logits
    (1, steps + 1, vocab)): logits[:, 0] from the prefill, logits[:, i + 1] after feeding token i. `on_prefill()`
    runs between the prefill and the first decoding call (e.g. to read the cache size)."""
    device = input_embedding(model).weight.device
    key = cache_kwarg(model)
    cache = runtime.new_cache(model)
    p = prompt.shape[1]
    with torch.inference_mode():
        out = model(input_ids=prompt.to(device), position_ids=torch.arange(p, device=device).unsqueeze(0),
                    use_cache=True, **{key: cache})  # fmt: skip
        if on_prefill is not None:
            on_prefill()
        logits = [out.logits[:, -1]]
        tokens = []
        for i in range(steps):
            token = (
                forced[:, i : i + 1].to(device) if forced is not None else logits[-1].argmax(-1, keepdim=True)
            )
            tokens.append(token)
            out = model(input_ids=token, position_ids=torch.tensor([[p + i]], device=device), use_cache=True,
                        **{key: output_cache(out)})  # fmt: skip
            logits.append(out.logits[:, -1])
    return torch.cat(tokens, dim=1), torch.stack(logits, dim=1)
