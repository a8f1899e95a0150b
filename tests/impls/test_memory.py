"""Peak-RSS measurement: memory an earlier block freed is handed back, so a later block's growth counts."""

from __future__ import annotations

import pytest
import torch

from reference_impls.harness.memory import PeakRSS, release_free_memory


def _churn(count: int = 1200) -> None:
    """Allocate and touch `count` tensors of 256 KiB (small enough to come from the C heap), then free them.
    Without handing the freed pages back, a second call reuses them and its peak barely moves."""
    held = [torch.ones(2**16) for _ in range(count)]  # float32: 4 bytes each
    assert sum(t.numel() * 4 for t in held) == count * 2**18
    del held


def test_a_second_block_is_measured_like_the_first():
    if not release_free_memory():
        pytest.skip("no glibc malloc_trim on this system")
    with PeakRSS() as first:
        _churn()
    with PeakRSS() as second:
        _churn()
    if first.increase is None or second.increase is None:
        pytest.skip("/proc does not report the peak resident size here")
    mib = 2**20
    assert first.increase > 200 * mib
    assert second.increase > 200 * mib  # not hidden by the pages the first block freed but kept
