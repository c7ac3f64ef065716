"""The run-directory contract (README "Run directories"), in one place for the library and the CLI.

* One writer at a time: ``run_lock`` holds ``<run>/.lock`` (``filelock``, non-blocking, re-entrant
  within a process); a second process fails at once, naming the lock file and the holder's pid.
* Temp files that killed writers left behind are deleted when a run starts (under the lock).
* A fresh start (no checkpoint to resume) never appends to or deletes a previous run's files: it
  moves them aside as ``NAME.old-N``; a finished ``model.pt`` is moved only with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from flrp.errors import FlrpError
from flrp.files import clean_temp_files, ensure_dir, fs_error

__all__ = ["LOCK_NAME", "RUN_FILES", "hold_lock", "run_lock", "start_fresh", "clean_temp_files"]

LOCK_NAME = ".lock"
# Checkpoint cadence defaults (fit, TrainJob, flrp train): every CHECKPOINT_EVERY steps, and also at
# the first step CHECKPOINT_MINUTES of wall time after the last checkpoint.
CHECKPOINT_EVERY = 5000
CHECKPOINT_MINUTES = 10.0
# Files of one run; a fresh start moves those present aside together, with one suffix ".old-N".
RUN_FILES = ("model.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "config.json", "run.json", "eval.json", "eval.md", "timing.json")


def _record_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(lock_file: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(lock_file.read_text().split()[0])}"
    return "another process"


@contextlib.contextmanager
def hold_lock(path: Path, timeout: float, busy: str, action: str = "cannot lock", reentrant: bool = False) -> Iterator[None]:
    """Hold the file lock ``path`` (``filelock``; the holder's pid written in it) for the block,
    waiting up to ``timeout`` seconds (0: fail at once). ``reentrant``: one lock object per path
    in this process, so a nested hold of the same path succeeds.

    Raises:
        FlrpError: ``"<path>: <busy>"`` with ``{holder}`` in ``busy`` replaced by the holder's pid
            when the lock stays held; ``"<path>: <action>: ..."`` when it cannot be made at all.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=timeout, is_singleton=reentrant, on_acquired=_record_pid)
    try:
        lock.acquire()
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        raise FlrpError(f"{path}: {busy.format(holder=_holder(path))}") from None
    except OSError as exc:
        raise fs_error(path, exc, action) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def run_lock(run: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``<run>/.lock`` for the block (creating ``run``); one line if another process holds it."""
    path = ensure_dir(run) / LOCK_NAME
    with hold_lock(path, 0, "the run directory is in use by {holder}; wait for it to finish or choose another --out", "cannot lock the run directory", reentrant=True):
        _probe_writable(Path(run))
        yield Path(run)


def _probe_writable(d: Path) -> None:
    """Fail now, not after a long training or evaluation, if nothing can be written in ``d``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise fs_error(d, exc) from None


def start_fresh(run: str | os.PathLike[str], overwrite: bool = False) -> int | None:
    """Prepare ``run`` for a run from step 0: move the previous run's files aside.

    Returns the suffix number used (``None``: nothing to move). Refuses a directory holding a
    finished ``model.pt`` unless ``overwrite``.
    """
    d = Path(run)
    model = d / "model.pt"
    if model.exists() and not overwrite:
        raise FlrpError(f"{model}: the run directory holds a trained model and no checkpoint to resume; pass --overwrite to start over (the old files are kept as *.old-N) or choose another --out")
    present = [name for name in RUN_FILES if (d / name).exists()]
    if not present:
        return None
    n = 1
    while any((d / f"{name}.old-{n}").exists() for name in RUN_FILES):
        n += 1
    for name in present:
        try:
            os.replace(d / name, d / f"{name}.old-{n}")
        except OSError as exc:
            raise fs_error(d / name, exc, "cannot move aside") from None
    return n
