"""Training memory, measured two ways: the gradient tensors a step holds, and the process's peak resident size.

- `grad_bytes(model)`: bytes of every `.grad` tensor held on the model's parameters at the moment of the call
  (call it after `backward`, before the optimiser clears them: that is when a step holds the most). Exact and
  deterministic; it is the part of training memory a method's choice of gradients decides.
- `PeakRSS`: the growth of the process's peak resident set size (Linux `VmHWM`) over a block, after resetting
  the peak with `/proc/self/clear_refs` so earlier work in the same process does not count. It sees
  everything (activations, gradients, optimiser state, allocator slack); it is noisy at the level of a few
  MB and is `None` where `/proc` does not offer it (not Linux, or a kernel that refuses the reset).
  Before the reset it hands the C allocator's free pages back to the system (glibc `malloc_trim`): memory
  an earlier block freed but kept resident would otherwise be reused without counting, so of two blocks
  measured one after the other the first would look far hungrier than the second only for going first.
  The block runs with the C library's default settings (`kb.allocator.defaults`), not the tuned ones the
  commands use for speed, which keep freed blocks resident and would count the heap's slack.
`tracemalloc` is no use here: it sees Python allocations only, not torch's tensors.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from types import TracebackType

from torch import nn

from kb import allocator

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def grad_bytes(model: nn.Module) -> int:
    """Bytes of the gradients currently held by the model's parameters (each tensor once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if p.grad is not None:
            seen[id(p)] = p.grad.numel() * p.grad.element_size()
    return sum(seen.values())


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def release_free_memory() -> bool:
    """Collect garbage and return the C heap's free pages to the system; False where there is no glibc."""
    gc.collect()
    return allocator.release()


class PeakRSS:
    """`with PeakRSS() as peak: ...`; then `peak.increase` is the peak RSS growth in bytes (or None)."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.increase: int | None = None
        self._settings = allocator.defaults()

    def __enter__(self) -> PeakRSS:
        self._settings.__enter__()
        release_free_memory()
        try:
            _CLEAR.write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            return self
        self.start = _status_kib("VmRSS")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        peak = _status_kib("VmHWM")
        self._settings.__exit__(kind, value, tb)
        if self.start is not None and peak is not None:
            self.increase = max(0, peak - self.start) * 1024
