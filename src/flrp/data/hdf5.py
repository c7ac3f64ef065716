"""Read and write DSRL-format HDF5 files from a local path (no simulator, no download).

Format (DSRL ``dsrl/offline_env.py:get_dataset`` and ``scripts/process_dataset.py``): flat
datasets ``observations`` (N, obs), ``next_observations`` (N, obs), ``actions`` (N, act),
``rewards`` / ``costs`` / ``terminals`` / ``timeouts`` (N,) or (N, 1). Files are gzip-compressed.
Every check failure raises :class:`FlrpError` with one line naming the file and the key.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import get_task, task_of_file_name
from flrp.errors import FlrpError
from flrp.files import atomic_path

__all__ = ["REQUIRED_KEYS", "load_dsrl_hdf5", "write_dsrl_hdf5", "validate_arrays"]

REQUIRED_KEYS = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "costs",
    "terminals",
    "timeouts",
)
_MATRIX_KEYS = ("observations", "next_observations", "actions")
_VECTOR_KEYS = ("rewards", "costs", "terminals", "timeouts")


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check keys, ranks, lengths and finiteness; return float32 matrices and (N,) vectors."""
    out: dict[str, np.ndarray] = {}
    for key in REQUIRED_KEYS:
        if key not in arrays:
            raise FlrpError(f"{source}: missing key '{key}' (DSRL format needs {', '.join(REQUIRED_KEYS)})")
        arr = np.asarray(arrays[key])
        if arr.dtype.kind not in "fiub":
            raise FlrpError(f"{source}: key '{key}' has non-numeric dtype {arr.dtype}")
        if key in _MATRIX_KEYS:
            if arr.ndim != 2:
                raise FlrpError(f"{source}: key '{key}' must have rank 2 (N, dim), got shape {arr.shape}")
            arr = arr.astype(np.float32, copy=False)
        else:
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise FlrpError(f"{source}: key '{key}' must have rank 1 (N,) or shape (N, 1), got shape {arr.shape}")
            arr = arr.astype(np.float32 if key in ("rewards", "costs") else bool, copy=False)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise FlrpError(f"{source}: key '{key}' has {bad} NaN/inf value(s)")
        out[key] = arr
    n = len(out["observations"])
    if n == 0:
        raise FlrpError(f"{source}: key 'observations' is empty (the dataset has no transitions)")
    for key in REQUIRED_KEYS:
        if len(out[key]) != n:
            raise FlrpError(f"{source}: key '{key}' has {len(out[key])} rows, 'observations' has {n}")
    if out["next_observations"].shape[1] != out["observations"].shape[1]:
        raise FlrpError(
            f"{source}: key 'next_observations' has width {out['next_observations'].shape[1]}, "
            f"'observations' has {out['observations'].shape[1]}"
        )
    return out


def load_dsrl_hdf5(path: str | os.PathLike[str]) -> OfflineDataset:
    """Load and validate a DSRL-format HDF5 file. Extra keys are ignored.

    The dataset's ``task`` is the file's ``task`` attribute (files flrp writes), else the task of
    a DSRL-style file name (:func:`flrp.data.tasks.task_of_file_name`), else None."""
    import h5py

    p = Path(path)
    if not p.exists():
        raise FlrpError(f"{p}: no such file")
    if p.is_dir():
        raise FlrpError(f"{p}: is a directory, expected a DSRL .hdf5 file")
    if p.stat().st_size == 0:
        raise FlrpError(f"{p}: file is empty")
    arrays: dict[str, np.ndarray] = {}
    task_attr = None
    try:
        with h5py.File(p, "r") as f:
            task_attr = f.attrs.get("task")
            for key in REQUIRED_KEYS:
                if key not in f:
                    raise FlrpError(f"{p}: missing key '{key}' (DSRL format needs {', '.join(REQUIRED_KEYS)})")
                obj = f[key]
                if not isinstance(obj, h5py.Dataset):
                    raise FlrpError(f"{p}: key '{key}' is a group, expected a dataset")
                try:
                    arrays[key] = obj[()]
                except (OSError, ValueError, KeyError) as exc:
                    raise FlrpError(f"{p}: key '{key}' is unreadable (truncated or corrupt file?): {exc}") from None
    except FlrpError:
        raise
    except (OSError, ValueError) as exc:
        raise FlrpError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {str(exc).splitlines()[0]}") from None
    return OfflineDataset(**validate_arrays(arrays, str(p)), source=str(p), task=_task_name(task_attr, p))


def _task_name(attr: object, path: Path) -> str | None:
    """The registry name of the file's task attribute or DSRL-style name (None if neither is known)."""
    if attr:
        with contextlib.suppress(FlrpError):
            return get_task(attr.decode() if isinstance(attr, bytes) else str(attr)).name
    task = task_of_file_name(path.name)
    return task.name if task is not None else None


def write_dsrl_hdf5(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, str | int | float] | None = None,
) -> Path:
    """Validate ``arrays`` and write them gzip-compressed to ``path`` atomically (temp file + rename)."""
    import h5py

    clean = validate_arrays(arrays, str(path))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key in REQUIRED_KEYS:
                f.create_dataset(key, data=clean[key], compression="gzip", compression_opts=4)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
    return Path(path)
