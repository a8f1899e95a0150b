"""Content hashes of the code a reproduction ran, so a committed result can be checked against today's code.

A result's `code` (`kb.results.CodeVersion`) lists each file it depends on with the sha256 of its bytes, and one
digest over the sorted (path, file digest) pairs. Paths are relative to the checkout and use `/`, so the digest
does not depend on where the checkout lives or on the order the files were found in. Which files a paper depends
on is the registry's business (`reference_impls.registry.code_files`); this module only hashes. Torch-free:
`kb build --check` recomputes the digests of every committed result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from .results import CodeVersion


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def python_files(root: Path, directory: str) -> list[str]:
    """Every `.py` file under `root/directory` (recursively, caches left out), as sorted relative paths."""
    base = root / directory
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def code_version(root: Path, files: Iterable[str]) -> CodeVersion:
    """The digests of `files` (relative to `root`); a file that does not exist counts as the empty digest "-"."""
    digests = {}
    for rel in sorted(set(files)):
        path = root / rel
        digests[rel] = file_digest(path) if path.is_file() else "-"
    total = hashlib.sha256()
    for rel, digest in digests.items():
        total.update(rel.encode("utf-8") + b"\0" + digest.encode("ascii") + b"\n")
    return CodeVersion(hash="sha256:" + total.hexdigest(), files=digests)


def changed_files(recorded: CodeVersion, current: CodeVersion) -> list[str]:
    """Files added, removed or edited between two versions, sorted."""
    names = set(recorded.files) | set(current.files)
    return sorted(n for n in names if recorded.files.get(n) != current.files.get(n))
