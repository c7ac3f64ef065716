"""Data conventions the baselines take from their original code (issue 14), in one place.

* :func:`dataset_task`: the benchmark task of a dataset, for the per-task constants the original
  configs hold (LSPC's latent clamp, CDT's targets, FISOR's reward scale). The task comes with
  the data (``OfflineDataset.task``: set by the loader from the file, or by the caller, e.g.
  ``flrp train --task``); in-memory data has none unless given one.
* :func:`bootstrap_stops`: where a TD backup stops. flrp's convention is terminals only (a
  timeout truncates, it does not absorb); OSRL, FISOR and LSPC stop at ``terminals | timeouts``:
  OSRL ``osrl/common/dataset.py:815`` (``TransitionDataset``: ``done = terminals | timeouts``),
  FISOR ``jaxrl5/data/dsrl_datasets.py`` (``dones = terminals | timeouts``, ``masks = 1 - dones``),
  LSPC ``lspc_iql.py:65`` (``dones = terminals + timeouts``; a sum, which equals the OR unless a
  step carries both flags, where LSPC's mask would be -1).
"""

from __future__ import annotations

import numpy as np

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import TaskSpec, get_task

__all__ = ["OSRL_SUITE_STEPS", "dataset_task", "bootstrap_stops"]

# OSRL's per-suite training budget where it differs from its 100k default: every MetaDrive config
# of BC, BCQ-L, CPQ and CDT sets update_steps = 200_000 (bc_configs.py:250, bcql_configs.py and
# cpq_configs.py's MetaDrive entries, cdt_configs.py:572 and on). Their Algorithm.suite_steps.
OSRL_SUITE_STEPS: dict[str, int] = {"metadrive": 200_000}


def dataset_task(ds: OfflineDataset) -> TaskSpec | None:
    """The task ``ds`` carries, or None."""
    return get_task(ds.task) if ds.task else None


def bootstrap_stops(ds: OfflineDataset, timeouts_terminal: bool) -> np.ndarray:
    """(N,) float32, 1 where the backup must not bootstrap: terminals, plus timeouts if asked."""
    stop = ds.terminals > 0
    if timeouts_terminal:
        stop = stop | (ds.timeouts > 0)
    return stop.astype(np.float32)
