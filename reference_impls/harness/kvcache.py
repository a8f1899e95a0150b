"""Small helpers around transformers' KV-cache objects, in one place for every caller.

transformers 5.x renamed the `past_key_values` argument and output field to `cache` (the old name is
deprecated); these helpers use whichever the installed version and model take.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def cache_kwarg(model: nn.Module) -> str:
    """The keyword `model.forward` takes a cache under: `cache` (new) or `past_key_values` (old)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_bytes(cache: Any) -> int:
    """Bytes held by a transformers cache object (keys and values of every layer)."""
    total = 0
    for layer in getattr(cache, "layers", None) or ():
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total
