"""Shared fixtures: a small synthetic DSRL-format dataset and fast algorithm configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def synthetic_arrays(n_episodes: int = 20, length: int = 25, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[length - 1 :: length] = True
    return {
        "observations": obs,
        "next_observations": (obs + 0.1 * rng.normal(size=obs.shape)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "costs": (rng.uniform(size=n) < 0.2).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": timeouts,
    }


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    return synthetic_arrays()


@pytest.fixture
def dataset(arrays):
    from flrp.data.hdf5 import validate_arrays
    from flrp.data.dataset import OfflineDataset

    return OfflineDataset(**validate_arrays(arrays, "synthetic"))
