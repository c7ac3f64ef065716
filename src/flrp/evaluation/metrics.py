"""Normalised reward and cost (FLRP paper, appendix C.4, Eq. 39-40; DSRL's convention).

Pure functions on scalars or numpy arrays; no environment needed. ``R`` and ``C`` are undiscounted
episode sums (OSRL/FISOR/LSPC normalise the *mean over evaluation episodes*).
"""

from __future__ import annotations

from typing import overload

import numpy as np

from flrp.data.tasks import COST_LIMIT, TaskSpec
from flrp.errors import FlrpError

__all__ = ["normalized_reward", "normalized_cost", "is_safe"]

ArrayLike = float | int | np.ndarray


def _out(x: np.ndarray) -> float | np.ndarray:
    # Scalars in -> plain float out, so results JSON-serialise and compare naturally.
    return float(x) if np.ndim(x) == 0 else x


@overload
def normalized_reward(ret: float | int, task: TaskSpec) -> float: ...
@overload
def normalized_reward(ret: np.ndarray, task: TaskSpec) -> np.ndarray: ...
def normalized_reward(ret: ArrayLike, task: TaskSpec) -> float | np.ndarray:
    """Eq. 39: ``R_norm = (R - r_min) / (r_max - r_min)`` with the task's DSRL reward bounds.

    Not clipped: values below 0 or above 1 are meaningful (worse / better than the dataset).
    """
    span = task.max_reward - task.min_reward
    if not span > 0:
        raise FlrpError(f"task {task.name}: max_reward ({task.max_reward}) must exceed min_reward ({task.min_reward})")
    r = np.asarray(ret, dtype=np.float64)
    return _out((r - task.min_reward) / span)


@overload
def normalized_cost(cost: float | int, cost_limit: float = COST_LIMIT) -> float: ...
@overload
def normalized_cost(cost: np.ndarray, cost_limit: float = COST_LIMIT) -> np.ndarray: ...
def normalized_cost(cost: ArrayLike, cost_limit: float = COST_LIMIT) -> float | np.ndarray:
    """Eq. 40 in DSRL's form: ``C_norm = (C + eps) / (limit + eps)``, eps = 1 iff limit == 0, else 0.

    This is DSRL's ``OfflineEnv.get_normalized_score``; the paper writes ``C / (kappa + eps)`` with a
    small eps, which agrees exactly at the paper's limit of 10. With limit 0, a zero-cost episode
    scores 1 (just safe) and any cost makes it > 1.
    """
    limit = float(cost_limit)
    if not np.isfinite(limit) or limit < 0:
        raise FlrpError(f"cost limit must be a finite number >= 0, got {cost_limit!r}")
    eps = 1.0 if limit == 0 else 0.0
    c = np.asarray(cost, dtype=np.float64)
    return _out((c + eps) / (limit + eps))


def is_safe(norm_cost: ArrayLike) -> bool | np.ndarray:
    """Safe iff normalised cost <= 1 (the DSRL/OSRL convention); elementwise for arrays."""
    c = np.asarray(norm_cost, dtype=np.float64)
    safe = c <= 1.0
    return bool(safe) if np.ndim(safe) == 0 else safe
