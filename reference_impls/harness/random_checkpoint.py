"""A seeded random LLaMA written straight to sharded safetensors, one layer per shard, never whole in memory.

For the larger-than-memory test and benchmark (`kb prune --low-memory`): a model of several GB is written
with the memory of one layer. Byte tokenizer (vocab 256, as `random-llama`), tied embeddings, no biases.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import byte_tokenizer
from .streaming import INDEX


def write_random_llama(directory: Path, *, hidden: int, intermediate: int, layers: int, seed: int = 7) -> int:
    """Write config, tokenizer and `layers + 1` shards to `directory` (created); returns the weight bytes."""
    from transformers import LlamaConfig

    heads = max(1, hidden // 128)
    config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "self_attn.q_proj.weight": (hidden, hidden), "self_attn.k_proj.weight": (hidden, hidden),
        "self_attn.v_proj.weight": (hidden, hidden), "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (intermediate, hidden), "mlp.up_proj.weight": (intermediate, hidden),
        "mlp.down_proj.weight": (hidden, intermediate),
    }  # fmt: skip
    weight_map: dict[str, str] = {}
    total = 0
    shards = layers + 1
    for i in range(layers):
        part = {f"model.layers.{i}.{n}": torch.randn(s, generator=gen) * 0.02 for n, s in shapes.items()}
        part[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(hidden)
        part[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(hidden)
        total += _save(part, directory, f"model-{i + 1:05d}-of-{shards:05d}.safetensors", weight_map)
    rest = {
        "model.embed_tokens.weight": torch.randn(256, hidden, generator=gen),
        "model.norm.weight": torch.ones(hidden),
    }
    total += _save(rest, directory, f"model-{shards:05d}-of-{shards:05d}.safetensors", weight_map)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return total


def _save(tensors: dict[str, torch.Tensor], directory: Path, file: str, weight_map: dict[str, str]) -> int:
    from safetensors.torch import save_file

    save_file(tensors, str(directory / file), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(tensors, file))
    return sum(t.numel() * t.element_size() for t in tensors.values())
