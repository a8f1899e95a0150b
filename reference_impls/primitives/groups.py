"""Dependency groups of a LLaMA-style model, and the two ways to remove them: masking and compaction.

Structured width pruning removes *coupled* structures: if row i of one matrix goes, the matching column of
the next matrix (and anything else indexed by the same channel) must go too, or the model no longer adds
up. These groups are listed explicitly for LLaMA-style decoders (no generic graph tracer), and every count
comes from the model itself (its config's `head_dim`, the current shapes of its projections), so the same
code serves SmolLM2, the random test LLaMA, and a model that was already compacted once.

A `Family` is a set of interchangeable groups of one kind in one place (say, the MLP channels of layer 7):
group `u` of the family covers, in each `Member` (a parameter, a dimension, a block size), the indices
`[u * block, (u + 1) * block)` along that dimension. The kinds:

- `kv-head` (attention, the default): one key/value head with *all* the query heads that share it. In the
  Hugging Face GQA layout query head h reads key/value head h // (heads / kv_heads), so a KV head's query
  heads are consecutive: its q rows and o columns are one block of `(heads / kv_heads) * head_dim`, its k
  and v rows one block of `head_dim`. Removing such groups keeps the query heads per KV head unchanged.
- `q-head` (attention, the second option): one query head alone, q rows and o columns; k and v stay. The
  attention kernels repeat every KV head the same number of times, so a valid removal takes the *same
  number* of query heads from under every KV head of the layer (`check_query_removal`).
- `mlp`: one intermediate channel: a row of gate and of up, a column of down.
- `hidden`: one channel of the residual stream: a column of the token embedding (and of an untied LM head),
  an entry of every RMSNorm, a column of every q/k/v/gate/up, a row of every o/down.

`mask(model, family, units)` zeroes the groups (the model keeps its shapes: the reference for tests);
`compact(model, removals)` slices them out of the real tensors and updates the modules' bookkeeping and the
config, so the model is smaller and faster everywhere. Removing heads or MLP channels changes nothing else:
the compact forward equals the masked forward. Removing hidden channels changes what RMSNorm averages over,
so there the two are only close, unless the method rescales the norms afterwards (`norms.rescale_rmsnorm`:
equal up to eps). A tied LM head is one tensor with the embedding and is sliced once; a method that trains or
edits the head alone unties it first (`norms.untie_head`).

Per-layer widths: after compaction the config's uniform `num_attention_heads`, `num_key_value_heads` and
`intermediate_size` are replaced by the widths every layer shares when they agree; when layers differ the
config also carries per-layer lists (`layer_num_attention_heads`, `layer_num_key_value_heads`,
`layer_intermediate_sizes`) that the project's own modeling file (`harness/pruned_llama.py`) builds on load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kb.errors import KBError

from ..harness.layerwise import input_embedding, model_config
from ..harness.pruned_llama import WIDTH_LISTS

GroupKind = Literal["kv-head", "q-head", "mlp", "hidden"]


@dataclass(frozen=True)
class Member:
    """Group u covers indices [u * block, (u + 1) * block) of parameter `param` along `dim`."""

    param: str  # name as in `model.named_parameters()`
    dim: int
    block: int


@dataclass(frozen=True)
class Family:
    kind: GroupKind
    layer: int | None  # decoder layer index; None for hidden channels (they span the whole model)
    units: int  # number of groups
    members: tuple[Member, ...]

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.layer}.{self.kind}"

    def indices(self, member: Member, units: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Indices along `member.dim` covered by the given groups."""
        u = torch.as_tensor(list(units) if not isinstance(units, torch.Tensor) else units, dtype=torch.long)
        offsets = torch.arange(member.block, dtype=torch.long)
        return (u[:, None] * member.block + offsets[None, :]).reshape(-1)

    def params_per_unit(self, model: nn.Module) -> int:
        """Parameters one group holds (each tensor counted once, e.g. tied embeddings)."""
        params = dict(model.named_parameters())
        seen: set[tuple[int, int]] = set()
        total = 0
        for m in self.members:
            p = params[m.param]
            if (id(p), m.dim) in seen:
                continue
            seen.add((id(p), m.dim))
            total += m.block * (p.numel() // p.shape[m.dim])
        return total


# ---- shapes read from the model -------------------------------------------------------------
def _layers(model: nn.Module) -> nn.ModuleList:
    lm: Any = model  # a transformers model: its submodules are read as Any
    try:
        layers: nn.ModuleList = lm.model.layers
        return layers
    except AttributeError:
        raise KBError(f"{type(model).__name__} is not a LLaMA-style causal LM (no model.layers)") from None


def head_dim(model: nn.Module) -> int:
    config = model_config(model)
    value = getattr(config, "head_dim", None)
    return int(value) if value else config.hidden_size // config.num_attention_heads


def attention_widths(model: nn.Module, layer: int) -> tuple[int, int]:
    """(query heads, key/value heads) of one decoder layer, from its current projections."""
    attn: Any = _layers(model)[layer].self_attn
    hd = head_dim(model)
    return attn.q_proj.weight.shape[0] // hd, attn.k_proj.weight.shape[0] // hd


def mlp_width(model: nn.Module, layer: int) -> int:
    mlp: Any = _layers(model)[layer].mlp
    width: int = mlp.gate_proj.weight.shape[0]
    return width


def _prefix(layer: int) -> str:
    return f"model.layers.{layer}"


# ---- the groups ------------------------------------------------------------------------------
def kv_head_family(model: nn.Module, layer: int) -> Family:
    heads, kv = attention_widths(model, layer)
    hd, p = head_dim(model), _prefix(layer) + ".self_attn"
    rep = heads // kv
    members = (Member(f"{p}.q_proj.weight", 0, rep * hd), Member(f"{p}.k_proj.weight", 0, hd),
               Member(f"{p}.v_proj.weight", 0, hd), Member(f"{p}.o_proj.weight", 1, rep * hd))  # fmt: skip
    return Family("kv-head", layer, kv, _with_biases(model, members))


def q_head_family(model: nn.Module, layer: int) -> Family:
    heads, _kv = attention_widths(model, layer)
    hd, p = head_dim(model), _prefix(layer) + ".self_attn"
    members = (Member(f"{p}.q_proj.weight", 0, hd), Member(f"{p}.o_proj.weight", 1, hd))
    return Family("q-head", layer, heads, _with_biases(model, members))


def mlp_family(model: nn.Module, layer: int) -> Family:
    p = _prefix(layer) + ".mlp"
    members = (Member(f"{p}.gate_proj.weight", 0, 1), Member(f"{p}.up_proj.weight", 0, 1),
               Member(f"{p}.down_proj.weight", 1, 1))  # fmt: skip
    return Family("mlp", layer, mlp_width(model, layer), _with_biases(model, members))


def hidden_family(model: nn.Module) -> Family:
    params = dict(model.named_parameters())
    members: list[Member] = []
    for name, p in params.items():
        leaf = name.rsplit(".", 2)
        if p.dim() == 1 and name.endswith("norm.weight"):
            members.append(Member(name, 0, 1))
        elif name.endswith(
            ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight")
        ):
            members.append(Member(name, 1, 1))
        elif name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")):
            members.append(Member(name, 0, 1))
        elif leaf[-2:] == ["embed_tokens", "weight"] or name == "lm_head.weight":
            members.append(Member(name, 1, 1))
    return Family("hidden", None, int(model_config(model).hidden_size), tuple(members))


def _with_biases(model: nn.Module, members: tuple[Member, ...]) -> tuple[Member, ...]:
    """Add the bias of every member indexed along its output rows (attention/MLP biases, when present)."""
    params = dict(model.named_parameters())
    extra = []
    for m in members:
        bias = m.param[: -len("weight")] + "bias"
        if m.dim == 0 and bias in params:
            extra.append(Member(bias, 0, m.block))
    return members + tuple(extra)


def layer_families(model: nn.Module, layer: int, attention: Literal["kv-head", "q-head", "none"] = "kv-head",
                   mlp: bool = True) -> list[Family]:  # fmt: skip
    out = []
    if attention == "kv-head":
        out.append(kv_head_family(model, layer))
    elif attention == "q-head":
        out.append(q_head_family(model, layer))
    if mlp:
        out.append(mlp_family(model, layer))
    return out


# ---- masking (shapes kept) -----------------------------------------------------------------
@torch.no_grad()
def mask(model: nn.Module, family: Family, units: Iterable[int]) -> None:
    """Zero the given groups in place (the masked reference for compaction)."""
    units = sorted({int(u) for u in units})
    params = dict(model.named_parameters())
    for m in family.members:
        p = params[m.param]
        p.index_fill_(m.dim, family.indices(m, units).to(p.device), 0.0)


# ---- compaction (tensors sliced) -------------------------------------------------------------
def check_query_removal(model: nn.Module, layer: int, units: Sequence[int]) -> None:
    """Query-only removal must take the same number of query heads from under every KV head."""
    heads, kv = attention_widths(model, layer)
    rep = heads // kv
    per_kv = [sum(1 for u in units if u // rep == g) for g in range(kv)]
    if len(set(per_kv)) > 1:
        raise KBError(
            f"layer {layer}: query-head removal must be even across KV heads, got {per_kv} per KV head"
        )
    if per_kv and per_kv[0] >= rep:
        raise KBError(f"layer {layer}: cannot remove every query head of a KV head (use kv-head groups)")


@torch.no_grad()
def compact(model: nn.Module, removals: Mapping[Family, Sequence[int]]) -> dict[str, list[int]]:
    """Slice the given groups out of the model in place; returns the new shape of every changed parameter.

    Families must describe the model as it is now (build them, choose, then compact once).
    """
    params = dict(model.named_parameters())
    drop: dict[str, dict[int, set[int]]] = {}  # param -> dim -> indices to remove
    for family, chosen in removals.items():
        units = sorted({int(u) for u in chosen})
        if not units:
            continue
        if any(not 0 <= u < family.units for u in units):
            raise KBError(f"{family.name}: group index out of range 0..{family.units - 1}")
        if len(units) >= family.units:
            raise KBError(f"{family.name}: cannot remove all {family.units} groups")
        if family.kind == "q-head":
            assert family.layer is not None
            check_query_removal(model, family.layer, units)
        for m in family.members:
            drop.setdefault(m.param, {}).setdefault(m.dim, set()).update(family.indices(m, units).tolist())
    changed: dict[str, list[int]] = {}
    done: set[int] = set()
    for name, dims in drop.items():
        p = params[name]
        if id(p) in done:  # tied tensors are sliced once
            continue
        done.add(id(p))
        data = p.data
        for dim, gone in dims.items():
            keep = torch.tensor([i for i in range(data.shape[dim]) if i not in gone], dtype=torch.long,
                                device=data.device)  # fmt: skip
            data = data.index_select(dim, keep)
        p.data = data.contiguous()
        changed[name] = list(p.shape)
    _sync_modules(model)
    return changed


def _sync_modules(model: nn.Module) -> None:
    """Update module attributes and the config from the (sliced) tensors."""
    config = model_config(model)
    hd = head_dim(model)
    embed = input_embedding(model)
    hidden = embed.weight.shape[1]
    embed.embedding_dim = hidden
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
    heads: list[int] = []
    kvs: list[int] = []
    inters: list[int] = []
    layer: Any  # transformers' decoder layer and its parts are read as Any
    for i, layer in enumerate(_layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        if hasattr(attn, "q_proj"):
            h, kv = attention_widths(model, i)
            if kv == 0 or h % kv:
                raise KBError(f"layer {i}: {h} query heads do not split evenly over {kv} KV heads")
            attn.num_key_value_groups = h // kv
            for name, value in (("num_heads", h), ("num_key_value_heads", kv)):
                if hasattr(attn, name):
                    setattr(attn, name, value)
            heads.append(h)
            kvs.append(kv)
        else:  # a skipped attention keeps the config's widths
            heads.append(int(config.num_attention_heads))
            kvs.append(int(config.num_key_value_heads))
        if hasattr(mlp, "gate_proj"):
            inters.append(mlp.gate_proj.weight.shape[0])
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = inters[-1]
            if hasattr(mlp, "hidden_size"):
                mlp.hidden_size = hidden
        else:
            inters.append(int(config.intermediate_size))
        if hasattr(layer, "hidden_size"):
            layer.hidden_size = hidden
    config.head_dim = hd  # explicit: hidden_size / heads no longer gives it
    config.hidden_size = hidden
    set_layer_widths(config, heads, kvs, inters)


def set_layer_widths(config: object, heads: list[int], kvs: list[int], inters: list[int]) -> None:
    """Write per-layer widths into a config: uniform fields when every layer agrees, lists otherwise.

    The uniform fields always hold the widest layer, so anything sized from them (a static cache) is big
    enough; the lists, when present, are what `pruned_llama` builds each layer from.
    """
    config.num_attention_heads = max(heads)  # type: ignore[attr-defined]
    config.num_key_value_heads = max(kvs)  # type: ignore[attr-defined]
    config.intermediate_size = max(inters)  # type: ignore[attr-defined]
    uniform = len(set(heads)) == 1 and len(set(kvs)) == 1 and len(set(inters)) == 1
    for name, values in zip(WIDTH_LISTS, (heads, kvs, inters), strict=True):
        setattr(config, name, None if uniform else list(values))


def layer_widths(model: nn.Module) -> dict[str, list[int]] | None:
    """The per-layer width lists of a compacted model, or None when every layer has the config's widths."""
    values = {name: getattr(model.config, name, None) for name in WIDTH_LISTS}
    if all(v is None for v in values.values()):
        return None
    return {k: list(v) for k, v in values.items()}  # type: ignore[arg-type]


def analytic_params_removed(model: nn.Module, removals: Mapping[Family, Sequence[int]]) -> int:
    """Parameters a compaction removes, computed from the families (no hidden-channel overlap counted).

    Hidden-channel removal shrinks the other families' members too; this sum is exact only when the
    removals do not mix hidden channels with other kinds.
    """
    return sum(len(set(units)) * family.params_per_unit(model) for family, units in removals.items())
