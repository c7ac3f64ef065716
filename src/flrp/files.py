"""Atomic file output: every file the package writes goes to a temp file first, then is renamed.

A run that dies mid-write leaves the previous file (or nothing) behind, never half a file. Every
file-system failure (read-only, no space, a path component that is a file) becomes one
:class:`FlrpError` line naming the path and what to do; the temp file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from flrp.errors import FlrpError

__all__ = ["atomic_path", "write_bytes", "write_json", "write_text", "append_text", "read_json", "fs_error", "ensure_dir", "clean_temp_files"]

# Names atomic_path gives its temp files: ".<name>.<mkstemp's 8 random characters>.tmp".
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")

_HINTS = {
    errno.ENOSPC: "free some space or choose another --out",
    errno.EDQUOT: "free some space or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "check its permissions or choose another --out",
    errno.EPERM: "check its permissions or choose another --out",
    errno.ENOTDIR: "a component of the path is a file, not a directory; choose another path",
    errno.EEXIST: "a file of that name is in the way; choose another path",
    errno.EISDIR: "it is a directory; name a file",
}


def fs_error(path: str | os.PathLike[str], exc: OSError, action: str = "cannot write") -> FlrpError:
    """One line for a failed file operation: path, what happened, what to do."""
    reason = exc.strerror or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0, "")
    return FlrpError(f"{path}: {action} ({reason}){'; ' + hint if hint else ''}")


def _write_all(fd: int, data: bytes) -> None:
    """The one place bytes reach a file (tests inject disk-full faults here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def ensure_dir(path: str | os.PathLike[str], flag: str = "") -> Path:
    """Create directory ``path`` (and parents); one line (naming ``flag``) if it is a file or cannot be created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FlrpError(f"{flag + ' ' if flag else ''}{p}: is a file, not a directory; choose another {flag or 'path'}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(f"{flag + ' ' if flag else ''}{p}", exc, "cannot create the directory") from None
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, on error delete it."""
    target = Path(path)
    ensure_dir(target.parent)
    tmp_path: Path | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        if isinstance(exc, OSError):
            raise fs_error(target, exc) from None
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` (e.g. a log line); a killed writer leaves at most a partial last line."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _write_all(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise fs_error(path, exc) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file the package wrote; one line if it is unreadable or garbled."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise fs_error(path, exc, "cannot read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FlrpError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}); fix or delete it") from None


def clean_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files that killed writers left in ``directory`` (call only while no one writes there)."""
    d = Path(directory)
    gone = [p for p in d.iterdir() if TEMP_FILE.match(p.name) and p.is_file()] if d.is_dir() else []
    for p in gone:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return gone
