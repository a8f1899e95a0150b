"""Let the commands that run models reuse freed memory instead of handing it back to the kernel (glibc only).

PyTorch on CPU takes every activation, logit and gradient tensor from plain `malloc`. By default glibc serves a
block above its mmap threshold (128 KiB at first, rising to at most 32 MiB) from a fresh mapping and unmaps it
on `free`, and it gives the top of the heap back once more than a small amount is free there. A training step
or an evaluation window frees and asks again for the same megabytes (a (256 x 49152) logits tensor alone is
48 MiB), so each one maps fresh zeroed pages and faults them in again. On the 2-core reference machine that
kernel work was 45 s of system time in a 190 s `kb reproduce reassessing-layer-pruning`.

`tune()` sets two `mallopt` parameters for the rest of the process: no new blocks from mappings (`M_MMAP_MAX`
0, so every block comes from the heap, where freed memory is reused) and a 1 GiB trim threshold (freed memory at
the top of the heap stays mapped up to that amount). Nothing computed changes; only where blocks live. The
price: memory freed in the middle of the heap stays with the process until it ends or until `release()`
returns its free pages (between the papers of `kb reproduce --all`), so peak resident memory can be somewhat
higher; `benchmarks/bench_allocator.py` measures both sides. For the same reason a measurement of resident memory
(`harness.memory.PeakRSS`) runs inside `defaults()`: with the C library's settings the resident size follows the
memory a block really holds, not what the tuned heap keeps for later.

`KB_MALLOC=system` keeps the C library's own settings. Other C libraries (macOS, musl) are left alone:
`tune()` then returns False. Torch-free, like the rest of `kb/`.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_BYTES = 1 << 30
DEFAULT_TRIM_BYTES, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's own values
CHOICES = ("tuned", "system")
_state = {"tuned": False}


def choice() -> str:
    """`KB_MALLOC`: "tuned" (the default) or "system"; anything else is a one-line error."""
    from .errors import KBError

    value = os.environ.get("KB_MALLOC", "").strip().lower() or "tuned"
    if value not in CHOICES:
        raise KBError(f"KB_MALLOC must be one of {', '.join(CHOICES)}, got {value!r}")
    return value


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> bool:
    """Apply the settings above unless `KB_MALLOC=system`; True when they are in force."""
    libc = _glibc()
    if choice() == "system" or libc is None:
        return False
    _state["tuned"] = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    return _state["tuned"]


@contextmanager
def defaults() -> Iterator[None]:
    """Inside the block, glibc's default mmap count and trim threshold; then tuned again if `tune()` had been in
    force. A no-op where nothing was tuned. Free pages the tuned heap kept stay until `release()`."""
    libc = _glibc()
    if libc is None or not _state["tuned"]:
        yield
        return
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_BYTES)
    _state["tuned"] = False
    try:
        yield
    finally:
        tune()


def release() -> bool:
    """Give the pages of every free heap block back to the kernel (`malloc_trim`); False where there is no glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
