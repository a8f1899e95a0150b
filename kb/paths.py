"""Where the knowledge base lives on disk, and where caches go."""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("papers", "concepts")


def repo_root(start: Path | None = None) -> Path:
    """The knowledge-base checkout: `$KB_ROOT`, else the nearest parent of the working directory
    holding `papers/` and `concepts/`, else the checkout this package was installed from."""
    env = os.environ.get("KB_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if all((candidate / m).is_dir() for m in _MARKERS):
            return candidate
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """`$KB_CACHE`, else `$XDG_CACHE_HOME/pruning-kb`, else `~/.cache/pruning-kb`."""
    env = os.environ.get("KB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pruning-kb"
