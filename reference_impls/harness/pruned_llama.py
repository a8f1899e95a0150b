"""A LLaMA whose listed layers lack their attention or MLP sublayer, or whose layers have widths of their own:
used in-process and shipped with saves.

Layer removal keeps a stock LLaMA (fewer layers). Dropping only one sublayer of a layer has no stock
equivalent, so a saved model carries this file as its modeling code (`auto_map` in config.json, a model
type of its own so that nothing loads it silently as a plain LLaMA with random weights in the holes):
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` builds a LLaMA, then replaces the
listed sublayers and their pre-norms by parameter-free stand-ins that add nothing to the residual stream.

A skipped sublayer may instead add a constant vector (`emulated_attention`, `emulated_mlp` list those layers;
the vector is the stand-in's `bias` parameter, saved with the weights): A Deeper Look's "mean update".

A dropped attention still appends a one-number-per-token placeholder to the KV cache, because the cache
takes the sequence length from layer 0 during generation; it costs 4 bytes per token and layer.

Per-layer widths (structured width pruning that leaves some layers whole, e.g. LLM-Pruner): the config lists
every layer's query heads, key/value heads and MLP intermediate size (`layer_num_attention_heads`,
`layer_num_key_value_heads`, `layer_intermediate_sizes`; `head_dim` stays one number). The uniform fields
hold the widest layer; each layer's projections are then rebuilt at its own width before the weights load.
Hidden-channel pruning can leave a hidden size that is not a multiple of the query heads (SmolLM2: 512
channels, 9 heads); `head_dim` is explicit then, so the stock config's divisibility check is skipped here.

Output biases (FLAP's bias compensation): a bias on every layer's o_proj and/or down_proj alone, which LLaMA's
`attention_bias` / `mlp_bias` flags cannot say (each covers all of a sublayer's projections). The config flags
`o_proj_bias` / `down_proj_bias` (`OUTPUT_BIASES`; absent = False) give those projections a bias before the
weights load.

Self-contained on purpose: it imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

MODEL_TYPE = "kb_pruned_llama"
WIDTH_LISTS = ("layer_num_attention_heads", "layer_num_key_value_heads", "layer_intermediate_sizes")
SKIP_LISTS = ("skipped_attention", "skipped_mlp", "emulated_attention", "emulated_mlp")  # layer indices
OUTPUT_BIASES = ("o_proj_bias", "down_proj_bias")  # config flags: a bias on o_proj / down_proj alone


def _constant(hidden_states: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = torch.zeros_like(hidden_states)
    return out if bias is None else out + bias.to(out.dtype)


class SkippedAttention(nn.Module):
    """Stands in for a removed self-attention: adds zero (or, with `hidden`, a constant vector `bias`: the
    sublayer's mean update), keeps the cache's sequence length in step."""

    def __init__(self, layer_idx: int, hidden: int | None = None) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.bias = nn.Parameter(torch.zeros(hidden)) if hidden else None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            b, t, _ = hidden_states.shape
            stub = hidden_states.new_zeros(b, 1, t, 1)
            cache.update(stub, stub, self.layer_idx)
        return _constant(hidden_states, self.bias), None


class SkippedMLP(nn.Module):
    """Stands in for a removed MLP: adds zero (or, with `hidden`, a constant vector `bias`)."""

    def __init__(self, hidden: int | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden)) if hidden else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _constant(hidden_states, self.bias)


def skip_sublayers(model: nn.Module, attention: list[int], mlp: list[int], emulated_attention: list[int] | None = None,
                   emulated_mlp: list[int] | None = None) -> None:  # fmt: skip
    """Replace the attention / MLP sublayers (and their pre-norms) of the listed layers, in place; those also
    listed as emulated get a constant-bias stand-in (its value is loaded or set afterwards)."""
    lm: Any = model  # transformers' classes are read as Any
    layers = lm.model.layers
    hidden = lm.config.hidden_size
    for i in attention:
        layers[i].self_attn = SkippedAttention(i, hidden if i in (emulated_attention or ()) else None)
        layers[i].input_layernorm = nn.Identity()
    for i in mlp:
        layers[i].mlp = SkippedMLP(hidden if i in (emulated_mlp or ()) else None)
        layers[i].post_attention_layernorm = nn.Identity()


def _linear(rows: int, cols: int, like: nn.Linear) -> nn.Linear:
    out = nn.Linear(
        cols, rows, bias=like.bias is not None, device=like.weight.device, dtype=like.weight.dtype
    )
    return out


def set_layer_widths(
    model: nn.Module, heads: list[int], kv_heads: list[int], intermediate: list[int]
) -> None:
    """Rebuild every layer's attention and MLP projections at its own width (weights to be loaded after)."""
    lm: Any = model  # transformers' classes are read as Any
    layers = lm.model.layers
    if not len(heads) == len(kv_heads) == len(intermediate) == len(layers):
        raise ValueError(f"per-layer widths for {len(heads)}/{len(kv_heads)}/{len(intermediate)} layers, model has "
                         f"{len(layers)}")  # fmt: skip
    hidden = lm.config.hidden_size
    for layer, h, kv, inter in zip(layers, heads, kv_heads, intermediate, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        if h % kv:
            raise ValueError(f"{h} query heads do not split evenly over {kv} key/value heads")
        attn.q_proj = _linear(h * hd, hidden, attn.q_proj)
        attn.k_proj = _linear(kv * hd, hidden, attn.k_proj)
        attn.v_proj = _linear(kv * hd, hidden, attn.v_proj)
        attn.o_proj = _linear(hidden, h * hd, attn.o_proj)
        attn.num_key_value_groups = h // kv
        mlp.gate_proj = _linear(inter, hidden, mlp.gate_proj)
        mlp.up_proj = _linear(inter, hidden, mlp.up_proj)
        mlp.down_proj = _linear(hidden, inter, mlp.down_proj)
        mlp.intermediate_size = inter


def add_output_biases(model: nn.Module, o_proj: bool, down_proj: bool) -> None:
    """Give every layer's o_proj (and/or down_proj) a zero bias where it has none (values set or loaded after)."""
    lm: Any = model  # transformers' classes are read as Any
    for layer in lm.model.layers:
        for wanted, parent, name in (
            (o_proj, layer.self_attn, "o_proj"),
            (down_proj, layer.mlp, "down_proj"),
        ):
            linear: Any = getattr(parent, name, None)  # a skipped sublayer has none
            if wanted and isinstance(linear, nn.Linear) and getattr(linear, "bias", None) is None:
                w = linear.weight
                linear.bias = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))


class KBPrunedLlamaConfig(LlamaConfig):  # type: ignore[misc]  # transformers is read as Any
    model_type = MODEL_TYPE

    def __init__(self, skipped_attention: list[int] | None = None, skipped_mlp: list[int] | None = None,
                 emulated_attention: list[int] | None = None, emulated_mlp: list[int] | None = None,
                 layer_num_attention_heads: list[int] | None = None, layer_num_key_value_heads: list[int] | None = None,
                 layer_intermediate_sizes: list[int] | None = None, o_proj_bias: bool = False,
                 down_proj_bias: bool = False, **kwargs: Any) -> None:  # fmt: skip
        self.o_proj_bias = bool(o_proj_bias)  # absent in older saves: no output bias
        self.down_proj_bias = bool(down_proj_bias)
        self.skipped_attention = list(skipped_attention or [])
        self.skipped_mlp = list(skipped_mlp or [])
        self.emulated_attention = list(emulated_attention or [])  # absent in older saves: plain skips
        self.emulated_mlp = list(emulated_mlp or [])
        self.layer_num_attention_heads = (
            list(layer_num_attention_heads) if layer_num_attention_heads else None
        )
        self.layer_num_key_value_heads = (
            list(layer_num_key_value_heads) if layer_num_key_value_heads else None
        )
        self.layer_intermediate_sizes = list(layer_intermediate_sizes) if layer_intermediate_sizes else None
        hidden, heads, hd = (
            kwargs.get("hidden_size"),
            kwargs.get("num_attention_heads"),
            kwargs.get("head_dim"),
        )
        odd = hidden is not None and heads and hd and hidden % heads != 0
        if odd:  # the stock init checks hidden % heads; pass a size it accepts, then set the real one
            assert heads is not None and hd is not None  # `odd` holds only when both are set
            kwargs["hidden_size"] = heads * hd
        super().__init__(**kwargs)
        if odd:
            self.hidden_size = hidden

    def validate(self) -> None:
        """The stock checks, except hidden % heads when head_dim is stated (it only matters when derived)."""
        heads = getattr(self, "num_attention_heads", None)
        hidden, hd = getattr(self, "hidden_size", None), getattr(self, "head_dim", None)
        if hd is None or not heads or hidden is None or hidden % heads == 0:
            super().validate()


class KBPrunedLlamaForCausalLM(LlamaForCausalLM):  # type: ignore[misc]  # transformers is read as Any
    config_class = KBPrunedLlamaConfig

    def __init__(self, config: KBPrunedLlamaConfig) -> None:
        super().__init__(config)
        if config.layer_num_attention_heads:
            set_layer_widths(self, config.layer_num_attention_heads, config.layer_num_key_value_heads or [],
                             config.layer_intermediate_sizes or [])  # fmt: skip
        add_output_biases(self, config.o_proj_bias, config.down_proj_bias)
        skip_sublayers(
            self, config.skipped_attention, config.skipped_mlp, config.emulated_attention, config.emulated_mlp
        )
