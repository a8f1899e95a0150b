"""Writing result records: library versions, and the atomic JSON writer (the model is `kb.results`)."""

from __future__ import annotations

import platform
from pathlib import Path

from kb.fsutil import write_text_atomic
from kb.results import Reproduction, Sweep


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


def to_json(record: Reproduction | Sweep) -> str:
    return record.model_dump_json(indent=2) + "\n"


def write_report(path: Path, record: Reproduction | Sweep) -> None:
    """Write atomically: readers (and Ctrl-C) never see a partial file."""
    write_text_atomic(path, to_json(record))
