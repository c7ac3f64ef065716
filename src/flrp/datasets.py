"""Moved: kept so ``from flrp.datasets import ...`` keeps working.

``resolve_dataset``/``TOY_NAMES``: :mod:`flrp.training.datasets`; ``toy_dataset_path``/``data_dir``:
:mod:`flrp.collect.toy`; ``task_dims``/``check_task_fits``: :mod:`flrp.envs.dims`;
``infer_task``: the loader sets ``OfflineDataset.task`` (:func:`flrp.data.tasks.task_of_file_name`).
"""

from __future__ import annotations

from pathlib import Path

from flrp.collect.toy import data_dir, toy_dataset_path
from flrp.data.tasks import TaskSpec
from flrp.envs.dims import check_task_fits, task_dims
from flrp.training.datasets import TOY_NAMES, resolve_dataset

__all__ = ["TOY_NAMES", "check_task_fits", "data_dir", "infer_task", "resolve_dataset", "task_dims", "toy_dataset_path"]


def infer_task(path: Path) -> TaskSpec | None:
    """The task a DSRL-format file names (its ``task`` attribute, else a DSRL-style name)."""
    from flrp.data.hdf5 import load_dsrl_hdf5
    from flrp.data.tasks import get_task

    task = load_dsrl_hdf5(path).task
    return get_task(task) if task else None
