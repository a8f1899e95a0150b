"""Structural edits that keep a standard, saveable model: remove decoder layers, skip sublayers, save.

- `remove_layers(model, indices)`: delete decoder layers, renumber every `layer_idx` inside the kept
  layers (the KV cache is indexed by it: forgetting this breaks `generate`), update `num_hidden_layers`
  and any per-layer config list (`layer_types`). The result is a stock model with fewer layers.
- `skip_sublayers(model, attention=[...], mlp=[...])`: replace a layer's attention or MLP (and its
  pre-norm) by a parameter-free stand-in that adds nothing; recorded in the config so a save can
  rebuild it (see `pruned_llama`). LLaMA-style layers (`self_attn`, `mlp`) only. With `attention_bias` /
  `mlp_bias` the stand-in adds a constant vector instead (a sublayer's mean update).
- `save_model(model, tokenizer, directory)`: `save_pretrained` into an atomic directory, plus the
  modeling file when sublayers are skipped, layers differ in width, hidden-channel pruning left a hidden
  size that is not a multiple of the query heads, or o_proj / down_proj carry a bias of their own (the
  config's `pruned_llama.OUTPUT_BIASES` flags, set by FLAP's bias compensation). `verify` checks the written
  directory before it is published (`kb prune --save` reloads it and compares logits: `reload_check`). Every
  saved model is also checked by the tests to load in a fresh process and `generate`.
- `check_savable(model, name)`: refuse, before any pruning, a model holding a parameter its config cannot
  describe (a bias LLaMA's `attention_bias` / `mlp_bias` flags say is absent, an untied head under a tying
  config): a saved copy would silently lose it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from kb.errors import KBError
from kb.fsutil import atomic_directory

from . import pruned_llama
from .layerwise import decoder_layers, input_embedding, model_config


def _renumber(layer: nn.Module, index: int) -> None:
    module: Any  # `layer_idx` is a plain int attribute, which `nn.Module.__setattr__` is not typed to take
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index


def remove_layers(model: nn.Module, indices: Iterable[int]) -> list[int]:
    """Delete the decoder layers at `indices` (of the current model); returns them sorted."""
    layers = decoder_layers(model)
    drop = sorted({int(i) for i in indices})
    if any(not 0 <= i < len(layers) for i in drop):
        raise KBError(f"layer indices {drop} out of range for {len(layers)} layers")
    if len(drop) >= len(layers):
        raise KBError(f"cannot remove all {len(layers)} decoder layers")
    kept = [i for i in range(len(layers)) if i not in drop]
    new_index = {old: new for new, old in enumerate(kept)}
    modules = [layers[i] for i in kept]
    for new, layer in enumerate(modules):
        _renumber(layer, new)
    for i in reversed(range(len(layers))):
        del layers[i]
    layers.extend(modules)
    config = model_config(model)
    config.num_hidden_layers = len(kept)
    for name in ("layer_types", *pruned_llama.WIDTH_LISTS):
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == len(kept) + len(drop):
            setattr(config, name, [values[i] for i in kept])
    for name in pruned_llama.SKIP_LISTS:
        values = getattr(config, name, None)
        if values:
            setattr(config, name, [new_index[i] for i in values if i in new_index])
    return drop


def skip_sublayers(
    model: nn.Module,
    *,
    attention: Iterable[int] = (),
    mlp: Iterable[int] = (),
    attention_bias: Mapping[int, torch.Tensor] | None = None,
    mlp_bias: Mapping[int, torch.Tensor] | None = None,
) -> None:
    """Skip the attention and/or MLP sublayer of the listed layers (current indices), in place. A layer given
    in `attention_bias` / `mlp_bias` gets a stand-in that adds that constant vector instead of zero."""
    layers = decoder_layers(model)
    attention, mlp = sorted(set(attention)), sorted(set(mlp))
    attention_bias, mlp_bias = dict(attention_bias or {}), dict(mlp_bias or {})
    if not set(attention_bias) <= set(attention) or not set(mlp_bias) <= set(mlp):
        raise KBError("a sublayer bias needs its sublayer to be skipped")
    for i in (*attention, *mlp):
        if not 0 <= i < len(layers):
            raise KBError(f"layer index {i} out of range for {len(layers)} layers")
        if not (hasattr(layers[i], "self_attn") and hasattr(layers[i], "mlp")):
            raise KBError(
                f"{type(layers[i]).__name__} has no self_attn/mlp: sublayer skipping needs a LLaMA-style layer"
            )
    config = model_config(model)
    before = {name: set(getattr(config, name, None) or []) for name in pruned_llama.SKIP_LISTS}
    new_attn = [i for i in attention if i not in before["skipped_attention"]]
    new_mlp = [i for i in mlp if i not in before["skipped_mlp"]]
    if set(attention_bias) - set(new_attn) or set(mlp_bias) - set(new_mlp):
        raise KBError("a sublayer bias can only be set when the sublayer is skipped")
    pruned_llama.skip_sublayers(model, new_attn, new_mlp, list(attention_bias), list(mlp_bias))
    weight = input_embedding(model).weight
    with torch.no_grad():
        # the stand-ins `pruned_llama.skip_sublayers` just built for these layers, each with a bias
        for i, vector in attention_bias.items():
            attn = cast(pruned_llama.SkippedAttention, layers[i].self_attn)
            assert attn.bias is not None
            attn.bias.copy_(vector.to(weight.device, weight.dtype))
        for i, vector in mlp_bias.items():
            ffn = cast(pruned_llama.SkippedMLP, layers[i].mlp)
            assert ffn.bias is not None
            ffn.bias.copy_(vector.to(weight.device, weight.dtype))
    config.skipped_attention = sorted(before["skipped_attention"] | set(attention))
    config.skipped_mlp = sorted(before["skipped_mlp"] | set(mlp))
    config.emulated_attention = sorted(before["emulated_attention"] | set(attention_bias))
    config.emulated_mlp = sorted(before["emulated_mlp"] | set(mlp_bias))


def skipped(model: nn.Module) -> dict[str, list[int]]:
    return {"attention": list(getattr(model.config, "skipped_attention", None) or []),
            "mlp": list(getattr(model.config, "skipped_mlp", None) or [])}  # fmt: skip


def _skip_lists(model: nn.Module) -> dict[str, list[int]]:
    """Every list of `pruned_llama.SKIP_LISTS` (skipped and bias-emulated sublayers), as the config holds them."""
    return {name: list(getattr(model.config, name, None) or []) for name in pruned_llama.SKIP_LISTS}


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """Per-layer widths of a width-pruned model whose layers differ (see `pruned_llama`); empty otherwise."""
    return {name: list(getattr(model.config, name)) for name in pruned_llama.WIDTH_LISTS
            if getattr(model.config, name, None)}  # fmt: skip


def output_biases(model: nn.Module) -> dict[str, bool]:
    """The `pruned_llama.OUTPUT_BIASES` flags the config sets (a bias on o_proj / down_proj alone), else empty."""
    return {name: True for name in pruned_llama.OUTPUT_BIASES if getattr(model.config, name, False)}


def save_model(
    model: nn.Module, tokenizer: Any, directory: Path, *, replace: bool = False,
    verify: Callable[[Path], Any] | None = None,
) -> Any:  # fmt: skip
    """Save model + tokenizer so that `from_pretrained` loads them; the directory appears only when complete.

    A model with skipped sublayers, per-layer widths or output biases is saved with the project's modeling file
    (`pruned_llama`): load it with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` or
    `reference_impls.harness.models.load_model(dir)`.

    `verify(tmp)` runs on the finished but unpublished directory (see `reload_check`); its return value is
    returned, and an exception from it leaves no directory behind (an existing one, with `replace`, untouched).
    """
    lm: Any = model  # a transformers model: save_pretrained() is its own
    gone = _skip_lists(model)
    widths = layer_widths(model)
    biases = output_biases(model)
    odd = not divisible_hidden(model.config)
    config_class = type(model.config)
    try:
        if odd and config_class.__name__ == "LlamaConfig":  # its save-time check would refuse the config
            model.config.__class__ = pruned_llama.KBPrunedLlamaConfig
        with atomic_directory(directory, replace=replace) as tmp:
            lm.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if any(gone.values()) or widths or odd or biases:
                _make_remote_code(tmp, gone, widths, biases)
            _readable(tmp)
            model.config.__class__ = config_class  # the check sees the model exactly as it was given
            checked = verify(tmp) if verify is not None else None
        return checked
    except OSError as exc:  # a full disk, a directory made read-only meanwhile: nothing was published
        raise KBError(f"cannot save the model to {directory}: {exc.strerror or exc}") from None
    finally:
        model.config.__class__ = config_class


def check_savable(model: nn.Module, name: str) -> None:
    """Refuse, in one line (exit 2), a model holding what its config cannot describe; run before pruning.

    A saved copy is rebuilt from its config.json, then the weights are loaded into it: a parameter the rebuilt
    model has no place for is dropped silently (e.g. a bias on `o_proj` while LLaMA's `attention_bias` is false:
    the reload computes different logits), one it expects but is not given is initialised at random, and a
    separate LM head under `tie_word_embeddings=True` is replaced by the embedding. The model's own class is
    built from a copy of its config on the meta device (no memory, no weights) and its parameters, names and
    shapes, are compared with the model's. An architecture that cannot be built that way is not judged here;
    the reload check after saving (`reload_check`) still is.
    """
    import copy

    try:
        with torch.device("meta"):
            skeleton = type(model)(copy.deepcopy(model.config))
    except Exception:  # noqa: BLE001 - see the docstring: the reload check covers it
        return
    expected = {n: tuple(p.shape) for n, p in skeleton.named_parameters()}
    actual = {n: tuple(p.shape) for n, p in model.named_parameters()}
    config = model.config
    head = "lm_head.weight"
    if head in actual and head not in expected and getattr(config, "tie_word_embeddings", False):
        raise KBError(f"{name}: {head} is a tensor of its own but the config says tie_word_embeddings=True, so a "
                      "saved copy would replace it by the embedding; set config.tie_word_embeddings = False, or tie "
                      "the head (model.tie_weights()), before pruning")  # fmt: skip
    for n, shape in actual.items():
        module = n.rpartition(".")[0]
        if n not in expected:
            flag = _bias_flag(config, n)
            how = (f"set config.{flag} = True and give every projection it covers a bias (zeros where there was "
                   "none)" if flag else "make the config describe it, or fold it into the weights")  # fmt: skip
            raise KBError(f"{name}: {module} has a parameter {n.rpartition('.')[2]!r} {list(shape)} that its config "
                          f"cannot describe{f' ({flag}=False)' if flag else ''}, so a saved copy would silently "
                          f"drop it; {how} before pruning")  # fmt: skip
        if shape != expected[n]:
            raise KBError(f"{name}: {n} is {list(shape)} but its config builds {list(expected[n])}; a saved copy "
                          "would not load: update the config to the real sizes before pruning")  # fmt: skip
    lost = [n for n in expected if n not in actual]
    if lost == [head]:
        raise KBError(f"{name}: the LM head is tied to the embedding but the config says tie_word_embeddings=False, "
                      "so a saved copy would store two tensors; set config.tie_word_embeddings = True, or give the "
                      "head a copy of its own, before pruning")  # fmt: skip
    if lost:
        raise KBError(f"{name}: {lost[0].rpartition('.')[0]} has no {lost[0].rpartition('.')[2]!r} although its "
                      f"config builds one ({len(lost)} such parameter(s)), so a reload would fill it at random; "
                      "make the config match the model before pruning")  # fmt: skip


def _bias_flag(config: Any, parameter: str) -> str | None:
    """LLaMA's config flag that decides whether the projection owning bias `parameter` has one (or None)."""
    if not parameter.endswith("_proj.bias") or getattr(config, "model_type", None) not in (
        "llama", pruned_llama.MODEL_TYPE
    ):  # fmt: skip
        return None
    return "attention_bias" if ".self_attn." in parameter else "mlp_bias" if ".mlp." in parameter else None


def divisible_hidden(config: Any) -> bool:
    """A stock LLaMA config refuses a hidden size that is not a multiple of the query heads (hidden-channel
    pruning can leave one); such a model is saved with the project's modeling file, which states head_dim."""
    return int(config.hidden_size) % int(config.num_attention_heads) == 0


def _readable(directory: Path) -> None:
    """Temporary directories and some writers create owner-only modes; a saved model is for everyone to read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def _make_remote_code(
    directory: Path, gone: dict[str, list[int]], widths: dict[str, list[int]] | None = None,
    biases: dict[str, bool] | None = None,
) -> None:  # fmt: skip
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") not in ("llama", pruned_llama.MODEL_TYPE):
        what = "per-layer widths are" if widths else "output biases are" if biases else "sublayer skipping is"
        raise KBError(f"{what} saved for LLaMA models only, not {config.get('model_type')!r}")
    module = Path(pruned_llama.__file__).stem
    config.update({
        "model_type": pruned_llama.MODEL_TYPE,
        "architectures": ["KBPrunedLlamaForCausalLM"],
        "auto_map": {"AutoConfig": f"{module}.KBPrunedLlamaConfig",
                     "AutoModelForCausalLM": f"{module}.KBPrunedLlamaForCausalLM"},
        **gone,
        **(widths or {}),
        **(biases or {}),
    })  # fmt: skip
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.copyfile(pruned_llama.__file__, directory / f"{module}.py")


def needs_remote_code(directory: Path) -> bool:
    """True for a directory this project saved with skipped sublayers (its own modeling file)."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == pruned_llama.MODEL_TYPE
