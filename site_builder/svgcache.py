"""Drawn plots kept between builds, in the project's cache (`<cache>/svg/<sha256>.svg`).

matplotlib takes a few tenths of a second a figure, and the site draws every figure twice (light and dark):
for the real catalogue that was most of a build's time, while the figures change only when a result does.
A drawing is stored under a hash of everything it is drawn from: the figure's data, the drawing function,
the light or dark scheme, the source of `site_builder/plots.py` and the installed matplotlib version. The
fonts installed on the machine are not in the key; delete `<cache>/svg` after changing them.

The cache never changes what a build writes: a missing, unreadable or unwritable entry means drawing the
figure as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path

from kb.errors import KBError
from kb.fsutil import write_text_atomic
from kb.paths import cache_dir
from kb.results import Figure

GROUP = "svg"


@cache
def _stamp() -> str:
    """What every drawing depends on besides its figure: the drawing code and matplotlib's version."""
    from . import plots

    source = Path(plots.__file__).read_bytes()
    try:
        version = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:
        version = "none"
    return hashlib.sha256(source + b"\0" + version.encode()).hexdigest()


def entry(draw: Callable[..., str], fig: Figure, dark: bool) -> Path:
    """The cache file of `draw(fig, dark=dark)`."""
    data = [_stamp(), draw.__name__, dark, fig.model_dump(mode="json")]
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return cache_dir() / GROUP / f"{key}.svg"


def drawn(draw: Callable[..., str], fig: Figure, dark: bool = False) -> str:
    """`draw(fig, dark=dark)`, from the cache when this figure was drawn the same way before."""
    path = entry(draw, fig, dark)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    svg = draw(fig, dark=dark)
    try:
        write_text_atomic(path, svg)
    except (OSError, KBError):  # a read-only or full cache only costs the next build the drawing
        pass
    return svg
