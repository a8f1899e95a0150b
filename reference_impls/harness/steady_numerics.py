"""Fixed numerics: the same float bits from every x86-64 machine, for fingerprints.

A fingerprint (`harness.fingerprint`) prunes a small random model, and pruning is a chain of selections: a
last-bit change in one score can swap which weight of a row is removed, and that swap moves the perplexity in
its fourth digit. The last bits depend on the machine, not the code: MKL picks its matrix-product kernels by
CPU vendor and instruction set (an AMD EPYC, an Intel Xeon with AMX and an AVX2-only CPU gave three different
books for the same code), and ATen picks its vector kernels by instruction set. So a fingerprint is computed
in a fresh interpreter started with

- `MKL_CBWR=COMPATIBLE`: MKL's reproducible branch, the only one it promises on CPUs of any vendor;
- `ATEN_CPU_CAPABILITY=avx2` and `ONEDNN_MAX_CPU_ISA=AVX2`: ATen's and oneDNN's AVX2 kernels, which every
  x86-64 CPU here has, instead of AVX-512 on some machines and AVX2 on others;
- one thread (`OMP_NUM_THREADS`, `MKL_NUM_THREADS`): the order of every sum is fixed.

These must be set before torch loads MKL, hence the fresh interpreter (`run_kb`, `measure_record`); real
runs do not use them: those keep the fastest kernels, and their results record the machine they ran on.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_X86 = platform.machine().lower() in ("x86_64", "amd64")
STEADY_ENV: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    **({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"} if _X86 else {}),
}


def is_steady() -> bool:
    """Whether this interpreter started with the fixed numerics."""
    return all(os.environ.get(k) == v for k, v in STEADY_ENV.items())


def _env() -> dict[str, str]:
    env = {**os.environ, **STEADY_ENV}
    root = str(Path(__file__).resolve().parents[2])  # the child imports this checkout, whatever its cwd
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _pump(source: IO[str], sink: Any) -> None:
    for line in source:
        sink.write(line)
        sink.flush()


def _run(code: str, args: Sequence[str]) -> int:
    """Run `python -c code args...` with the fixed numerics, its output passed on line by line as it comes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out = threading.Thread(target=_pump, args=(proc.stdout, sys.stdout), daemon=True)
    out.start()
    try:
        _pump(proc.stderr, sys.stderr)
        out.join()
        return proc.wait()
    except BaseException:  # Ctrl-C or a signal: the child must not outlive us
        proc.kill()
        proc.wait()
        raise


def run_kb(argv: Sequence[str]) -> int:
    """`kb ARGV` in a fresh interpreter with the fixed numerics; its exit status."""
    return _run("import sys; from kb_cli.main import main; sys.exit(main(sys.argv[1:]))", argv)


_MEASURE = """
import sys
from reference_impls.harness.steady_numerics import _measure_file
_measure_file(sys.argv[1], sys.argv[2])
"""


def measure_record(record: Any) -> tuple[Any, dict[str, Any]]:
    """`fingerprint.measure` of a result on its own small model, computed with the fixed numerics (in this
    interpreter when it already has them, in a fresh one otherwise)."""
    from kb.errors import KBError

    from .fingerprint import measure, small_model

    if is_steady():
        with small_model() as model:
            return measure(record, model)
    from kb.results import Fingerprint

    with tempfile.TemporaryDirectory(prefix="kb-steady-") as tmp:
        source, answer = Path(tmp) / "record.json", Path(tmp) / "fingerprint.json"
        source.write_text(json.dumps({"sweep": _is_sweep(record), "record": record.model_dump(mode="json")}),
                          encoding="utf-8")  # fmt: skip
        rc = _run(_MEASURE, [str(source), str(answer)])
        if rc != 0 or not answer.is_file():
            raise KBError(
                f"fingerprinting with fixed numerics failed (exit {rc}); its error is printed above"
            )
        data = json.loads(answer.read_text(encoding="utf-8"))
    return Fingerprint.model_validate(data["fingerprint"]), data["payload"]


def _is_sweep(record: Any) -> bool:
    from kb.results import Sweep

    return isinstance(record, Sweep)


def _measure_file(source: str, answer: str) -> None:
    """The child's side of `measure_record`: read a result, write its fingerprint and payload."""
    from kb.fsutil import write_text_atomic
    from kb.results import Reproduction, Sweep

    data = json.loads(Path(source).read_text(encoding="utf-8"))
    record = (Sweep if data["sweep"] else Reproduction).model_validate(data["record"])
    fp, payload = measure_record(record)  # this interpreter has the fixed numerics: measured here
    write_text_atomic(
        Path(answer), json.dumps({"fingerprint": fp.model_dump(mode="json"), "payload": payload})
    )
