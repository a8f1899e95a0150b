"""Which methods run on which decoder architectures, and a one-line refusal for the rest, read from the config.

Every method is written against LLaMA's layout (separate q/k/v/o projections, a gate/up/down MLP, one norm
before each sublayer). Most other decoder families keep that layout and need nothing: Qwen2 (biases on q/k/v,
sliced with their rows), Mistral, Gemma 2 (extra norms after each sublayer, soft-capping). Five features break
some methods, and `kb prune` / `kb reproduce` / `kb sweep` refuse those pairs before loading the weights:

- `qk-norm` (Qwen3, Gemma 3): a norm over each head's query and key vectors; a method that narrows the heads'
  dimension or scores the norms as a channel group has no consistent cut for them.
- `heads-divide-hidden` (Gemma 2 and 3, ...): the config itself refuses a hidden size that is not a multiple of
  the query heads, so the two hidden-channel methods are refused (on such a size they would fail at the end).
- `fused-projections` (Phi-3): one `qkv_proj` and one `gate_up_proj`; width methods cut q, k, v, gate and up
  separately. Unstructured methods are unaffected (each output row is still one output).
- `mixture-of-experts` (Mixtral, Qwen-MoE): transformers stores the experts as 3-D tensors, not `nn.Linear`,
  so the weight-sparsity, allocation and width methods would prune attention and leave every expert whole,
  a silent partial no-op; they are refused. Depth and sublayer methods remove whole layers or whole MLP
  blocks and run; KV-cache policies touch attention only.

`tests/impls/test_architectures.py` runs every method on a random tiny model of each family and checks that
this table is exactly the set of pairs that do not run (so it cannot go stale in either direction).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kb.errors import KBError

QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2", "olmoe"})
FUSED_TYPES = frozenset({"phi3", "phimoe"})
# configs that refuse a hidden size that is not a multiple of the query heads (LLaMA does too, and the project's
# own LLaMA config lifts it by making head_dim explicit; these families have no such stand-in here)
HEAD_MULTIPLE_TYPES = frozenset({"gemma2", "gemma3", "gemma3_text", "vaultgemma", "arcee", "exaone", "internlm3",
                                 "minicpm3", "deepseek_v2", "jais2"})  # fmt: skip
HIDDEN = ("minitron-approach", "sheared-llama")  # the methods that cut hidden (residual) channels
WIDTH = ("compresso", "coupled-components", "k-prune", "llm-pruner", "loraprune", "minitron", "minitron-approach",
         "sheared-llama", "flap", "2ssp")  # fmt: skip
UNSTRUCTURED = ("magnitude", "global-magnitude", "wanda", "sparsegpt", "ria", "dsnot", "llm-surgeon", "owl", "besa",
                "flash-llm", "pruner-zero", "alphapruning", "oats")  # fmt: skip
# feature -> (what it is, in a few words; the methods it stops)
REFUSED: dict[str, tuple[str, frozenset[str]]] = {
    "qk-norm": ("per-head query/key norms", frozenset(HIDDEN)),
    "heads-divide-hidden": (
        "a config that keeps the hidden size a multiple of the query heads, which a hidden-channel cut breaks",
        frozenset(HIDDEN),
    ),
    "fused-projections": ("fused qkv_proj and gate_up_proj projections", frozenset(WIDTH)),
    "mixture-of-experts": (
        "experts stored as 3-D tensors, not nn.Linear (pruning would leave every expert whole)",
        frozenset({*WIDTH, *UNSTRUCTURED, "llm-streamline"}),
    ),
}


def features(config: Mapping[str, Any]) -> set[str]:
    """The features of `REFUSED` a model config (its `config.json` as a dict) has."""
    kind = str(config.get("model_type", ""))
    text = config.get("text_config")
    if isinstance(text, Mapping):  # a multimodal wrapper: the decoder is the text model
        return features({**text, "model_type": text.get("model_type", kind)})
    found = set()
    if kind in QK_NORM_TYPES:
        found.add("qk-norm")
    if kind in HEAD_MULTIPLE_TYPES:
        found.add("heads-divide-hidden")
    if kind in FUSED_TYPES:
        found.add("fused-projections")
    experts = [config.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts")]
    if any(isinstance(n, int) and n > 1 for n in experts):
        found.add("mixture-of-experts")
    return found


def refusal(method: str, config: Mapping[str, Any]) -> str | None:
    """Why `method` does not run on a model with this config, or None when it does."""
    for feature in sorted(features(config)):
        what, methods = REFUSED[feature]
        if method in methods:
            return f"{method} does not support {config.get('model_type')} models: {what} ({feature})"
    return None


def model_config(name: str) -> dict[str, Any] | None:
    """The config of a local directory or hub id as a dict, without loading weights; None for the built-in
    models (LLaMAs) and when it cannot be read here (loading the model then reports the problem)."""
    if name in ("tiny-llama", "random-llama"):
        return None
    try:
        from transformers import AutoConfig

        from .models import _hub_reachable

        path = Path(name).expanduser()
        if path.is_dir():
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        else:
            try:  # a hub id: the cached config, else the hub's when it answers (a small file)
                config = AutoConfig.from_pretrained(name, local_files_only=True)
            except OSError:
                if not _hub_reachable():
                    return None
                config = AutoConfig.from_pretrained(name)
    except Exception:  # noqa: BLE001 - any failure is reported by the loader, with its own message
        return None
    data: dict[str, Any] = config.to_dict()
    return data


def check(methods: Iterable[str], name: str) -> None:
    """Refuse, in one line, the first of `methods` that model `name` does not support."""
    config = model_config(name)
    if config is None:
        return
    for method in methods:
        reason = refusal(method, config)
        if reason is not None:
            raise KBError(f"{name}: {reason}")
