"""The observation and action widths of a task's simulator, and the check that data or a model fits them."""

from __future__ import annotations

import numpy as np

from flrp.data.tasks import TaskSpec
from flrp.errors import FlrpError

__all__ = ["check_task_fits", "task_dims"]


def task_dims(task: TaskSpec) -> tuple[int, int]:
    """(observation width, action width) of the task's simulator: built once, read, closed."""
    from flrp.envs import make

    env = make(task.name)
    try:
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        assert obs_shape is not None and act_shape is not None  # Box spaces
        return int(np.prod(obs_shape)), int(np.prod(act_shape))
    finally:
        env.close()


def check_task_fits(obs_dim: int, act_dim: int, task: TaskSpec, what: str) -> None:
    """One line unless ``what`` (a dataset or model) has the observation/action widths of ``task``."""
    want = task_dims(task)
    if (obs_dim, act_dim) != want:
        raise FlrpError(
            f"{what} has observations of width {obs_dim} and actions of width {act_dim}, but task {task.name} "
            f"has {want[0]} and {want[1]}; pass the task that matches (--task)"
        )
