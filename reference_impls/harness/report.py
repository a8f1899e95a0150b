"""Writing result records: library versions, and the atomic JSON writer (the model is `kb.results`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

from kb.fsutil import write_text_atomic
from kb.results import Machine, Reproduction, Sweep


def versions() -> dict[str, str]:
    import torch
    import transformers

    from kb import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kb": __version__,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(threads: int, device: str) -> Machine:
    return Machine(
        system=f"{platform.system()} {platform.release().split('-')[0]} {platform.machine()}",
        cpu=_cpu_name(), cores=len(os.sched_getaffinity(0)), threads=threads, device=device,
    )  # fmt: skip


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def to_json(record: Reproduction | Sweep) -> str:
    return record.model_dump_json(indent=2) + "\n"


def write_report(path: Path, record: Reproduction | Sweep) -> None:
    """Write atomically: readers (and Ctrl-C) never see a partial file."""
    write_text_atomic(path, to_json(record))
