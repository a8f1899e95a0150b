"""Prune a model larger than memory: one decoder layer at a time, read from its safetensors and written back.

`kb prune <method> --model DIR --low-memory --save OUT` (methods in `STREAMABLE`) never holds more than the
token embedding, one decoder layer and the calibration activations:

1. the model is built on the `meta` device from its config (no memory); the token embedding and the rotary
   embedding are made real (the embedding's weight read from the checkpoint, the rotary tables computed from
   the config), which is all the harness needs to capture the first layer's inputs;
2. layer 0 is read from the checkpoint (only its tensors: safetensors reads tensors by name) and the method's
   own `prune` runs unchanged: it drives `layerwise.prune_layerwise`, which reports each finished layer through
   `Context.progress`; there, the finished layer is written to its own shard, given back to the meta device
   (its memory freed) and the next layer is read;
3. every tensor outside the decoder layers (embedding, final norm, a separate LM head) is copied from the
   checkpoint unchanged, one at a time, then the shard index, the config and the tokenizer files.

The masks are the in-memory path's: the same method code runs on the same float32 weights with the same
calibration activations (tests compare them). Tensors are written in the checkpoint's own dtype (a bf16
model stays bf16: float32 -> bf16 of a value read from bf16 is exact, and zeros are zeros). The directory
appears only when complete (`kb.fsutil.atomic_directory`). Each shard is read back and compared with the
layer that was written before the next layer is read. The full reload check of `kb prune` (logits of the
reloaded model against the pruned one) needs both models in memory, which is what this path avoids, so it
is replaced by these per-shard checks; the tests reload small and 2 GB outputs in a fresh process.

Methods: those whose whole effect is one `prune_layerwise` pass (`STREAMABLE`); a method that needs every
layer at once (OWL's allocation pass, magnitude's global ranking, depth methods scoring all layers) is refused
in one line.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kb import allocator
from kb.errors import KBError
from kb.fsutil import atomic_directory

from .contract import Context
from .layerwise import decoder_layers, input_embedding

STREAMABLE = ("wanda", "sparsegpt")
INDEX = "model.safetensors.index.json"
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def refuse_unstreamable(method: str) -> None:
    if method not in STREAMABLE:
        raise KBError(f"--low-memory runs {', '.join(STREAMABLE)} (one layer-by-layer pass); {method} needs the "
                      "whole model at once: drop --low-memory")  # fmt: skip


class Checkpoint:
    """The tensors of a safetensors checkpoint (one file or shards with an index), read one name at a time."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        self.directory = directory
        index = directory / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise KBError(f"{index} is not a safetensors index ({exc})") from None
            self.files = {name: directory / file for name, file in weight_map.items()}
        elif (directory / "model.safetensors").is_file():
            with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
                self.files = dict.fromkeys(f.keys(), directory / "model.safetensors")
        else:
            raise KBError(f"{directory}: --low-memory reads safetensors weights (model.safetensors or {INDEX}); "
                          "none found")  # fmt: skip
        self._open = safe_open

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))

    def get(self, name: str) -> torch.Tensor:
        if name not in self.files:
            raise KBError(f"{self.directory}: the checkpoint has no tensor {name}")
        with self._open(str(self.files[name]), framework="pt") as f:
            tensor: torch.Tensor = f.get_tensor(name)
        return tensor


def skeleton(directory: Path) -> nn.Module:
    """The model's architecture on the meta device (no memory), from its config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .structure import needs_remote_code

    remote = needs_remote_code(directory)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=remote)
    with torch.device("meta"):
        model: nn.Module = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
    return model.float().eval()


def _prefix_of(model: nn.Module, module: nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is module:
            return f"{name}." if name else ""
    raise KBError(f"{type(module).__name__} is not part of the model")


def materialize(model: nn.Module, module: nn.Module, checkpoint: Checkpoint) -> dict[str, torch.dtype]:
    """Read `module`'s parameters and persistent buffers from the checkpoint, as float32 on the CPU; returns
    each tensor's dtype in the checkpoint (for writing it back the same way)."""
    prefix = _prefix_of(model, module)
    state = {}
    dtypes = {}
    for name in module.state_dict():
        tensor = checkpoint.get(prefix + name)
        dtypes[name] = tensor.dtype
        state[name] = tensor.float() if tensor.is_floating_point() else tensor
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, b in module.named_buffers() if b.is_meta]
    if left:
        raise KBError(f"--low-memory cannot build {prefix}{left[0]}: a buffer that is not in the checkpoint")
    return dtypes


def _real_rotary(model: nn.Module) -> None:
    """The rotary embedding's tables are computed from the config, not stored: build them on the CPU."""
    inner: Any = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is not None and any(b.is_meta for b in rotary.buffers()):
        with torch.device("cpu"):
            inner.rotary_emb = type(rotary)(config=model.config)


def _tensors_of(module: nn.Module, dtypes: dict[str, torch.dtype], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + n: t.detach().to(dtypes[n]).contiguous() for n, t in module.state_dict().items()}


def _write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Write one shard and read it back: every tensor must come back bit for bit. Returns its payload bytes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != set(tensors):
            raise KBError(f"{path.name}: the written shard does not hold the tensors it was given")
        for name, tensor in tensors.items():
            if not torch.equal(f.get_tensor(name), tensor):
                raise KBError(f"{path.name}: {name} reads back different from what was written")
    return sum(t.numel() * t.element_size() for t in tensors.values())


def prune_streaming(
    source: Path,
    save: Path,
    method: str,
    config: Any,
    calib: torch.Tensor,
    *,
    replace: bool = False,
    batch_size: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Prune the checkpoint in `source` with `method` one layer at a time and write the result to `save`."""
    import importlib

    from reference_impls import registry

    refuse_unstreamable(method)
    checkpoint = Checkpoint(source)
    model = skeleton(source)
    layers = decoder_layers(model)
    total = len(layers)
    prefixes = [_prefix_of(model, layer) for layer in layers]
    materialize(model, input_embedding(model), checkpoint)
    _real_rotary(model)
    module = importlib.import_module(registry.method_spec(method).module)
    start = time.perf_counter()
    written: dict[str, str] = {}
    stats = {"bytes": 0, "zeros": 0, "weights": 0}
    dtypes: list[dict[str, torch.dtype]] = [{} for _ in range(total)]
    with atomic_directory(save, replace=replace) as tmp:
        shard = "model-{:05d}-of-{:05d}.safetensors"

        def finish(done: int, _total: int) -> None:
            index = done - 1
            layer = layers[index]
            tensors = _tensors_of(layer, dtypes[index], prefixes[index])
            for linear in layer.modules():
                if isinstance(linear, nn.Linear):
                    stats["zeros"] += int((linear.weight == 0).sum())
                    stats["weights"] += linear.weight.numel()
            file = shard.format(index + 1, total + 1)
            stats["bytes"] += _write_shard(tmp / file, tensors)
            written.update(dict.fromkeys(tensors, file))
            del tensors  # they share the layer's storage
            layers[index] = layer.to("meta")
            allocator.release()  # the layer's pages go back to the kernel before the next layer is read
            if done < total:
                dtypes[done] = materialize(model, layers[done], checkpoint)
            log(f"  {method} --low-memory: {done}/{total} layers written")

        dtypes[0] = materialize(model, layers[0], checkpoint)
        ctx = Context(batch_size=batch_size, progress=finish, log=log)
        with allocator.defaults():  # large blocks from their own mappings, unmapped when freed (kb.allocator)
            outcome = module.prune(model, calib, config, ctx)
        if len(set(written.values())) != total:
            raise KBError(f"{method} did not go through every layer once; nothing is saved")
        rest = [n for n in checkpoint.names() if not any(n.startswith(p) for p in prefixes)]
        file = shard.format(total + 1, total + 1)
        stats["bytes"] += _write_shard(tmp / file, {n: checkpoint.get(n).contiguous() for n in rest})
        written.update(dict.fromkeys(rest, file))
        index_data = {"metadata": {"total_size": stats["bytes"]}, "weight_map": dict(sorted(written.items()))}
        (tmp / INDEX).write_text(json.dumps(index_data, indent=2) + "\n", encoding="utf-8")
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name != INDEX and not path.name.endswith(_WEIGHT_FILES):
                shutil.copy2(path, tmp / path.name)
    return {
        "method": method, "layers": total, "shards": total + 1, "bytes": stats["bytes"],
        "decoder_sparsity": stats["zeros"] / max(1, stats["weights"]), "seconds": round(time.perf_counter() - start, 2),
        "outcome": outcome.model_dump(mode="json"), "saved": str(save),
    }  # fmt: skip


def low_memory_prune(
    method: str,
    options: Any,
    save: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """`kb prune METHOD --model DIR --low-memory --save OUT`: `options` is the command's `RunOptions`; the
    calibration tokens are cut exactly as for the in-memory path (`data.token_data` on the same corpus)."""
    from transformers import AutoTokenizer

    from reference_impls import registry

    from .data import token_data
    from .runner import check_targets, method_config, set_threads
    from .session import Session

    refuse_unstreamable(method)
    mspec = registry.savable_method(method)
    check_targets(mspec, options.target, method)
    config = method_config(mspec, options.target, options.overrides)
    source = Path(options.model).expanduser()
    if not (source / "config.json").is_file():
        raise KBError(
            f"--low-memory prunes a local model directory; {options.model} is not one (no config.json)"
        )
    Checkpoint(source)  # safetensors present and readable: checked before the corpus and tokenizer are read
    if options.device not in (None, "cpu"):
        raise KBError("--low-memory runs on the CPU (one layer in memory at a time); drop --device")
    save = Path(save).expanduser()
    if save.exists() and not force:
        raise KBError(f"{save} already exists; pass --force to replace it")
    set_threads(options.threads)
    corpus = Session().corpus(options.dataset)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    data = token_data(tokenizer, corpus, nsamples=options.nsamples, seqlen=options.seqlen,
                      eval_tokens=options.eval_tokens, seed=options.seed)  # fmt: skip
    log(f"kb: pruning {source} with {method}, one layer at a time (calibration {tuple(data.calib.shape)})")
    return prune_streaming(source, save, method, config, data.calib, replace=force,
                           batch_size=options.batch_size, log=log)  # fmt: skip
