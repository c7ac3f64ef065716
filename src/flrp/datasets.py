"""Resolve a ``--dataset`` argument to data and its task: a local DSRL HDF5 path, or ``toy``.

``toy`` is the package's embedded dataset: generated deterministically from a fixed seed on first
use (about a second) and cached under ``$FLRP_DATA_DIR`` (default ``~/.cache/flrp/datasets``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from flrp.data.dataset import OfflineDataset
from flrp.data.hdf5 import load_dsrl_hdf5
from flrp.data.tasks import TaskSpec, get_task
from flrp.errors import FlrpError

__all__ = ["data_dir", "toy_dataset_path", "resolve_dataset", "infer_task", "task_dims", "check_task_fits"]

TOY_NAMES = ("toy", "toyhazard", "toyhazard-v0")


def data_dir() -> Path:
    return Path(os.environ.get("FLRP_DATA_DIR", Path.home() / ".cache" / "flrp" / "datasets"))


def toy_dataset_path() -> Path:
    """The embedded toy dataset, generated on first use (deterministic: seed TOY_SEED)."""
    from flrp.collect.toy import TOY_EPISODES, TOY_SEED, make_toy_dataset

    path = data_dir() / f"ToyHazard-v0-seed{TOY_SEED}-{TOY_EPISODES}.hdf5"
    if not path.exists():
        make_toy_dataset(path, seed=TOY_SEED, episodes=TOY_EPISODES)
    return path


def infer_task(path: Path) -> TaskSpec | None:
    """Task from the file's ``task`` attribute, else from a DSRL-style name ``<EnvId>-<cap>-<n>.hdf5``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            name = f.attrs.get("task")
        if name:
            return get_task(str(name))
    except (OSError, FlrpError):
        pass
    m = re.match(r"^(.*?-v\d+)", path.name)
    if m:
        try:
            return get_task(m.group(1))
        except FlrpError:
            return None
    return None


def resolve_dataset(arg: str, task: str | None = None) -> tuple[OfflineDataset, TaskSpec | None]:
    if arg.lower() in TOY_NAMES:
        ds = load_dsrl_hdf5(toy_dataset_path())
        return ds, get_task(task or "ToyHazard")
    path = Path(arg).expanduser()
    ds = load_dsrl_hdf5(path)
    return ds, (get_task(task) if task else infer_task(path))


def task_dims(task: TaskSpec) -> tuple[int, int]:
    """(observation width, action width) of the task's simulator: built once, read, closed."""
    from flrp.envs import make

    env = make(task.name)
    try:
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
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
