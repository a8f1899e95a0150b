"""`python kbchild.py ARGS...`: run `kb ARGS...` in a child process, with test doubles for tiny-llama and a pause.

Environment (all set by the tests):
- `KBCHILD_WHEEL_SHA256`: the fake wheel's sha256, pinned in place of the real one;
- `KBCHILD_MARKS`: a directory; each conversion appends a line to `conversions`, and a pause creates
  `paused` and then waits (up to two minutes) for the signal the test sends (SIGUSR1 resumes);
- `KBCHILD_PAUSE`: where to pause: `convert` (inside the conversion, after a first file was written), or
  `module:attr` / `module:Class.attr`, optionally with `+after` to pause once the original returned.
The conversion stands in for the GGUF one: it saves a seeded random LLaMA and the byte tokenizer.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from pathlib import Path

MARKS = Path(os.environ["KBCHILD_MARKS"])
PAUSE = os.environ.get("KBCHILD_PAUSE", "")


def pause() -> None:
    """Wait for the test: SIGUSR1 resumes, any other signal takes its normal course."""
    resumed: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_a: resumed.append(1))
    (MARKS / "paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not resumed:
        if time.monotonic() > deadline:
            raise SystemExit("kbchild: paused but never signalled")
        time.sleep(0.05)


def fake_convert(gguf: Path, out: Path) -> None:
    from reference_impls.harness.models import byte_tokenizer, random_llama

    assert gguf.read_bytes().startswith(b"GGUF"), gguf
    with open(MARKS / "conversions", "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    (out / "config.json").write_text("{")  # a half-written file, as a real conversion would leave
    if PAUSE == "convert":
        pause()
    random_llama(seed=0).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)


def _wrap(spec: str) -> None:
    where, _, when = spec.partition("+")
    module_name, _, attr = where.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def paused(*args, **kwargs):
        if when != "after":
            pause()
        result = original(*args, **kwargs)
        if when == "after":
            pause()
        return result

    setattr(owner, name, paused)


def main() -> int:
    # Ctrl-C as an interactive shell delivers it: a background job of a non-interactive shell (`cmd &`, as some
    # CI runners start the suite) inherits SIGINT ignored, and this child would never see the test's SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from reference_impls.harness import smollm2

    smollm2.WHEEL_SHA256 = os.environ.get("KBCHILD_WHEEL_SHA256", smollm2.WHEEL_SHA256)
    smollm2._convert = fake_convert
    if PAUSE and PAUSE != "convert":
        _wrap(PAUSE)
    from kb_cli.main import main as kb_main

    return kb_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
