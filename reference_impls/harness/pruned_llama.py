"""A LLaMA whose listed layers lack their attention or MLP sublayer: used in-process and shipped with saves.

Layer removal keeps a stock LLaMA (fewer layers). Dropping only one sublayer of a layer has no stock
equivalent, so a saved model carries this file as its modeling code (`auto_map` in config.json, a model
type of its own so that nothing loads it silently as a plain LLaMA with random weights in the holes):
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` builds a LLaMA, then replaces the
listed sublayers and their pre-norms by parameter-free stand-ins that add nothing to the residual stream.

A dropped attention still appends a one-number-per-token placeholder to the KV cache, because the cache
takes the sequence length from layer 0 during generation; it costs 4 bytes per token and layer.
Self-contained on purpose: it imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

MODEL_TYPE = "kb_pruned_llama"


class SkippedAttention(nn.Module):
    """Stands in for a removed self-attention: adds zero, keeps the cache's sequence length in step."""

    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            b, t, _ = hidden_states.shape
            stub = hidden_states.new_zeros(b, 1, t, 1)
            cache.update(stub, stub, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class SkippedMLP(nn.Module):
    """Stands in for a removed MLP: adds zero to the residual stream."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def skip_sublayers(model: nn.Module, attention: list[int], mlp: list[int]) -> None:
    """Replace the attention / MLP sublayers (and their pre-norms) of the listed layers, in place."""
    layers = model.model.layers
    for i in attention:
        layers[i].self_attn = SkippedAttention(i)
        layers[i].input_layernorm = nn.Identity()
    for i in mlp:
        layers[i].mlp = SkippedMLP()
        layers[i].post_attention_layernorm = nn.Identity()


class KBPrunedLlamaConfig(LlamaConfig):
    model_type = MODEL_TYPE

    def __init__(self, skipped_attention: list[int] | None = None, skipped_mlp: list[int] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self.skipped_attention = list(skipped_attention or [])
        self.skipped_mlp = list(skipped_mlp or [])
        super().__init__(**kwargs)


class KBPrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = KBPrunedLlamaConfig

    def __init__(self, config: KBPrunedLlamaConfig) -> None:
        super().__init__(config)
        skip_sublayers(self, config.skipped_attention, config.skipped_mlp)
