"""Dataset summary, markdown table and the cost-return scatter PNG."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import get_task
from flrp.plotting.dataset import dataset_summary, plot_cost_return_scatter, summary_markdown


def _dataset(lengths=(3, 2, 4), ep_rewards=(1.0, 2.0, 0.5), ep_costs=(0.0, 6.0, 4.0)) -> OfflineDataset:
    """Episodes with constant per-step reward/cost; last episode ends on a timeout."""
    n = sum(lengths)
    rng = np.random.default_rng(0)
    rewards, costs, terminals, timeouts = [], [], np.zeros(n, bool), np.zeros(n, bool)
    end = 0
    for i, (ln, r, c) in enumerate(zip(lengths, ep_rewards, ep_costs)):
        rewards += [r] * ln
        costs += [c] * ln
        end += ln
        (timeouts if i == len(lengths) - 1 else terminals)[end - 1] = True
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    return OfflineDataset(
        observations=obs,
        next_observations=obs + 1,
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=np.asarray(rewards, np.float32),
        costs=np.asarray(costs, np.float32),
        terminals=terminals,
        timeouts=timeouts,
        source="toy.hdf5",
    )


def test_dataset_summary_values() -> None:
    ds = _dataset()
    # Episode returns 3, 4, 2; costs 0, 12, 16; lengths 3, 2, 4.
    s = dataset_summary(ds, cost_limit=10.0)
    assert s["transitions"] == 9 and s["episodes"] == 3
    assert s["obs_dim"] == 4 and s["act_dim"] == 2
    assert s["return"] == {"min": 2.0, "mean": 3.0, "max": 4.0}
    assert s["cost"]["min"] == 0.0 and s["cost"]["max"] == 16.0
    assert s["cost"]["mean"] == pytest.approx(28 / 3)
    assert s["length"] == {"min": 2, "max": 4}
    assert s["safe_episodes"] == 1 and s["safe_fraction"] == pytest.approx(1 / 3)
    assert "task" not in s
    json.dumps(s)  # plain Python types only

    # Cost exactly at the limit counts as safe.
    assert dataset_summary(ds, cost_limit=12.0)["safe_episodes"] == 2


def test_dataset_summary_with_task_and_markdown() -> None:
    s = dataset_summary(_dataset(), task=get_task("CarRun"))
    assert s["task"]["name"] == "CarRun"
    assert s["task"]["max_episode_steps"] == 200
    assert s["task"]["max_cost"] == 40.0
    md = summary_markdown(s)
    lines = md.strip().splitlines()
    assert lines[0] == "| quantity | value |" and lines[1] == "|---|---|"
    assert all(line.startswith("| ") and line.endswith(" |") and line.count("|") == 3 for line in lines[2:])
    assert "| episodes | 3 |" in md
    assert "CarRun" in md and "33.3%" in md


def test_summary_at_limit_zero() -> None:
    s = dataset_summary(_dataset(), cost_limit=0.0)
    assert s["safe_episodes"] == 1  # the zero-cost episode
    assert not math.isnan(s["safe_fraction"])


def test_scatter_png_written_atomically(tmp_path) -> None:
    out_dir = tmp_path / "plots"
    path = plot_cost_return_scatter(_dataset(), out_dir / "scatter.png", title="toy", cost_limit=10.0)
    assert path == out_dir / "scatter.png"
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["scatter.png"]


def test_scatter_overwrites_and_handles_all_unsafe(tmp_path) -> None:
    target = tmp_path / "s.png"
    target.write_bytes(b"old")
    plot_cost_return_scatter(_dataset(ep_costs=(20.0, 30.0, 40.0)), target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_scatter_draws_the_reference_return_range(tmp_path) -> None:
    import matplotlib.image as mpimg

    def green_pixels(path):
        img = mpimg.imread(path)[..., :3]
        tab_green = np.array([0.173, 0.627, 0.173])
        return int((np.abs(img - tab_green).max(-1) < 0.05).sum())

    plain = plot_cost_return_scatter(_dataset(), tmp_path / "plain.png")
    ref = plot_cost_return_scatter(_dataset(), tmp_path / "ref.png", reference=(0.0, 5.0))
    assert green_pixels(plain) == 0
    assert green_pixels(ref) > 100  # two dotted lines across the axes
