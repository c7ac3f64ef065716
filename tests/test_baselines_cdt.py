"""CDT: window sampler, Pareto augmentation, transformer masking, update/save/resume, evaluation
runner, and a characteristic test on the toy task."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flrp.algos import Algorithm
from flrp.algos.cdt import CDT, CDTConfig, default_target_return
from flrp.data.dataset import OfflineDataset
from flrp.data.sequences import (
    cost_sample_weights,
    fit_frontier,
    gather_windows,
    grid_filter,
    nearest_sources,
    pareto_augmentation,
    pareto_frontier_mask,
    sample_window_index,
    sequence_arrays,
    to_go,
)
from flrp.data.spec import DataSpec
from flrp.nn.transformer import CausalTransformer, Dropout, dropout_multiplier

TINY = dict(embed_dim=16, num_layers=1, num_heads=2, seq_len=4, batch_size=32, warmup_steps=2)


def tiny(**kw) -> CDTConfig:
    return CDTConfig(**{**TINY, **kw})


# ---------------------------------------------------------------------------- hand-made data
def hand_dataset() -> OfflineDataset:
    """Episodes of lengths 3, 6 and 2 (the last cut by a terminal); obs[i] = (i, -i)."""
    lengths = [3, 6, 2]
    n = sum(lengths)
    obs = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    rew = np.arange(1, n + 1, dtype=np.float32)  # 1..11
    cost = np.array([0, 1, 0, 1, 1, 0, 0, 2, 0, 0, 1], np.float32)
    timeouts = np.zeros(n, bool)
    terminals = np.zeros(n, bool)
    timeouts[[2, 8]] = True
    terminals[10] = True
    act = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    return OfflineDataset(obs, obs + 1, act, rew, cost, terminals, timeouts)


def test_to_go_matches_loops():
    ds = hand_dataset()
    starts = np.array([0, 3, 9])
    lengths = np.array([3, 6, 2])
    rtg = to_go(ds.rewards, starts, lengths)
    ctg = to_go(ds.costs, starts, lengths)
    np.testing.assert_allclose(rtg, [6, 5, 3, 39, 35, 30, 24, 17, 9, 21, 11])
    np.testing.assert_allclose(ctg, [1, 1, 0, 4, 3, 2, 2, 2, 0, 1, 1])


def test_window_values_padding_and_timesteps():
    ds = hand_dataset()
    seq = sequence_arrays(ds.rewards, ds.costs, ds.episode_bounds, cost_sample_threshold=None)
    data = {k: torch.as_tensor(v) for k, v in seq.items() if k != "ep_weight"}
    data.update(obs=torch.as_tensor(ds.observations), act=torch.as_tensor(ds.actions), cost=torch.as_tensor(ds.costs))
    ep = torch.tensor([0, 1, 1, 2])
    off = torch.tensor([1, 0, 4, 1])
    w = gather_windows(data, ep, off, seq_len=4, reward_scale=0.1, cost_scale=2.0)
    assert w["valid"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert w["timestep"].tolist() == [[1, 2, 3, 4], [0, 1, 2, 3], [4, 5, 6, 7], [1, 2, 3, 4]]  # continue past the end
    np.testing.assert_allclose(w["rtg"][0].numpy(), [0.5, 0.3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(w["rtg"][1].numpy(), [3.9, 3.5, 3.0, 2.4], rtol=1e-6)
    np.testing.assert_allclose(w["ctg"][1].numpy(), [8, 6, 4, 4])
    np.testing.assert_allclose(w["ctg"][2].numpy(), [4, 0, 0, 0])  # steps 7, 8 of episode 1 (costs 2, 0)
    np.testing.assert_allclose(w["cost"][2].numpy(), [2, 0, 0, 0])
    assert w["obs"][2, :, 0].tolist() == [7, 8, 0, 0]  # padding is zero
    assert w["obs"][3, :, 0].tolist() == [10, 0, 0, 0]
    np.testing.assert_allclose(w["act"][0, :, 0].numpy(), [ds.actions[1, 0], ds.actions[2, 0], 0, 0])


def test_window_sampler_is_deterministic_and_weighted():
    ds = hand_dataset()
    seq = sequence_arrays(ds.rewards, ds.costs, ds.episode_bounds, cost_sample_threshold=3.5)
    # initial CTGs 1, 4, 1 -> weights max(0, 3.5 - C) = 2.5, 0, 2.5
    np.testing.assert_allclose(seq["ep_weight"], [0.5, 0.0, 0.5])
    w, ln = torch.as_tensor(seq["ep_weight"]), torch.as_tensor(seq["ep_len"])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ep1, off1 = sample_window_index(w, ln, 4000, g1)
    ep2, off2 = sample_window_index(w, ln, 4000, g2)
    assert torch.equal(ep1, ep2) and torch.equal(off1, off2)
    assert set(ep1.tolist()) == {0, 2}
    assert 0.45 < (ep1 == 0).float().mean() < 0.55
    assert (off1 < ln[ep1]).all() and (off1 >= 0).all()
    assert set(off1[ep1 == 0].tolist()) == {0, 1, 2}  # every start in the episode is reachable


def test_cost_sample_weights_follow_osrl_linear_rule():
    p = cost_sample_weights(np.array([0.0, 35.0, 70.0, 100.0]))
    np.testing.assert_allclose(p, [70 / 105, 35 / 105, 0, 0])
    with pytest.raises(Exception, match="nothing to draw"):
        cost_sample_weights(np.array([80.0, 90.0]))


# ---------------------------------------------------------------------------- Pareto augmentation
def _brute_force_frontier(c, r):
    n = len(c)
    keep = np.ones(n, bool)
    for i in range(n):
        for j in range(n):
            if c[j] <= c[i] and r[j] >= r[i] and (c[j] < c[i] or r[j] > r[i]):
                keep[i] = False
    return keep


def test_pareto_frontier_on_toy_points():
    c = np.array([0, 1, 2, 2, 3, 4, 0, 4, 5.0])
    r = np.array([1, 3, 2, 5, 5, 7, 0.5, 7, 6.0])
    mask = pareto_frontier_mask(c, r)
    assert np.flatnonzero(mask).tolist() == [0, 1, 3, 5, 7]  # duplicates (4, 7) both kept
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.integers(0, 8, 40).astype(float)
        r = rng.integers(0, 8, 40).astype(float)
        np.testing.assert_array_equal(pareto_frontier_mask(c, r), _brute_force_frontier(c, r))


def test_fit_frontier_lowers_degree_when_points_are_few():
    f = fit_frontier(np.array([0.0, 2.0]), np.array([1.0, 5.0]), deg=4)
    assert f.order == 1 and f(1.0) == pytest.approx(3.0)
    assert fit_frontier(np.array([3.0]), np.array([2.0]), deg=2).order == 0


def test_grid_filter_drops_sparse_bins_and_caps_dense_ones():
    rng = np.random.default_rng(0)
    c = np.r_[np.zeros(30), 5.0, 10.0, 10.0]  # 30 in one bin, 1 alone, 2 together
    r = np.r_[np.zeros(30), 50.0, 100.0, 100.0]
    keep = grid_filter(c, r, rng, cost_bins=3, reward_bins=3, max_per_bin=10, min_per_bin=2)
    assert len(keep) == 10 and set(keep.tolist()) <= set(range(30))


def test_pareto_augmentation_relabels_above_the_frontier():
    # frontier r = 10 + 2 c on c = 0..10 plus dominated points below it
    rng = np.random.default_rng(1)
    c_front = np.arange(11.0)
    c_in = rng.uniform(0, 10, 89)
    costs = np.r_[c_front, c_in]
    rets = np.r_[10 + 2 * c_front, 10 + 2 * np.floor(c_in) - rng.uniform(1, 8, 89)]  # each below a frontier point of lower cost
    aug = pareto_augmentation(costs, rets, np.random.default_rng(0), augment_percent=0.2, deg=1, max_reward=40.0, filter_outliers=False)
    assert len(aug) == 20
    np.testing.assert_allclose(aug.frontier.coeffs, [2.0, 10.0], atol=1e-8)
    np.testing.assert_allclose(aug.target_cost, np.linspace(costs.min(), 10.0, 20))
    assert np.all(aug.target_return >= 10 + 2 * aug.target_cost + 1.0 - 1e-9)  # above f + min_reward
    assert np.all(aug.target_return <= 40.0)
    assert np.all(costs[aug.source] <= aug.target_cost + 1e-12)  # sources never exceed the budget
    # relabelled trajectories start at the targets
    lengths = np.full(100, 3)
    step_c = np.repeat(costs / 3, 3)
    step_r = np.repeat(rets / 3, 3)
    bounds = [(3 * i, 3 * i + 3) for i in range(100)]
    seq = sequence_arrays(step_r, step_c, bounds, aug, cost_sample_threshold=None)
    assert len(seq["ep_start"]) == 120 and np.all(seq["ep_len"] == lengths[0])
    first = seq["ep_start"][100:]
    np.testing.assert_allclose(seq["rtg"][first] + seq["ep_rtg_shift"][100:], aug.target_return, rtol=1e-5)
    np.testing.assert_allclose(seq["ctg"][first] + seq["ep_ctg_shift"][100:], aug.target_cost, rtol=1e-5, atol=1e-5)


def test_nearest_sources_spreads_duplicate_sources():
    costs = np.array([0.0, 1.0, 1.0, 5.0])
    rets = np.array([0.0, 10.0, 9.5, 20.0])
    tc = np.array([1.0, 1.0, 1.0, 4.0])
    tr = np.array([11.0, 11.0, 11.0, 30.0])
    src = nearest_sources(costs, rets, tc, tr, np.random.default_rng(0), max_rew_decrease=1.0)
    assert src[0] == 1  # nearest with cost <= 1
    assert set(src[1:3]) <= {1, 2}  # substitutes: cost <= 1 and return >= 9
    assert src[3] == 1  # cost-5 point is over the budget 4


# ---------------------------------------------------------------------------- transformer
def test_right_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    net = CausalTransformer(16, 2, 2, 0.0, 0.0, 0.0).eval()
    x = torch.randn(2, 7, 16)
    valid = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out = net(x, valid)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :5], net(x[:1, :5])[0])
    torch.testing.assert_close(out[1, :3], net(x[1:, :3])[0])
    # causality: changing a later token leaves earlier outputs unchanged
    y = x.clone()
    y[:, 4] += 1.0
    torch.testing.assert_close(net(y)[:, :4], net(x)[:, :4])


def test_dropout_multiplier_is_unbiased_and_seeded():
    torch.manual_seed(3)
    m = dropout_multiplier((400, 500), 0.1, torch.device("cpu"))
    q = 1 - 6554 / 65536  # p rounded to 16 bits
    assert m.unique().tolist() == [0.0, pytest.approx(1 / q)]
    assert abs((m == 0).float().mean().item() - 0.1) < 0.003  # 200k draws: sd 0.0007
    assert abs(m.mean().item() - 1.0) < 0.004
    torch.manual_seed(3)
    assert torch.equal(m, dropout_multiplier((400, 500), 0.1, torch.device("cpu")))
    assert torch.equal(dropout_multiplier((3, 4), 0.0, torch.device("cpu")), torch.ones(3, 4))
    assert torch.equal(dropout_multiplier((3, 4), 1.0, torch.device("cpu")), torch.zeros(3, 4))
    drop = Dropout(0.5)
    x = torch.randn(64, 8)
    assert not torch.equal(drop(x), x)
    assert torch.equal(drop.eval()(x), x)  # identity in eval mode


def test_attention_paths_and_output_subset_agree():
    """The written-out training attention (used when dropout is active) equals the fused kernel
    used otherwise, and computing only some positions' outputs gives the same features and
    gradients as computing all of them."""
    torch.manual_seed(0)
    x = torch.randn(3, 12, 16, dtype=torch.float64)
    wanted = torch.tensor([2, 3, 6, 7, 10, 11])
    fused = CausalTransformer(16, 2, 2, 0.0, 0.0, 0.0).double().train()
    written = CausalTransformer(16, 2, 2, 1e-9, 1e-9, 1e-9).double().train()  # active, drops nothing
    written.load_state_dict(fused.state_dict())
    assert written.blocks[0].attn.attn_drop.active
    for outputs in (None, wanted):
        torch.testing.assert_close(written(x, outputs=outputs), fused(x, outputs=outputs))
    full = fused(x)
    part = fused(x, outputs=wanted)
    torch.testing.assert_close(part, full[:, wanted])
    grads = []
    for out in (full[:, wanted], part):
        fused.zero_grad()
        (out * torch.linspace(-1, 1, 16, dtype=torch.float64)).sum().backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in fused.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_cdt_network_needs_no_mask_for_right_padding(dataset):
    algo = CDT(tiny(seq_len=5), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    net = algo.modules["model"].eval()
    B, T = 2, 5
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(B, T, dataset.observations.shape[1], generator=g), torch.randn(B, T, 2, generator=g)
    rtg, ctg = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    ts = torch.arange(T).expand(B, T)
    with torch.no_grad():
        mu, log_std, cost = net(obs, act, rtg, ctg, ts)
        garbage = [t.clone() for t in (obs, act, rtg, ctg)]
        for t in garbage:
            t[:, 3:] = 1e3  # steps 3, 4 are padding
        mu_p, log_std_p, cost_p = net(*garbage, ts)
        mu_s, _, _ = net(obs[:, :3], act[:, :3], rtg[:, :3], ctg[:, :3], ts[:, :3])
    torch.testing.assert_close(mu_p[:, :3], mu[:, :3])
    torch.testing.assert_close(cost_p[:, :3], cost[:, :3])
    torch.testing.assert_close(mu_s, mu[:, :3])
    assert torch.isfinite(mu_p).all() and torch.isfinite(log_std_p).all()


# ---------------------------------------------------------------------------- algorithm
def test_defaults_are_osrls():
    c = CDTConfig()
    assert (c.embed_dim, c.num_layers, c.num_heads, c.seq_len) == (128, 3, 8, 10)
    assert (c.attention_dropout, c.residual_dropout, c.embedding_dropout) == (0.1, 0.1, 0.1)
    assert (c.lr, c.weight_decay, c.beta1, c.beta2, c.clip_grad, c.warmup_steps) == (1e-4, 1e-4, 0.9, 0.999, 0.25, 500)
    assert (c.batch_size, c.steps, c.reward_scale, c.cost_scale) == (2048, 100_000, 0.1, 1.0)
    assert (c.stochastic, c.init_temperature, c.loss_cost_weight, c.cost_transform) == (True, 0.1, 0.02, True)
    assert (c.cost_sample, c.cost_sample_threshold, c.augment_percent, c.cost_limit) == (True, 70.0, 0.2, 10.0)
    # Raw observations; per-task augmentation and targets from OSRL's table unless set.
    assert (c.normalize_obs, c.aug_deg, c.aug_max_reward, c.aug_max_rew_decrease, c.target_return) == (False, None, None, None, None)


def test_update_moves_parameters_and_metrics_are_finite(dataset):
    algo = CDT(tiny(), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    before = {k: torch.cat([p.detach().flatten().clone() for p in m.parameters()]) for k, m in algo.modules.items()}
    hist = algo.fit(dataset, steps=4, log_every=1, progress=False)
    for k, m in algo.modules.items():
        after = torch.cat([p.detach().flatten() for p in m.parameters()])
        assert not torch.equal(before[k], after), k
        assert torch.isfinite(after).all(), k
    for name, p in algo.modules["model"].named_parameters():
        assert p.grad is not None, name  # every weight is reached by the loss
    row = hist[-1]
    assert all(np.isfinite(v) for v in row.values())
    for key in ("actor/nll", "actor/entropy", "actor/temperature", "cost/nll", "cost/acc", "train/loss", "train/lr"):
        assert key in row
    assert row["train/lr"] == pytest.approx(1e-4)  # warm-up (2 steps) is over
    assert algo.augmentation is not None and len(algo.augmentation) > 0


@pytest.mark.parametrize("stochastic", [True, False])
def test_micro_batches_give_the_full_batch_update(dataset, stochastic):
    """Gradients summed over micro-batches equal the one-pass gradient (no dropout, so that the
    two runs see the same computation); the micro-batch size changes only float rounding."""
    kw = dict(attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, stochastic=stochastic)
    runs = {}
    for mb in (32, 5):  # batch 32: one pass, or 7 passes (the last one short)
        algo = CDT(tiny(micro_batch=mb, **kw), device="cpu")
        assert algo.micro_batch_size(32) == mb
        hist = algo.fit(dataset, steps=3, log_every=1, progress=False)
        runs[mb] = (algo.parameters_vector(), hist[-1])
    (p_full, m_full), (p_micro, m_micro) = runs[32], runs[5]
    fresh = CDT(tiny(**kw), device="cpu")
    fresh.build(DataSpec.from_dataset(dataset, True))
    assert (p_full - fresh.parameters_vector()).abs().max() > 1e-4  # the steps moved the weights
    torch.testing.assert_close(p_micro, p_full, rtol=1e-5, atol=1e-6)
    assert m_micro.keys() == m_full.keys()
    for k in m_full:
        assert m_micro[k] == pytest.approx(m_full[k], rel=1e-4, abs=1e-6), k


def test_same_seed_same_numbers(dataset):
    a, b = CDT(tiny(), device="cpu"), CDT(tiny(), device="cpu")  # dropout on, micro-batches of 128 > batch
    ha = a.fit(dataset, steps=3, log_every=1, progress=False)
    hb = b.fit(dataset, steps=3, log_every=1, progress=False)
    assert torch.equal(a.parameters_vector(), b.parameters_vector()) and ha == hb
    c = CDT(tiny(micro_batch=8), device="cpu")  # dropout over several passes: still reproducible
    d = CDT(tiny(micro_batch=8), device="cpu")
    c.fit(dataset, steps=3, progress=False)
    d.fit(dataset, steps=3, progress=False)
    assert torch.equal(c.parameters_vector(), d.parameters_vector())


def test_warmup_and_deterministic_head(dataset):
    algo = CDT(tiny(warmup_steps=4, stochastic=False), device="cpu")
    hist = algo.fit(dataset, steps=2, log_every=1, progress=False)
    assert [h["train/lr"] for h in hist] == pytest.approx([0.25e-4, 0.5e-4])
    assert "actor/mse" in hist[-1] and "temperature" not in algo.modules


def test_predict_without_history(dataset):
    algo = CDT(tiny(), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    a = algo.predict(dataset.observations[:5])
    assert a.shape == (5, 2) and np.all(np.abs(a) <= 1.0)
    assert algo.predict(dataset.observations[0]).shape == (2,)
    np.testing.assert_array_equal(a, algo.predict(dataset.observations[:5]))


def test_default_targets(dataset):
    rets, costs = np.array([5.0, 9.0, 20.0]), np.array([3.0, 10.0, 11.0])
    assert default_target_return(rets, costs, 10.0) == 9.0
    assert default_target_return(rets, costs, 1.0) == 5.0  # nothing safe: cheapest episode
    algo = CDT(tiny(), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    safe = dataset.episode_costs() <= 10.0
    assert algo.target_return == pytest.approx(dataset.episode_returns()[safe].max())
    assert algo.target_cost == 10.0
    algo.config = algo.config.replace(target_return=3.0, target_cost=0.0)
    assert (algo.target_return, algo.target_cost) == (3.0, 0.0)


def _run(runner, obs_seq, ids, rewards, costs):
    out = []
    for obs in obs_seq:
        out.append(runner.act(obs[ids], ids, True))
        runner.observe(ids, rewards, costs)
    return out


def test_save_load_gives_identical_actions(dataset, tmp_path):
    algo = CDT(tiny(), device="cpu")
    algo.fit(dataset, steps=3, progress=False)
    path = algo.save(tmp_path / "m.pt")
    loaded = Algorithm.load(path, device="cpu")
    assert isinstance(loaded, CDT) and loaded.config == algo.config
    assert loaded.target_return == algo.target_return  # the dataset default travels with the model
    obs = dataset.observations[:9]
    np.testing.assert_array_equal(algo.predict(obs), loaded.predict(obs))
    ids = np.arange(3)
    seq = [dataset.observations[10 * k : 10 * k + 3] for k in range(6)]
    a = _run(algo.episode_runner(3), seq, ids, np.ones(3), np.zeros(3))
    b = _run(loaded.episode_runner(3), seq, ids, np.ones(3), np.zeros(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("micro_batch", [12])  # three passes per step (one pass: tests/test_contract.py)
def test_resume_from_checkpoint_is_bit_exact_with_micro_batches(dataset, tmp_path, micro_batch):
    full = CDT(tiny(micro_batch=micro_batch), device="cpu")
    full.fit(dataset, steps=8, progress=False)
    CDT(tiny(micro_batch=micro_batch), device="cpu").fit(dataset, steps=4, run_dir=tmp_path / "run", checkpoint_every=4, progress=False)
    resumed = CDT(tiny(micro_batch=micro_batch), device="cpu")
    resumed.fit(dataset, steps=8, run_dir=tmp_path / "run", checkpoint_every=4, progress=False)
    assert resumed.step == 8
    assert torch.equal(full.parameters_vector(), resumed.parameters_vector())


def test_training_leaves_global_rng_alone(dataset):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    CDT(tiny(), device="cpu").fit(dataset, steps=2, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_episode_runner_decrements_targets_and_keeps_last_steps(dataset):
    algo = CDT(tiny(target_return=50.0, target_cost=5.0, reward_scale=0.1, cost_scale=2.0), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    runner = algo.episode_runner(3)
    np.testing.assert_allclose(runner.rtg, [5.0] * 3)
    np.testing.assert_allclose(runner.ctg, [10.0] * 3)
    obs = dataset.observations
    # the first step is the one-step context that act()/predict() use
    first = runner.act(obs[:3], np.arange(3), True)
    np.testing.assert_allclose(first, algo.predict(obs[:3]), rtol=1e-5, atol=1e-6)
    runner.observe(np.arange(3), np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(runner.rtg, [4.9, 4.8, 4.7])
    np.testing.assert_allclose(runner.ctg, [10.0, 8.0, 9.0])
    # env 1 has finished: only 0 and 2 keep going
    ids = np.array([0, 2])
    for k in range(6):
        runner.act(obs[3 + k : 5 + k], ids, True)
        runner.observe(ids, np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(runner.rtg, [4.9 - 0.6, 4.8, 4.7 - 0.6])
    np.testing.assert_allclose(runner.ctg, [10.0 - 12.0, 8.0, 9.0])
    assert runner.t.tolist() == [7, 1, 7]
    # the context holds the last seq_len = 4 steps with the RTG/CTG each was taken with
    assert runner.time_buf[0].tolist() == [3, 4, 5, 6]
    np.testing.assert_allclose(runner.rtg_buf[0].numpy(), [4.9 - 0.2, 4.9 - 0.3, 4.9 - 0.4, 4.9 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(runner.ctg_buf[0].numpy(), [6.0, 4.0, 2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(runner.ctg_buf[2].numpy(), [9.0] * 4)
    assert runner.time_buf[1].tolist() == [0, 0, 0, 0] and runner.filled[1] == 1
    # the runner's action is the model's output on exactly that context
    net = algo.modules["model"].eval()
    with torch.no_grad():
        mu, _, _ = net(runner.obs[:1], runner.act_buf[:1], runner.rtg_buf[:1], runner.ctg_buf[:1], runner.time_buf[:1])
    torch.testing.assert_close(runner.act_buf[0, -1], mu[0, -1].clamp(-1, 1))


# ---------------------------------------------------------------------------- characteristic
@pytest.fixture
def toy(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))
    from flrp.training.datasets import resolve_dataset

    return resolve_dataset("toy")


# A small, dropout-free model: 600 steps take ~15-30 s on one core. Observation (see the report of
# this file's author): at such short budgets the CTG token mostly carries the *sign* of
# 50 - ctg (a LayerNorm right after a linear embedding of one scalar), so the prompts compared
# here sit on both sides of 50; and the target return (10) is reachable without cost from every
# start state of ToyHazard, so the cost prompt is what decides whether the agent enters the hazard.
CDT_TOY = CDTConfig(
    embed_dim=32, num_layers=1, num_heads=2, batch_size=64, lr=1e-3, warmup_steps=10,
    attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, target_return=10.0,
)
CDT_TOY_STEPS = 600


def test_higher_target_cost_gives_higher_cost_on_toy(toy):
    """CDT's defining behaviour: the cost-to-go prompt controls how much cost the policy incurs.

    Measured over seeds 0-4 (10 episodes each): cost 0-12 with target cost 0 and 42-80 with
    target cost 60 (differences 38-68)."""
    from flrp.evaluation.rollout import evaluate

    ds, task = toy
    algo = CDT(CDT_TOY, device="cpu")
    algo.fit(ds, steps=CDT_TOY_STEPS, progress=False)
    results = {}
    for target in (0.0, 60.0):
        algo.config = dataclasses.replace(algo.config, target_cost=target)
        results[target] = evaluate(algo, task, episodes=10)
    low, high = results[0.0], results[60.0]
    assert high.cost_mean > low.cost_mean + 20.0, (low.line(), high.line())
