"""`kb.allocator`: freed memory is reused instead of re-mapped, the opt-out works, bad values are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import allocator
from kb.cli import main
from kb.errors import KBError

ROOT = Path(__file__).resolve().parents[2]

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the settings apply to glibc only")

# allocate, touch and free the same 64 MiB block 20 times; print the page faults that took
_FAULTS = """
import ctypes, os, resource, sys
sys.path.insert(0, {root!r})
from kb import allocator
tuned = allocator.tune()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[bool, int]:
    env = {**os.environ, "KB_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", _FAULTS.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@glibc
def test_tuned_allocator_reuses_a_freed_large_block():
    tuned, tuned_faults = _faults("tuned")
    untouched, system_faults = _faults("system")
    assert tuned and not untouched
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    # the system default maps and faults the block in again on every round; tuned, only the first round faults
    assert system_faults >= 15 * pages
    assert tuned_faults <= 3 * pages


_INSIDE_DEFAULTS = """
import ctypes, resource, sys
sys.path.insert(0, {root!r})
from kb import allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

assert allocator.tune()
with allocator.defaults():
    inside = faults()
after = faults()
print(inside, after, allocator._state["tuned"])
"""


@glibc
def test_defaults_block_measures_with_the_library_settings_then_tunes_again():
    out = subprocess.run([sys.executable, "-c", _INSIDE_DEFAULTS.format(root=str(ROOT))],
                         env={**os.environ, "KB_MALLOC": "tuned"}, capture_output=True, text=True, check=True)  # fmt: skip
    inside, after, tuned = out.stdout.split()
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert int(inside) >= 4 * pages  # mapped afresh each round, as glibc does by default
    assert int(after) <= 2 * pages  # reused from the heap once tuned again
    assert tuned == "True"


def test_choice_reads_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KB_MALLOC", raising=False)
    assert allocator.choice() == "tuned"
    monkeypatch.setenv("KB_MALLOC", " System ")
    assert allocator.choice() == "system"
    assert allocator.tune() is False
    monkeypatch.setenv("KB_MALLOC", "jemalloc")
    with pytest.raises(KBError, match="KB_MALLOC must be one of tuned, system"):
        allocator.choice()


def test_bad_setting_is_a_one_line_error_before_any_model_loads(monkeypatch, capsys):
    monkeypatch.setenv("KB_MALLOC", "fast")
    assert main(["reproduce", "wanda", "--model", "random-llama", "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kb: error: KB_MALLOC must be one of tuned, system, got 'fast'"]
