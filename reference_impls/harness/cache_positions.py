"""Positions inside the cache (StreamingLLM): rotary keys and queries re-rotated to their slot in the cache.

With `CachePolicy(positions="original")` (the default) a cached key keeps the rotary position it was written
with, so after eviction the distance between a query and a kept key is their distance in the text. With
`positions="cache"`, as StreamingLLM's `pos_shift` attention does, positions are assigned inside the cache at
every forward call: the j-th entry the cache holds (in text order) sits at position j, and the new query rows
sit right after the entries before them. After the first tokens (the sinks) and a window, the sinks therefore
look like the tokens just before the window, and no query-key distance exceeds the cache size.

How. The attention function receives queries and keys already turned by RoPE to their positions in the text p.
RoPE turns every channel pair (i, i + f) by the angle position x inv_freq[i], and rotations of one pair
compose, so turning a vector written at p further by (slot - p) gives exactly the vector RoPE would write at
`slot` (up to float rounding). The official code keeps the keys un-rotated in the cache and rotates all of them
by their slot at each step; turning the rotated keys by the difference is the same map, and it lets the real
cache of `eviction.evicting` and the teacher-forced mask of `eviction.simulate_logits` share one function
(`slot_logits`). Partial rotary (only the first 2f channels turn) is followed; rope types whose frequencies
change with the sequence length are refused.

The frequencies are those of the family's own rotary embedding class (`<Family>RotaryEmbedding(config)`, per
layer type where the family has several, e.g. Gemma 3's local and global layers), built once per attention
module.
"""

from __future__ import annotations

import math
import sys
import weakref
from collections.abc import Callable

import torch
from torch import nn

from kb.errors import KBError

MODES = ("original", "cache")
DESCRIPTION = (
    "positions inside the cache: each kept key is rotated by its slot in the cache (text order) and the query by "
    "its own slot, so no query-key distance exceeds the cache size"
)
_LENGTH_DEPENDENT = ("dynamic", "longrope")  # rope types whose frequencies move with the sequence length
_FREQUENCIES: weakref.WeakKeyDictionary[nn.Module, torch.Tensor] = weakref.WeakKeyDictionary()


def inverse_frequencies(module: nn.Module) -> torch.Tensor:
    """(f,) float32 rotary inverse frequencies of the layer of attention `module`, from its family's rotary
    embedding class built on the module's config."""
    cached = _FREQUENCIES.get(module)
    if cached is not None:
        return cached
    config = getattr(module, "config", None)
    family = sys.modules[type(module).__module__]
    classes = [c for n, c in vars(family).items() if n.endswith("RotaryEmbedding") and isinstance(c, type)]
    if config is None or len(classes) != 1:
        raise KBError(f"cache positions need one rotary embedding in {family.__name__}; found {len(classes)}")
    params = getattr(config, "rope_parameters", None) or {}
    layer_types = getattr(config, "layer_types", None)
    layer_type = layer_types[int(getattr(module, "layer_idx", 0))] if layer_types else None
    own = params.get(layer_type, params) if layer_type is not None else params
    if isinstance(own, dict) and own.get("rope_type") in _LENGTH_DEPENDENT:
        kind = own["rope_type"]
        raise KBError(f"cache positions need fixed rotary frequencies; rope type {kind!r} varies them")
    rotary = classes[0](config)
    freq = getattr(rotary, f"{layer_type}_inv_freq", None) if layer_type is not None else None
    found: torch.Tensor = freq if freq is not None else rotary.inv_freq
    _FREQUENCIES[module] = found.detach().float().clone()
    return _FREQUENCIES[module]


# ---- pure math ------------------------------------------------------------------------------
def rotate(x: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """x (..., n, d) turned `delta` (broadcast to (..., n)) positions further: channel pairs (i, i + f) of the
    first 2f channels rotate by delta x inv_freq[i] (the rotate-half pairing of LLaMA-style RoPE)."""
    f = inv_freq.shape[0]
    angle = delta.unsqueeze(-1).float() * inv_freq.to(x.device)  # (..., n, f)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b, rest = x[..., :f], x[..., f : 2 * f], x[..., 2 * f :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin, rest], dim=-1)


def slot_logits(
    query: torch.Tensor,
    key: torch.Tensor,
    first_query: int,
    key_positions: torch.Tensor,
    inv_freq: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Scaled logits (b, Hq, q, k) with positions inside the cache. `key` (b, Hkv, k, d) holds the cache in text
    order, rotated at `key_positions` (b, Hkv, k); `query` (b, Hq, q, d) holds the q newest tokens (the last q
    keys), rotated at first_query, first_query + 1, ... Key j moves to slot j and query i to slot k - q + i.

    Every query moves by the same offset, and a RoPE logit depends only on the difference of the two rotations,
    so the keys alone turn by their own offset minus the queries' one: the same logits, one rotation fewer."""
    k, q = key.shape[2], query.shape[2]
    query_offset = k - q - first_query
    key = rotate(key, torch.arange(k, device=key.device) - key_positions - query_offset, inv_freq)
    groups = query.shape[1] // key.shape[1]
    return torch.matmul(query, key.repeat_interleave(groups, dim=1).transpose(2, 3)) * scaling


# ---- the two modes of `eviction` ---------------------------------------------------------------------
def cache_logits(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    scaling: float,
    cached: torch.Tensor | None,
    seen: int,
) -> torch.Tensor:
    """Real eviction: logits (b, Hq, q, k) of the q new rows over the whole real cache `key` (b, Hkv, k, d), whose
    first entries hold the text positions `cached` (b, Hkv, k - q) (None before the prompt) and whose last q
    are the new tokens at positions seen .. seen + q - 1."""
    b, hkv, k, _d = key.shape
    q = query.shape[2]
    new = torch.arange(seen, seen + q, device=key.device)
    fresh = new.expand(b, hkv, q)
    positions = fresh if cached is None else torch.cat([cached, fresh], dim=-1)
    if positions.shape[-1] != k:
        raise KBError(f"cache positions: {k} keys in the cache, {positions.shape[-1]} positions tracked")
    return slot_logits(query, key, seen, positions, inverse_frequencies(module), scaling)


def simulated_rows(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """Teacher forcing: a function (held (b, Hkv, T) mask, row t) -> logits (b, Hq, 1, T) of row t over the held
    keys with positions inside the cache (-inf elsewhere). `query`, `key`: the whole sequence, at positions
    0 .. T - 1; every KV head holds the same number of entries, t among them."""
    inv_freq = inverse_frequencies(module)
    groups = query.shape[1] // key.shape[1]

    def row(held: torch.Tensor, t: int) -> torch.Tensor:
        b, hkv, _ = held.shape
        kept = held.nonzero()[:, -1].view(b, hkv, -1)  # (b, Hkv, n) held positions in text order
        keys = key.gather(2, kept.unsqueeze(-1).expand(-1, -1, -1, key.shape[-1]))
        logits = slot_logits(query[:, :, t : t + 1], keys, t, kept, inv_freq, scaling)  # (b, Hq, 1, n)
        out = logits.new_full((*logits.shape[:3], held.shape[-1]), -math.inf)
        return out.scatter(-1, kept.repeat_interleave(groups, dim=1).unsqueeze(2), logits)

    return row
