"""flrp.nn.functional by hand: each equation's function against values worked out on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flrp.algos import FLRP, FLRPConfig
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.nn.functional import awr_weight, expectile_loss, hard_update, hj_target, iql_q_target, reversed_expectile_loss, soft_update


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def test_hj_target_discounted_backup_and_terminals():
    """Eq. 7/9: (1-g) h + g max{h, V'}; at a terminal the target is h itself."""
    h, next_v, terminal = t(-1, -1, 25, -1), t(-0.5, 3, 0, 3), t(0, 0, 0, 1)
    got = hj_target(h, next_v, terminal, gamma=0.9)
    # -0.1 + 0.9 max(-1, -0.5); -0.1 + 0.9 * 3; 2.5 + 0.9 * 25; terminal: h
    torch.testing.assert_close(got, t(-0.55, 2.6, 25.0, -1.0))


def test_flrp_stops_the_hj_backup_at_terminals_and_bootstraps_through_timeouts():
    """A timeout truncates, it does not absorb: only terminals reach hj_target as terminal."""
    n = 4
    obs = np.zeros((n, 1), np.float32)
    ds = OfflineDataset(obs, obs, np.zeros((n, 1), np.float32), np.zeros(n, np.float32), t(0, 1, 0, 0).numpy(),
                        terminals=np.array([0, 1, 0, 0], bool), timeouts=np.array([0, 0, 0, 1], bool))
    algo = FLRP(FLRPConfig(hidden=8, batch_size=4), device="cpu")
    algo.build(DataSpec.from_dataset(ds, True))
    data = algo.prepare_data(ds)
    np.testing.assert_array_equal(data["terminal"], [0, 1, 0, 0])
    h = torch.as_tensor(data["h"])  # FISOR's relabelling: +25 where cost > 0, else -1
    torch.testing.assert_close(h, t(-1, 25, -1, -1))
    target = hj_target(h, torch.full((n,), 3.0), torch.as_tensor(data["terminal"]), gamma=0.9)
    torch.testing.assert_close(target, t(2.6, 25.0, 2.6, 2.6))  # the timeout row bootstraps


def test_expectile_losses_weight_opposite_sides():
    diff = t(2.0, -1.0)  # Q - V
    # ordinary (Eq. 21): tau on positive residuals, 1 - tau on negative ones
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 1) / 2)
    # reversed (Eq. 8): 1 - tau on positive residuals, tau on negative ones
    assert reversed_expectile_loss(diff, 0.9).item() == pytest.approx((0.1 * 4 + 0.9 * 1) / 2)


def _minimiser(loss, q: torch.Tensor, tau: float) -> float:
    grid = torch.linspace(q.min().item(), q.max().item(), 20001)
    values = torch.stack([loss(q - v, tau) for v in grid])
    return grid[values.argmin()].item()


def test_expectile_directions_upper_for_iql_lower_for_hj():
    """Fitting V to samples of Q: IQL's expectile lands above the mean (an in-sample max), the
    reversed one below it (an in-sample min of Q_h, the feasibility side). Closed form for
    Q in {0, 10}: the tau-expectile is 10 tau."""
    q = t(0.0, 10.0)
    assert _minimiser(expectile_loss, q, 0.9) == pytest.approx(9.0, abs=1e-3)
    assert _minimiser(reversed_expectile_loss, q, 0.9) == pytest.approx(1.0, abs=1e-3)


def test_iql_q_target():
    """Eq. 22: r + gamma (1 - terminal) V(s')."""
    torch.testing.assert_close(iql_q_target(t(1, 2, -1), t(10, 10, 4), t(0, 1, 0), 0.9), t(10.0, 2.0, 2.6))


def test_awr_weight_is_clipped_above_only():
    got = awr_weight(t(-1, 0, 1, 10), inv_temperature=3.0, clip_max=100.0)
    torch.testing.assert_close(got, t(math.exp(-3), 1.0, math.exp(3), 100.0))


def test_soft_update_moves_exactly_tau_of_the_way():
    target, source = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    for p in target.parameters():
        torch.nn.init.zeros_(p)
    for p in source.parameters():
        torch.nn.init.ones_(p)
    soft_update(target, source, 0.25)
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in target.parameters())
    soft_update(target, source, 0.25)  # 0.25 + 0.25 * 0.75
    assert all(torch.equal(p, torch.full_like(p, 0.4375)) for p in target.parameters())
    hard_update(target, source)
    assert all(torch.equal(p, torch.ones_like(p)) for p in target.parameters())
