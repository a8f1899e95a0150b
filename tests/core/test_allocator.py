"""`kb.allocator`: freed memory is reused instead of re-mapped, the opt-out works, bad values are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import allocator
from kb.errors import KBError
from kb_cli.main import main

ROOT = Path(__file__).resolve().parents[2]

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the settings apply to glibc only")

# a child process that tunes (as KB_MALLOC says), then allocates, touches and frees the same 64 MiB block five
# times per measurement and prints the page faults each measurement took: tuned, inside `defaults()`, after it
_CHILD = """
import ctypes, resource, sys
sys.path.insert(0, {root!r})
from kb import allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        block = libc.malloc(64 << 20)
        ctypes.memset(block, 1, 64 << 20)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

tuned = allocator.tune()
first = faults()
with allocator.defaults():
    inside = faults()
print(tuned, first, inside, faults(), allocator._state["tuned"])
"""
PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def _child(setting: str) -> tuple[bool, int, int, int, bool]:
    out = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT))], env={**os.environ, "KB_MALLOC": setting},
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1]), int(out[2]), int(out[3]), out[4] == "True"


@glibc
def test_tuned_allocator_reuses_a_freed_large_block():
    tuned, tuned_faults, *_ = _child("tuned")
    untouched, system_faults, *_ = _child("system")
    assert tuned and not untouched
    # the system default maps and faults the block in again on every round; tuned, only the first round faults
    assert system_faults >= 4 * PAGES
    assert tuned_faults <= 2 * PAGES


@glibc
def test_defaults_block_measures_with_the_library_settings_then_tunes_again():
    _tuned, _first, inside, after, tuned_again = _child("tuned")
    assert inside >= 4 * PAGES  # mapped afresh each round, as glibc does by default
    assert after <= 2 * PAGES  # reused from the heap once tuned again (only the first round faults)
    assert tuned_again


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
