"""The datasets committed in datasets/ load, match their task and file name, and look like DSRL's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flrp.data.hdf5 import load_dsrl_hdf5
from flrp.training.datasets import resolve_dataset

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "datasets").glob("*.hdf5"))


def test_the_package_ships_datasets():
    assert len(SHIPPED) >= 3, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_dataset_is_consistent_with_its_name_task_and_card(path):
    sim_id, cap, n_traj = re.fullmatch(r"(Safety\w+-v\d)-(\d+)-(\d+)", path.stem).groups()
    ds, task = resolve_dataset(str(path))
    assert task is not None and task.sim_id.endswith(sim_id)
    assert ds.num_episodes == int(n_traj)
    lengths, costs = ds.episode_lengths(), ds.episode_costs()
    assert lengths.max() == task.max_episode_steps
    assert costs.max() <= int(cap)  # DSRL's cost cap, as in the file name
    # both sides of the cost limit are present, and reward grows with cost on the frontier
    assert (costs <= 10).mean() > 0.1 and (costs > 10).mean() > 0.1
    rets = ds.episode_returns()
    assert rets[costs > 10].max() > rets[costs <= 10].max()
    # the budget that made it still has the same fingerprint (the file stays reproducible by its command)
    import h5py

    from flrp.collect.collector import get_budget

    with h5py.File(path, "r") as f:
        budget, fingerprint = str(f.attrs["budget"]), str(f.attrs["budget_fingerprint"])
    assert get_budget(budget, task).fingerprint() == fingerprint
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["dataset"]["episodes"] == int(n_traj)
    assert np.isclose(card["dataset"]["return"]["max"], rets.max(), rtol=1e-4)
    # the loader reads the file unchanged (the DSRL keys, float32 arrays)
    raw = load_dsrl_hdf5(path)
    assert raw.observations.dtype == np.float32 and raw.observations.shape[0] == lengths.sum()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_replaying_an_episode_reproduces_its_costs(path):
    """The simulator wrapper's cost is the one the data was collected with: replaying the first
    episode that has a cost, from its recorded env seed, gives the same cost on every step (a
    wrapper reporting 0, or a changed simulator, fails)."""
    import csv

    pytest.importorskip("bullet_safety_gym")
    from flrp.envs import make

    ds, task = resolve_dataset(str(path))
    with open(path.with_suffix("").with_suffix(".episodes.csv"), newline="") as fh:
        seeds = [int(r["env_seed"]) for r in csv.DictReader(fh) if r["kept"] == "1"]
    i, (start, end) = next((i, b) for i, b in enumerate(ds.episode_bounds) if ds.costs[b[0] : b[1]].sum() > 0)
    env = make(task.name)
    try:
        obs, _ = env.reset(seed=seeds[i])
        np.testing.assert_allclose(obs, ds.observations[start], atol=1e-6)
        costs = [env.step(ds.actions[t])[4]["cost"] for t in range(start, end)]
    finally:
        env.close()
    assert sum(costs) > 0
    np.testing.assert_array_equal(np.array(costs, np.float32), ds.costs[start:end])
