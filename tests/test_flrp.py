"""FLRP: Algorithm 1's update, gradient routing, ablation switches, acting noise (save/load, resume
and the rest of the common contract: tests/test_contract.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flrp.algos import FLRP, Algorithm, FLRPConfig
from flrp.algos.base import call_frozen
from flrp.algos.flrp import refine_schedule
from flrp.data.dataset import OfflineDataset

TINY = dict(hidden=16, batch_size=64, prior_layers=2, posterior_layers=1)


def tiny(**kw) -> FLRPConfig:
    return FLRPConfig(**{**TINY, **kw})


def params_of(algo: Algorithm, *names: str) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for n in names for p in algo.modules[n].parameters()])


def test_refine_schedule_matches_the_paper():
    assert refine_schedule(3) == ["h", "r", "sh"]  # Sec. 3.3 / Table 5 default
    assert refine_schedule(5) == ["h", "r", "h", "r", "sh"]  # safety first, alternate, shared last
    assert refine_schedule(2) == ["h", "sh"]
    assert refine_schedule(1) == ["sh"]
    assert refine_schedule(0) == []


def test_defaults_are_the_papers():
    c = FLRPConfig()
    assert (c.steps, c.batch_size, c.gamma, c.hidden, c.lr, c.tau) == (1_000_000, 512, 0.99, 256, 3e-4, 0.001)
    assert (c.expectile_reward, c.expectile_feasibility) == (0.9, 0.9)
    assert (c.reward_temperature, c.feasibility_temperature) == (3.0, 5.0)
    assert (c.reward_weight_clip, c.feasibility_weight_clip, c.refine_steps) == (100.0, 150.0, 3)
    assert (c.lambda_reward, c.lambda_safety, c.lambda_shared) == (1.0, 1.0, 0.5)


def test_metrics_are_finite(dataset):
    algo = FLRP(tiny(), device="cpu")
    hist = algo.fit(dataset, steps=5, log_every=5, progress=False)
    assert hist and all(np.isfinite(v) for v in hist[-1].values())
    for key in ("critic/q_h", "critic/v_h", "critic/q_r", "critic/v_r", "flow/elbo", "flow/shape", "refiner/reward", "refiner/safety", "refiner/shared"):
        assert key in hist[-1]


def test_gradient_routing_each_component_trained_only_by_its_own_loss(dataset):
    """Critics ignore the flow and refiner losses; flows/decoder ignore the refiner loss (Sec. 3.2:
    the refiner only moves u through the frozen flow and decoder)."""
    base = FLRP(tiny(), device="cpu")
    base.fit(dataset, steps=3, progress=False)
    no_refiner = FLRP(tiny(lambda_reward=0.0, lambda_safety=0.0, lambda_shared=0.0), device="cpu")
    no_refiner.fit(dataset, steps=3, progress=False)
    no_flow = FLRP(tiny(beta=0.0, lambda_shape=0.0, lambda_entropy=0.0, lambda_reward=0.0, lambda_safety=0.0, lambda_shared=0.0), device="cpu")
    no_flow.fit(dataset, steps=3, progress=False)
    critics = ("q_h", "v_h", "q_r", "v_r")
    flows = ("prior", "posterior", "decoder")
    assert torch.equal(params_of(base, *critics), params_of(no_flow, *critics))
    assert torch.equal(params_of(base, *flows), params_of(no_refiner, *flows))
    assert not torch.equal(params_of(base, "refiner"), params_of(no_refiner, "refiner"))


def test_call_frozen_passes_input_gradients_but_not_weight_gradients():
    net = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    call_frozen(net, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.weight.grad is None and net.bias.grad is None


@pytest.mark.parametrize(
    "changes",
    [dict(prior="gaussian"), dict(feasibility="cost"), dict(refine_steps=0), dict(refine_steps=1), dict(refine_steps=6), dict(latent_dim=3)],
)
def test_ablation_switches_train_and_act(dataset, changes):
    """Each switch reaches what it names: the action is the refiner's k-step schedule of the
    configured latent width through the configured prior, and "w/o HJ" thresholds a cost value."""
    algo = FLRP(tiny(**changes), device="cpu")
    hist = algo.fit(dataset, steps=3, log_every=3, progress=False)
    assert all(np.isfinite(v) for v in hist[-1].values())
    obs = dataset.observations[:7]
    a = algo.predict(obs)
    assert a.shape == (7, 2) and np.all(np.abs(a) <= 1.0)
    m, c = algo.modules, algo.config
    s = torch.as_tensor(algo.spec.normalize_obs(obs))
    with torch.no_grad():
        u = torch.zeros(7, c.latent_dim or 4)  # deterministic acting starts at u_0 = 0
        for k in refine_schedule(c.refine_steps):  # the configured number of expert moves
            u = u + m["refiner"].experts[k](s, u)
        z, _ = m["prior"](u, s)
        expected = m["decoder"].mean(torch.cat([s, z], -1)).numpy() * algo.spec.action_bound
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
    assert algo.latent_dim == (c.latent_dim or 4) and m["refiner"].experts["h"](s, u).shape == (7, algo.latent_dim)
    if c.prior == "gaussian":  # no flow: z = u
        assert list(m["prior"].parameters()) == [] and torch.equal(m["prior"](u, s)[0], u)
    else:
        assert list(m["prior"].parameters()) and not torch.equal(m["prior"](u, s)[0], u)
    data = algo._to_device(algo.prepare_data(dataset))
    batch = {k: v[:64] for k, v in data.items()}
    with torch.no_grad():
        q = m["q_h_target"](batch["obs"], batch["act"]).max(0).values
        _, _, offset = algo._feasibility_values(q, m["v_h"](batch["obs"]), batch)
    if c.feasibility == "cost":  # feasible iff below the zero-violation samples' 75th percentile
        masked = q[batch["zero_violation"] > 0]
        assert offset.item() == pytest.approx(torch.quantile(masked, 0.75).item(), rel=1e-5)
    else:
        assert "zero_violation" not in data and offset.item() == 0.0


def test_sampled_acting_decodes_fresh_base_noise(dataset):
    """Stochastic acting (the paper's protocol) decodes u_0 drawn from the algorithm's noise stream:
    the same states give other actions on the next call, and exactly the decoded draw."""
    algo = FLRP(tiny(), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    obs = dataset.observations[:16]
    state = algo._noise_gen.get_state()
    first = algo.predict(obs, deterministic=False)
    second = algo.predict(obs, deterministic=False)
    assert np.abs(first - second).min() > 0  # every state: a new draw, a new action
    algo._noise_gen.set_state(state)
    s = torch.as_tensor(algo.spec.normalize_obs(obs))
    u0 = torch.randn(16, algo.latent_dim, generator=algo._noise_gen)
    with torch.no_grad():
        drawn = algo.decode_base(s, u0).numpy() * algo.spec.action_bound
        mode = algo.decode_base(s, torch.zeros_like(u0)).numpy() * algo.spec.action_bound
    np.testing.assert_allclose(first, drawn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(algo.predict(obs), mode, rtol=1e-5, atol=1e-6)  # deterministic: u_0 = 0
    assert np.abs(first - mode).max() > 1e-3


def test_resume_with_different_settings_is_refused(dataset, tmp_path):
    FLRP(tiny(), device="cpu").fit(dataset, steps=2, run_dir=tmp_path, checkpoint_every=2, progress=False)
    with pytest.raises(Exception, match="different settings .*refine_steps"):
        FLRP(tiny(refine_steps=5), device="cpu").fit(dataset, steps=4, run_dir=tmp_path, progress=False)


def test_same_seed_same_numbers(dataset):
    a = FLRP(tiny(seed=3), device="cpu")
    b = FLRP(tiny(seed=3), device="cpu")
    c = FLRP(tiny(seed=4), device="cpu")
    for x in (a, b, c):
        x.fit(dataset, steps=3, progress=False)
    assert torch.equal(a.parameters_vector(), b.parameters_vector())
    assert not torch.equal(a.parameters_vector(), c.parameters_vector())


def _bandit(n: int = 4000, seed: int = 0) -> OfflineDataset:
    """One-step episodes from a fixed state; actions +-0.8 with rewards 1 / 0, all safe."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((n, 2), np.float32) + rng.normal(scale=0.01, size=(n, 2)).astype(np.float32)
    good = rng.uniform(size=n) < 0.5
    act = np.where(good, 0.8, -0.8)[:, None].astype(np.float32) + rng.normal(scale=0.02, size=(n, 1)).astype(np.float32)
    return OfflineDataset(obs, obs.copy(), act, good.astype(np.float32), np.zeros(n, np.float32), np.ones(n, bool), np.zeros(n, bool))


def refined_and_unrefined(ds: OfflineDataset, cfg: FLRPConfig, steps: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """First action dimension of FLRP trained on ``ds``, sampled (u_0 ~ N(0, I)) with its T refinement
    steps and, with the same weights, without them (refine_steps = 0), on 256 data states."""
    algo = FLRP(cfg, device="cpu")
    algo.fit(ds, steps=steps, progress=False)
    obs = ds.observations[:256]
    refined = algo.predict(obs, deterministic=False)[:, 0]
    unrefined = FLRP(dataclasses.replace(cfg, refine_steps=0), device="cpu")
    unrefined.build(algo.spec)
    for k in algo.modules:
        unrefined.modules[k].load_state_dict(algo.modules[k].state_dict())
    return refined, unrefined.predict(obs, deterministic=False)[:, 0]


def test_reward_expert_moves_the_action_toward_high_advantage_data():
    """Eq. 15 with its sign fixed: the refined action approaches the high-advantage action (+0.8),
    where the un-refined prior decodes the data's average behaviour. With the paper's literal sign
    the expert would push a_bar away from the data actions instead."""
    ds = _bandit()
    cfg = FLRPConfig(hidden=32, batch_size=128, tau=0.05, prior_layers=2, posterior_layers=1, lr=1e-3, lambda_safety=0.0)
    refined, base = refined_and_unrefined(ds, cfg)
    assert refined.mean() > 0.5, refined.mean()
    assert abs(refined.mean() - 0.8) < abs(base.mean() - 0.8) - 0.2


def test_base_kl_certificate_is_zero_without_refinement_and_grows_with_it(dataset):
    """Lemma 3: the action-space shift is bounded by KL(q_u || N(0, I)) of the refined base samples.
    Without refinement u_T = u_0 ~ N(0, I), so the estimate is ~0; a trained refiner moves it."""
    algo = FLRP(tiny(refine_steps=0), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    kl0 = algo.base_kl(dataset.observations[:4], samples=4000)
    assert np.all(np.abs(kl0) < 0.01), kl0
    refined = FLRP(tiny(lr=1e-2), device="cpu")
    refined.fit(dataset, steps=30, progress=False)
    kl = refined.base_kl(dataset.observations[:4], samples=4000)
    assert np.all(kl > 0.01), kl


def test_each_expert_is_trained_by_its_own_objective(dataset):
    """``expert_grads="own"`` (Sec. 3.3's expert-specific objectives as routing): after one step the
    safety expert's weights depend on L_h only (turning L_r and L_sh off leaves them unchanged), and
    likewise for the others. With the default "joint" (one summed Eq. 17) every expert sees every loss."""

    def experts_after_one_step(**kw):
        algo = FLRP(tiny(**kw), device="cpu")
        algo.fit(dataset, steps=1, progress=False)
        return {k: params_of_module(algo.modules["refiner"].experts[k]) for k in ("h", "r", "sh")}

    def params_of_module(mod):
        return torch.cat([p.detach().flatten() for p in mod.parameters()])

    full = experts_after_one_step(expert_grads="own")
    only_h = experts_after_one_step(expert_grads="own", lambda_reward=0.0, lambda_shared=0.0)
    only_r = experts_after_one_step(expert_grads="own", lambda_safety=0.0, lambda_shared=0.0)
    assert torch.equal(full["h"], only_h["h"]) and torch.equal(full["r"], only_r["r"])
    assert not torch.equal(full["sh"], only_h["sh"])  # the shared expert did get L_sh
    joint = experts_after_one_step(expert_grads="joint")
    joint_h = experts_after_one_step(expert_grads="joint", lambda_reward=0.0, lambda_shared=0.0)
    assert not torch.equal(joint["h"], joint_h["h"])
