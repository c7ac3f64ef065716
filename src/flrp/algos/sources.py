"""Data conventions the baselines take from their original code (issue 14), in one place.

* :func:`dataset_task`: the benchmark task of a dataset, for the per-task constants the original
  configs hold (LSPC's latent clamp, CDT's targets, FISOR's reward scale). The algorithms receive
  only the dataset, so the task is read from its file (``flrp.datasets.infer_task``: the file's
  ``task`` attribute, else a DSRL-style name); in-memory data has none.
* :func:`bootstrap_stops`: where a TD backup stops. flrp's convention is terminals only (a
  timeout truncates, it does not absorb); OSRL, FISOR and LSPC stop at ``terminals | timeouts``:
  OSRL ``osrl/common/dataset.py:815`` (``TransitionDataset``: ``done = terminals | timeouts``),
  FISOR ``jaxrl5/data/dsrl_datasets.py`` (``dones = terminals | timeouts``, ``masks = 1 - dones``),
  LSPC ``lspc_iql.py:65`` (``dones = terminals + timeouts``; a sum, which equals the OR unless a
  step carries both flags, where LSPC's mask would be -1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import TaskSpec

__all__ = ["dataset_task", "bootstrap_stops"]


def dataset_task(ds: OfflineDataset) -> TaskSpec | None:
    """The task of ``ds`` read from its file, or None (in-memory data, unknown file)."""
    from flrp.datasets import infer_task

    if not ds.source or ds.source.startswith("<"):
        return None
    return infer_task(Path(ds.source))


def bootstrap_stops(ds: OfflineDataset, timeouts_terminal: bool) -> np.ndarray:
    """(N,) float32, 1 where the backup must not bootstrap: terminals, plus timeouts if asked."""
    stop = ds.terminals > 0
    if timeouts_terminal:
        stop = stop | (ds.timeouts > 0)
    return stop.astype(np.float32)
