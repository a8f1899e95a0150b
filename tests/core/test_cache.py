"""The cache's building blocks without any model: manifests, the per-entry lock, `kb cache verify|clear`,
atomic writes that fail (a full disk) and output paths checked before any work."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kb import cache, fsutil
from kb.errors import KBError
from kb_cli.main import main


@pytest.fixture
def kb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KB_CACHE", str(root))
    return root


def _safetensors(path: Path, payload: bytes = b"\x01\x02\x03\x04" * 4) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(payload)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


def _entry(name: str = "models/demo") -> Path:
    with cache.publish(name, {"made": "by the test"}) as tmp:
        _safetensors(tmp / "model.safetensors")
        (tmp / "config.json").write_text('{"a": 1}')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.txt").write_text("x" * 100)
    return cache.entry_dir(name)


def _errors(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    return [line for line in lines if line.startswith("kb: error: ")]


def test_published_entry_lists_every_file_and_checks_clean(kb_cache):
    path = _entry()
    manifest = json.loads((path / cache.MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors", "sub/x.txt"]
    assert manifest["files"]["sub/x.txt"]["size"] == 100 and manifest["source"] == {"made": "by the test"}
    assert cache.problems(path) == [] and cache.problems(path, full=True) == []
    assert [e.name for e in cache.entries()] == ["models/demo"]
    assert list(path.parent.iterdir()) == [path]  # no temporary sibling left


def test_sizes_are_checked_on_every_load_and_hashes_only_in_full(kb_cache):
    path = _entry()
    config = path / "config.json"
    config.write_text('{"a": 2}')  # same size, other bytes: only a full check sees it
    assert cache.problems(path) == []
    assert cache.problems(path, full=True) == ["config.json does not match its sha256 in the manifest"]
    listed = json.loads((path / cache.MANIFEST).read_text())["files"]["model.safetensors"]["size"]
    with open(path / "model.safetensors", "r+b") as fh:
        fh.truncate(20)
    assert cache.problems(path) == [f"model.safetensors has 20 bytes, the manifest says {listed}"]
    (path / "sub" / "x.txt").unlink()
    assert "sub/x.txt is missing" in cache.problems(path)


def test_missing_or_malformed_manifest_is_a_problem(kb_cache):
    path = _entry()
    (path / cache.MANIFEST).write_text('{"format": 1, "files": {"config.json": {"size": "big"}}}')
    assert cache.problems(path) == [f"{cache.MANIFEST} is unreadable or malformed"]
    (path / cache.MANIFEST).unlink()
    assert "no kb-manifest.json" in cache.problems(path)[0]
    assert cache.problems(path.parent / "absent") == ["missing"]


def test_interrupted_publish_leaves_the_previous_entry(kb_cache):
    path = _entry()
    before = (path / cache.MANIFEST).read_text()
    with pytest.raises(KeyboardInterrupt), cache.publish("models/demo", {}) as tmp:
        (tmp / "config.json").write_text("{")
        raise KeyboardInterrupt
    assert (path / cache.MANIFEST).read_text() == before and cache.problems(path, full=True) == []
    assert fsutil.leftovers(path) == []


def test_safetensors_problem_tells_truncated_from_whole(tmp_path):
    good = tmp_path / "m.safetensors"
    _safetensors(good)
    assert cache.safetensors_problem(good) is None
    data = good.read_bytes()
    for cut, needle in [(len(data) - 3, "its header describes"), (30, "truncated"), (4, "too short")]:
        good.write_bytes(data[:cut])
        assert needle in cache.safetensors_problem(good)
    good.write_bytes(struct.pack("<Q", 5) + b"nojsn")
    assert "malformed header" in cache.safetensors_problem(good)


_HOLDER = """
import sys
from kb import cache
with cache.locked(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _hold_lock(name: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=os.environ.copy())  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_lock_makes_a_second_process_wait_and_says_so(kb_cache):
    child = _hold_lock("models/demo")
    messages: list[str] = []

    def log(message: str) -> None:  # called once the lock is found busy: let the holder go
        messages.append(message)
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()

    try:
        with (
            pytest.raises(KBError, match="in use by another kb process"),
            cache.locked("models/demo", wait=False),
        ):
            pass
        with cache.locked("models/demo", log=log):
            assert len(messages) == 1 and "waiting" in messages[0]
    finally:
        child.kill()
        child.wait()


def test_cli_verify_reports_each_entry_and_exits_1_on_damage(kb_cache, capsys):
    assert main(["cache", "verify"]) == 0
    assert "holds no entries" in capsys.readouterr().err
    _entry("models/demo")
    _entry("downloads/pkg-1")
    assert main(["cache", "verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "models/demo: ok (3 files, 0.0 MB, hashes match)",
        "downloads/pkg-1: ok (3 files, 0.0 MB, hashes match)",
    ]
    (kb_cache / "models" / "demo" / "config.json").write_text('{"a": 9}')
    (kb_cache / "models" / ".demo.abc.tmp").mkdir()
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert (
        "models/demo: damaged: config.json does not match its sha256" in out and "kb cache clear demo" in out
    )
    assert "models/.demo.abc.tmp: leftover" in out
    assert main(["cache", "verify", "pkg-1"]) == 0
    assert main(["cache", "verify", "nonesuch"]) == 2
    assert "no cache entry 'nonesuch'" in _errors(capsys.readouterr().err)[0]


def test_cli_verify_accepts_an_entry_written_before_manifests(kb_cache, capsys):
    path = _entry()
    (path / cache.MANIFEST).unlink()
    assert main(["cache", "verify"]) == 0
    assert "no manifest (written by an earlier kb)" in capsys.readouterr().out
    with open(path / "model.safetensors", "r+b") as fh:
        fh.truncate(40)
    assert main(["cache", "verify"]) == 1
    assert "damaged: no kb-manifest.json" in capsys.readouterr().out


def test_cli_clear_named_and_all_but_not_while_in_use(kb_cache, capsys):
    _entry("models/demo")
    _entry("downloads/pkg-1")
    (kb_cache / "links-v1.json").write_text("{}")
    (kb_cache / "unrelated.txt").write_text("not ours")
    child = _hold_lock("models/demo")
    try:
        assert main(["cache", "clear", "demo"]) == 2
        assert "in use by another kb process" in _errors(capsys.readouterr().err)[0]
        assert (kb_cache / "models" / "demo").is_dir()
    finally:
        child.kill()
        child.wait()
    assert main(["cache", "clear", "models/demo"]) == 0
    assert not (kb_cache / "models" / "demo").exists() and (kb_cache / "downloads" / "pkg-1").is_dir()
    assert main(["cache", "clear", "demo"]) == 0 and "nothing to clear" in capsys.readouterr().err
    (kb_cache / "downloads" / ".pkg-1.x.tmp").mkdir()
    assert main(["cache", "clear"]) == 0
    assert cache.entries() == [] and not (kb_cache / "links-v1.json").exists()
    assert not (kb_cache / "downloads" / ".pkg-1.x.tmp").exists()
    assert (kb_cache / "unrelated.txt").read_text() == "not ours"  # only what kb owns is removed


def test_cache_without_action_is_usage_error(kb_cache, capsys):
    assert main(["cache"]) == 2
    assert "choose an action" in _errors(capsys.readouterr().err)[0]


def test_failed_write_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", full)
    with pytest.raises(KBError, match=r"cannot write .*out\.json: No space left on device"):
        fsutil.write_text_atomic(target, "{}")
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path, monkeypatch):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert (
        fsutil.check_writable(tmp_path / "new" / "deeper" / "r.json", what="--json")
        == tmp_path / "new" / "deeper" / "r.json"
    )
    assert not (tmp_path / "new").exists()  # nothing created
    with pytest.raises(KBError, match=r"file\.txt is a file, not a directory"):
        fsutil.check_writable(afile / "r.json", what="--json")
    with pytest.raises(KBError, match="is a directory, not a file"):
        fsutil.check_writable(tmp_path, what="--json")
    with pytest.raises(KBError, match="is a file, not a directory"):
        fsutil.check_writable(afile, what="--save", directory=True)

    def refuse(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", refuse)
    with pytest.raises(KBError, match="is not writable"):
        fsutil.check_writable(tmp_path / "r.json", what="--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path):
    old = os.umask(0o022)
    try:
        fsutil.write_text_atomic(tmp_path / "page.html", "<p>hi</p>")
        with fsutil.atomic_directory(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
        os.umask(0o077)
        fsutil.write_text_atomic(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "page.html").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755  # mkdtemp alone gives 0700
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600  # a strict umask is respected
