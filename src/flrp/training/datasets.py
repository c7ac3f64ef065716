"""A ``--dataset`` argument as data and its task: a local DSRL HDF5 path, or ``toy``.

``toy`` is the package's embedded dataset: generated deterministically from a fixed seed on first
use (about a second, :func:`flrp.collect.toy.toy_dataset_path`) and cached under
``$FLRP_DATA_DIR`` (default ``~/.cache/flrp/datasets``). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flrp.collect.toy import data_dir, toy_dataset_path
from flrp.data.dataset import OfflineDataset
from flrp.data.hdf5 import load_dsrl_hdf5
from flrp.data.tasks import TaskSpec, get_task

__all__ = ["TOY_NAMES", "data_dir", "resolve_dataset", "toy_dataset_path"]

# The spellings of the embedded dataset (``--dataset toy``), everywhere one is accepted.
TOY_NAMES = ("toy", "toyhazard", "toyhazard-v0")


def resolve_dataset(arg: str, task: str | None = None) -> tuple[OfflineDataset, TaskSpec | None]:
    """``(dataset, task)`` of ``--dataset ARG [--task NAME]``. The task is ``NAME`` if given, else
    the one the file names (its ``task`` attribute or DSRL-style name), else None; the dataset
    carries it (``OfflineDataset.task``) down to the algorithm."""
    if arg.lower() in TOY_NAMES:
        ds = load_dsrl_hdf5(toy_dataset_path())
        spec: TaskSpec | None = get_task(task or "ToyHazard")
    else:
        ds = load_dsrl_hdf5(Path(arg).expanduser())
        spec = get_task(task) if task else (get_task(ds.task) if ds.task else None)
    if spec is not None and ds.task != spec.name:
        ds = dataclasses.replace(ds, task=spec.name)
    return ds, spec
