"""An offline dataset of transitions with its episode structure.

Episodes end at ``terminals | timeouts`` (DSRL's ``pre_process_data`` split); only
``terminals`` stop bootstrapping (a timeout is a truncation, not an absorbing state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OfflineDataset"]


@dataclass(frozen=True)
class OfflineDataset:
    """Flat transition arrays in DSRL's layout. Arrays are never mutated.

    Shapes: observations/next_observations (N, obs_dim), actions (N, act_dim),
    rewards/costs/terminals/timeouts (N,).
    """

    observations: np.ndarray
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    source: str = "<memory>"
    # Registry name of the benchmark task the data is from, when known (the file's ``task``
    # attribute or DSRL-style name, or the task a caller names); algorithms with per-task
    # constants read it here.
    task: str | None = None
    _episode_ends: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ends = np.flatnonzero(np.logical_or(self.terminals > 0, self.timeouts > 0))
        n = len(self.rewards)
        if n and (len(ends) == 0 or ends[-1] != n - 1):
            # A trailing partial episode (the file was cut mid-episode) still counts.
            ends = np.append(ends, n - 1)
        object.__setattr__(self, "_episode_ends", ends)

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def episode_bounds(self) -> list[tuple[int, int]]:
        """Half-open index ranges ``[start, end)`` of every episode."""
        starts = np.concatenate([[0], self._episode_ends[:-1] + 1])
        return [(int(s), int(e) + 1) for s, e in zip(starts, self._episode_ends)]

    @property
    def num_episodes(self) -> int:
        return len(self._episode_ends)

    def episode_index(self) -> np.ndarray:
        """(N,) episode id of every transition."""
        ids = np.zeros(len(self), dtype=np.int64)
        for i, (s, e) in enumerate(self.episode_bounds):
            ids[s:e] = i
        return ids

    def episode_returns(self) -> np.ndarray:
        """(E,) undiscounted reward sum per episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self._starts()) if len(self) else np.zeros(0)

    def episode_costs(self) -> np.ndarray:
        """(E,) undiscounted cost sum per episode."""
        return np.add.reduceat(self.costs.astype(np.float64), self._starts()) if len(self) else np.zeros(0)

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self._episode_ends + 1]))

    def _starts(self) -> np.ndarray:
        return np.concatenate([[0], self._episode_ends[:-1] + 1]).astype(np.int64)

    def select_episodes(self, mask: np.ndarray) -> "OfflineDataset":
        """A new dataset holding only the episodes where ``mask`` (E,) is true."""
        keep = np.asarray(mask, dtype=bool)[self.episode_index()]
        return OfflineDataset(
            observations=self.observations[keep],
            next_observations=self.next_observations[keep],
            actions=self.actions[keep],
            rewards=self.rewards[keep],
            costs=self.costs[keep],
            terminals=self.terminals[keep],
            timeouts=self.timeouts[keep],
            source=self.source,
            task=self.task,
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "observations": self.observations,
            "next_observations": self.next_observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "costs": self.costs,
            "terminals": self.terminals,
            "timeouts": self.timeouts,
        }
