"""Atomic writes: a reader (or a crash) never sees a half-written file or directory.

Also the up-front check every command runs on its output paths (`check_writable`), so a path that cannot
be written is a one-line error before any heavy work, not a traceback at the end of it. Write failures
(a full disk, a read-only directory) become `KBError`s naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import KBError


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, *, directory: bool) -> None:
    """Give a temporary file (0600) or directory (0700) the mode a plain write would have given it (0644 /
    0755 under the usual umask), so that a published site or a saved model is readable like any other."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8, LF) to `path` by renaming a finished temporary file over it."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling; an `OSError` becomes a one-line `KBError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise KBError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _usual_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise KBError(f"cannot write {path}: {_reason(exc)}") from None
        raise


@contextlib.contextmanager
def atomic_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it becomes `target`.

    On any exception (Ctrl-C and SIGTERM included, see `kb_cli.main`) the temporary directory is removed and
    `target` is untouched. With `replace=False` an existing `target` is an error raised before any work
    is done. Failing to create or publish the directory is a `KBError` naming `target`; errors raised by
    the caller's block pass through unchanged.
    """
    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} already exists")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        _usual_mode(tmp, directory=True)
    except OSError as exc:
        raise KBError(f"cannot write {target}: {_reason(exc)}") from None
    try:
        yield tmp
        try:
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            raise KBError(f"cannot write {target}: {_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftovers(target: Path) -> list[Path]:
    """Temporary siblings of `target` that an atomic write killed outright (SIGKILL, power loss) left behind."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = list(target.parent.glob(f".{target.name}.*.tmp"))
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        found.append(old)
    return sorted(found)


def remove(path: Path) -> None:
    """Delete a file or a directory tree (missing is fine)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_writable(path: Path, *, what: str, directory: bool = False) -> Path:
    """Refuse, in one line, an output path that cannot be written; create nothing.

    `path` may not exist yet (missing parent directories are created when the output is written), but the
    nearest existing ancestor must be a directory in which a file can be created: this is tried with a
    probe file that is removed at once, because permission bits alone do not say (root, read-only mounts).
    An existing `path` must be of the right type: a directory for `directory=True`, a file otherwise.
    Returns the absolute path.
    """
    path = Path(path).expanduser().absolute()
    if path.exists():
        if directory and not path.is_dir():
            raise KBError(f"{what} {path} is a file, not a directory")
        if not directory and path.is_dir():
            raise KBError(f"{what} {path} is a directory, not a file")
    base = path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise KBError(f"cannot write {what} {path}: {base} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kb-probe-", dir=base)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise KBError(f"cannot write {what} {path}: {base} is not writable ({_reason(exc)})") from None
        raise KBError(f"cannot write {what} {path}: {base}: {_reason(exc)}") from None
    os.close(fd)
    os.unlink(probe)
    return path
