"""What an algorithm needs to know about its data, fitted once and saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flrp.data.dataset import OfflineDataset

__all__ = ["DataSpec"]


@dataclass
class DataSpec:
    """Shapes plus the observation/action normalisation fitted on the training data.

    Observations are standardised with the dataset mean/std (d3rlpy-style; saved with the model so
    a loaded policy normalises its own inputs). Actions are mapped to [-1, 1] by a symmetric bound:
    1 for DSRL data (all its action spaces are [-1, 1]), larger only if the data exceeds it.
    """

    obs_dim: int
    act_dim: int
    obs_mean: list[float]
    obs_std: list[float]
    action_bound: float
    max_episode_steps: int
    episode_return_min: float
    episode_return_max: float

    @classmethod
    def from_dataset(cls, ds: OfflineDataset, normalize_obs: bool = True) -> "DataSpec":
        obs = ds.observations.astype(np.float64)
        mean = obs.mean(0) if normalize_obs else np.zeros(ds.obs_dim)
        std = obs.std(0) + 1e-3 if normalize_obs else np.ones(ds.obs_dim)
        bound = max(1.0, float(np.abs(ds.actions).max()))
        rets = ds.episode_returns()
        return cls(
            obs_dim=ds.obs_dim,
            act_dim=ds.act_dim,
            obs_mean=[float(x) for x in mean],
            obs_std=[float(x) for x in std],
            action_bound=bound,
            max_episode_steps=int(ds.episode_lengths().max()),
            episode_return_min=float(rets.min()),
            episode_return_max=float(rets.max()),
        )

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - np.asarray(self.obs_mean)) / np.asarray(self.obs_std)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
