"""Writing result records: library versions, and the atomic JSON writer (the model is `kb.results`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

from kb.fsutil import write_text_atomic
from kb.results import Machine, PastVerdict, Reproduction, Sweep


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


# The vector extensions that change which kernels run (and so the last digits of a sum), as /proc/cpuinfo names them.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")  # fmt: skip


def _cpuinfo() -> tuple[str, list[str]]:
    """(model name, the vector extensions of `VECTOR_FLAGS` present) from /proc/cpuinfo, else what Python knows."""
    name, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:  # x86 names them flags, arm features
                    flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor(), [f for f in VECTOR_FLAGS if f in flags]


def _blas() -> str:
    """The BLAS/LAPACK torch was built with, from its build configuration (e.g. "mkl", "open")."""
    import torch

    found = {}
    for line in torch.__config__.show().splitlines():
        for key in ("BLAS_INFO", "LAPACK_INFO"):
            if f"{key}=" in line:
                found[key] = line.split(f"{key}=", 1)[1].split(",", 1)[0].strip()
    return ", ".join(f"{k.split('_')[0].lower()} {v}" for k, v in found.items())


def machine(threads: int, device: str) -> Machine:
    import torch

    cpu, flags = _cpuinfo()
    return Machine(
        system=f"{platform.system()} {platform.release().split('-')[0]} {platform.machine()}",
        cpu=cpu, cpu_flags=flags, torch_cpu=torch.backends.cpu.get_cpu_capability(), blas=_blas(),
        cores=len(os.sched_getaffinity(0)), threads=threads, device=device,
    )  # fmt: skip


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def to_json(record: Reproduction | Sweep) -> str:
    return record.model_dump_json(indent=2) + "\n"


def keep_history(record: Reproduction, path: Path) -> Reproduction:
    """`record` with the verdict of the result it replaces at `path` appended to its claim's history (and that
    result's own history before it). Read as plain JSON, so a result of an older schema still hands its verdict
    on (schema 2 said `holds: true/false`); a file that is missing or unreadable hands on nothing."""
    import json

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        claim = old["claim"]
        state = str(claim.get("verdict") or ("holds" if claim["holds"] else "does not hold"))
        past = [PastVerdict.model_validate(p) for p in claim.get("history", [])]
        past.append(PastVerdict.model_validate({"verdict": state, "reason": claim.get("reason", ""),
                                                "produced": old.get("produced"),
                                                "code_hash": (old.get("code") or {}).get("hash")}))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return record
    return record.model_copy(update={"claim": record.claim.model_copy(update={"history": past})})


def write_report(path: Path, record: Reproduction | Sweep) -> None:
    """Write atomically: readers (and Ctrl-C) never see a partial file."""
    write_text_atomic(path, to_json(record))
