"""FISOR and LSPC baselines: defaults, updates, FISOR's weight arithmetic and action selection,
the DDPM actor, LSPC's variants and per-task values, save/load, exact resume, and FISOR and LSPC
on the toy task."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from flrp.algos import Algorithm
from flrp.algos.fisor import FISOR, FISORConfig, fisor_weights
from flrp.algos.lspc import LSPC, LSPCConfig
from flrp.data.spec import DataSpec
from flrp.errors import FlrpError
from flrp.nn.diffusion import DiffusionActor, vp_beta_schedule

torch.set_num_threads(1)

# FISOR's layout at 1/32 scale: 64 rows, two actor steps on 32 each, critics on the first 8.
TINY_FISOR = dict(hidden=16, batch_size=64, critic_batch_size=8, actor_hidden=16, actor_blocks=1, time_dim=8, time_hidden=16, samples=4)
TINY_LSPC = dict(hidden=16, batch_size=64, latent_dim=4)


def tiny(cls: type, **kw) -> Algorithm:
    base = TINY_FISOR if cls is FISOR else TINY_LSPC
    return cls(cls.Config(**{**base, **kw}), device="cpu")


def params_of(algo: Algorithm, name: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in algo.modules[name].parameters()]


BOTH = pytest.mark.parametrize("cls", [FISOR, LSPC], ids=["fisor", "lspc"])


# ----------------------------------------------------------------------------- defaults


def test_fisor_defaults_are_fisors():
    c = FISORConfig()
    assert (c.steps, c.gamma, c.hidden, c.lr, c.tau, c.actor_tau) == (1_000_000, 0.99, 256, 3e-4, 0.005, 0.001)
    assert (c.expectile_reward, c.expectile_feasibility) == (0.9, 0.9)
    assert (c.reward_temperature, c.feasibility_temperature, c.reward_weight_clip, c.feasibility_weight_clip) == (3.0, 5.0, 100.0, 150.0)
    assert (c.h_unsafe, c.h_safe, c.samples, c.lr_decay_steps, c.actor_weight_decay) == (25.0, -1.0, 16, 3_000_000, 0.0)
    assert (c.diffusion_steps, c.beta_min, c.beta_max) == (5, 0.1, 10.0)
    assert (c.actor_hidden, c.actor_blocks, c.actor_dropout, c.actor_layer_norm, c.time_dim, c.time_hidden) == (256, 3, 0.1, True, 64, 128)
    # FISOR's batch layout by default (fisor.py:611-634); Table 4's 512 / 1 / all is one set of flags away.
    assert (c.batch_size, c.actor_updates, c.critic_batch_size) == (2048, 2, 256)
    assert (c.timeout_is_terminal, c.normalize_obs, c.reward_scale) == (True, False, None)


def test_lspc_defaults_are_lspcs():
    c = LSPCConfig()
    assert (c.steps, c.batch_size, c.gamma, c.hidden, c.lr, c.tau, c.expectile) == (1_000_000, 1024, 0.99, 256, 3e-4, 0.005, 0.7)
    assert (c.timeout_is_terminal, c.normalize_obs) == (True, False)
    assert (c.beta_reward, c.beta_cost, c.exp_adv_max_reward, c.exp_adv_max_cost) == (2.0, 2.0, 200.0, 200.0)
    assert (c.latent_dim, c.vae_beta, c.encoder_log_std_min, c.encoder_log_std_max) == (32, 0.5, -10.0, 2.0)
    assert (c.variant, c.clamp_vc_in_loss, c.reward_scale) == ("lspc-o", True, 1.0)


# ----------------------------------------------------------------------------- updates


@BOTH
def test_metrics_are_finite(cls, dataset):
    hist = tiny(cls).fit(dataset, steps=5, log_every=5, progress=False)
    assert hist and all(np.isfinite(v) for v in hist[-1].values())
    keys = ("actor/loss", "critic/q_h", "critic/v_h", "critic/q_r", "critic/v_r") if cls is FISOR else (
        "critic/q_c", "critic/v_c", "cvae/recon", "cvae/kl", "encoder/loss")
    assert set(keys) <= set(hist[-1])


# ----------------------------------------------------------------------------- FISOR


def test_fisor_weights_on_hand_made_values():
    e = math.e
    #              unsafe state (V_h > 0)        | feasible state (V_h <= 0)
    v_h = torch.tensor([2.0, 1.0, 1.0, 0.5, -1.0, -1.0, -1.0, 0.0, 0.0])
    q_h = torch.tensor([1.8, -30.0, 3.0, 0.7, -0.5, -2.0, 0.3, 0.0, 1e-3])
    q = torch.tensor([9.0, 9.0, 9.0, 9.0, 2.0, 11.0, 5.0, 1.0, 5.0])
    v = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5, 1.0, 0.0, 1.0, 0.0])
    w = fisor_weights(q, v, q_h, v_h, 3.0, 5.0, 100.0, 150.0)
    expected = [
        e**1.0,  # exp(5 (2 - 1.8)); the reward advantage is ignored in the unsafe region
        150.0,  # exp(5 * 31) clipped at cost_ub = 150
        math.exp(-10.0),  # exp(5 (1 - 3)): actions raising Q_h above V_h are nearly ignored
        e**-1.0,  # exp(5 (0.5 - 0.7)), even though Q_h > 0
        math.exp(1.5),  # feasible action: exp(3 (2 - 1.5))
        100.0,  # exp(3 * 10) clipped at 100
        0.0,  # feasible state, infeasible action (Q_h > 0): weight 0 whatever the advantage
        1.0,  # V_h = Q_h = 0 counts as feasible: exp(3 * 0)
        0.0,  # V_h = 0 but Q_h > 0
    ]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-6, atol=0.0)
    # The temperatures and clips are the arguments, not constants.
    w2 = fisor_weights(q[:1], v[:1], q_h[:1], v_h[:1], 3.0, 1.0, 100.0, 150.0)
    torch.testing.assert_close(w2, torch.tensor([math.exp(0.2)]))


class _QhIsFirstActionDim(nn.Module):
    """Stub twin Q_h: both members return a[:, 0] (so argmin Q_h = the most negative a_0)."""

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.stack([a[:, 0], a[:, 0] - 1.0])


def test_fisor_acts_with_the_min_q_h_sample_of_the_ema_actor(dataset):
    algo = tiny(FISOR, samples=8)
    algo.fit(dataset, steps=2, progress=False)
    algo.modules["q_h_target"] = _QhIsFirstActionDim()
    obs = torch.as_tensor(algo.spec.normalize_obs(dataset.observations[:5]))
    gen = torch.Generator().manual_seed(algo.config.seed + 3)  # act's deterministic stream
    with algo.eval_mode():
        cand = algo.modules["actor_ema"].sample(obs, 8, generator=gen)  # (5, 8, 2)
        chosen = algo.act(obs, deterministic=True)
    idx = cand[..., 0].argmin(1)  # twin max of the stub is a_0 itself
    torch.testing.assert_close(chosen, cand[torch.arange(5), idx])
    assert torch.unique(cand[..., 0]).numel() > 5  # the candidates really differ


def test_fisor_actor_lr_follows_optax_cosine_over_actor_steps():
    algo = FISOR(FISORConfig(lr=3e-4), device="cpu")
    assert algo._actor_lr(0) == pytest.approx(3e-4)
    assert algo._actor_lr(1_500_000) == pytest.approx(1.5e-4)
    assert algo._actor_lr(3_000_000) == algo._actor_lr(5_000_000) == pytest.approx(0.0, abs=1e-12)
    # FISOR's run: 2 actor updates per step -> after 1e6 steps the lr is lr/4.
    assert algo._actor_lr(2 * 1_000_000) == pytest.approx(3e-4 / 4)
    assert FISOR(FISORConfig(lr_decay_steps=None), device="cpu")._actor_lr(10**7) == 3e-4


def test_fisor_batch_layouts(dataset):
    fisor_layout = tiny(FISOR, batch_size=64, actor_updates=2, critic_batch_size=16)
    hist = fisor_layout.fit(dataset, steps=2, log_every=2, progress=False)
    assert all(np.isfinite(v) for v in hist[-1].values())
    assert fisor_layout.optimizers["actor"].state[next(iter(fisor_layout.modules["actor"].parameters()))]["step"] == 4
    with pytest.raises(FlrpError, match="equal chunks"):
        tiny(FISOR, batch_size=63, actor_updates=2).fit(dataset, steps=1, progress=False)
    # More critic rows than the batch has: all of them, as FISOR's x[:256] slice of a smaller batch.
    whole = tiny(FISOR, critic_batch_size=1000)
    whole.fit(dataset, steps=1, progress=False)
    assert torch.isfinite(whole.parameters_vector()).all()


def test_fisor_h_labels_and_reward_scale(dataset):
    algo = tiny(FISOR)
    algo.fit(dataset, steps=1, progress=False)
    data = algo.prepare_data(dataset)
    np.testing.assert_array_equal(data["h"], np.where(dataset.costs > 0, 25.0, -1.0))
    rets = dataset.episode_returns()
    scale = dataset.episode_lengths().max() / (rets.max() - rets.min())
    np.testing.assert_allclose(data["rew"], dataset.rewards * scale, rtol=1e-5)
    np.testing.assert_array_equal(data["terminal"], dataset.timeouts.astype(np.float32))  # FISOR: timeouts end backups
    bootstrapping = tiny(FISOR, timeout_is_terminal=False)
    bootstrapping.fit(dataset, steps=1, progress=False)
    np.testing.assert_array_equal(bootstrapping.prepare_data(dataset)["terminal"], dataset.terminals.astype(np.float32))


# ----------------------------------------------------------------------------- DDPM actor


def test_vp_schedule_matches_the_closed_form():
    T, bmin, bmax = 5, 0.1, 10.0
    expected = [1 - math.exp(-bmin / T - 0.5 * (bmax - bmin) * (2 * t - 1) / T**2) for t in range(1, T + 1)]
    torch.testing.assert_close(vp_beta_schedule(T, bmin, bmax), torch.tensor(expected))
    net = DiffusionActor(3, 2, steps=T, width=8, blocks=1, time_dim=4, cond_hidden=8)
    torch.testing.assert_close(net.alpha_hats, torch.cumprod(1 - torch.tensor(expected), 0))


def test_ddpm_sampler_recovers_a_fixed_action():
    """Trained on a = (0.5, -0.3) everywhere, the reverse chain must land there; a wrong update
    rule (coefficients, noise scale or step order) lands elsewhere."""
    torch.manual_seed(0)
    net = DiffusionActor(3, 2, width=32, blocks=1, dropout=0.0, time_dim=8, cond_hidden=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    target = torch.tensor([0.5, -0.3])
    for _ in range(400):
        s = torch.randn(128, 3, generator=gen)
        loss = net.loss(s, target.expand(128, 2), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    a = net.sample(torch.randn(64, 3, generator=gen), n=4, generator=gen)
    assert a.shape == (64, 4, 2) and a.abs().max() <= 1.0
    torch.testing.assert_close(a.mean((0, 1)), target, atol=0.05, rtol=0.0)
    assert a.std((0, 1)).max() < 0.15


def test_ddpm_randomness_comes_only_from_the_generator():
    net = DiffusionActor(3, 2, width=8, blocks=1, time_dim=4, cond_hidden=8)  # dropout 0.1, training mode
    s, a = torch.randn(16, 3), torch.rand(16, 2) * 2 - 1
    l1 = net.loss(s, a, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    l2 = net.loss(s, a, generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2)
    assert net.loss(s, a, torch.zeros(16), generator=torch.Generator().manual_seed(5)) == 0.0
    x1 = net.sample(s, 3, generator=torch.Generator().manual_seed(1))
    x2 = net.sample(s, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x1, x2)


# ----------------------------------------------------------------------------- LSPC


def test_lspc_variants_decode_the_documented_latents(dataset):
    algo = tiny(LSPC)
    algo.fit(dataset, steps=2, progress=False)
    m, clamp = algo.modules, algo.latent_clamp
    obs = torch.as_tensor(algo.spec.normalize_obs(dataset.observations[:6]))
    with algo.eval_mode(), torch.no_grad():
        mu, _ = m["encoder"](obs)
        torch.testing.assert_close(algo.act(obs), m["cvae"].decode(obs, torch.tanh(mu) * clamp))  # LSPC-O
        algo.config = dataclasses.replace(algo.config, variant="lspc-s")
        torch.testing.assert_close(algo.act(obs), m["cvae"].decode(obs, torch.zeros(6, 4)))  # LSPC-S
        stoch = algo.act(obs, deterministic=False)
    assert stoch.shape == (6, 2) and not torch.equal(stoch, algo.act(obs))


def test_lspc_per_task_values(dataset):
    algo = tiny(LSPC)
    algo.fit(dataset, steps=1, progress=False)
    assert algo.task_name is None and (algo.latent_clamp, algo.safe_threshold) == (0.25, 999.0)
    bullet = dataclasses.replace(dataset, task="CarCircle")
    algo = tiny(LSPC)
    algo.fit(bullet, steps=1, progress=False)
    assert algo.task_name == "CarCircle" and algo.latent_clamp == 0.6
    drive = tiny(LSPC)
    drive.fit(dataclasses.replace(dataset, task="EasySparse"), steps=1, progress=False)
    assert (drive.latent_clamp, drive.safe_threshold) == (0.25, 0.02)
    explicit = tiny(LSPC, latent_clamp=0.4)
    explicit.fit(bullet, steps=1, progress=False)
    assert explicit.latent_clamp == 0.4


def test_lspc_per_task_value_survives_save_load(dataset, tmp_path):
    algo = tiny(LSPC)
    algo.fit(dataclasses.replace(dataset, task="BallRun"), steps=2, progress=False)
    loaded = Algorithm.load(algo.save(tmp_path / "m.pt"), device="cpu")
    assert loaded.latent_clamp == 0.6
    np.testing.assert_array_equal(algo.predict(dataset.observations[:4]), loaded.predict(dataset.observations[:4]))


@pytest.mark.parametrize("clamp_in_loss", [True, False])
def test_lspc_cost_value_below_zero_is_frozen_by_lspcs_clamp(dataset, clamp_in_loss):
    """LSPC clamps V_c at 0 before its loss: a V_c that is negative on every state gets no gradient
    and never recovers. ``clamp_vc_in_loss=False`` trains the raw V_c toward the same target."""
    algo = tiny(LSPC, clamp_vc_in_loss=clamp_in_loss)
    algo.build(DataSpec.from_dataset(dataset))
    algo.modules["v_c"].set_output_bias(-100.0)
    before = params_of(algo, "v_c")
    algo.fit(dataset, steps=3, progress=False)
    moved = any(not torch.equal(b, a) for b, a in zip(before, params_of(algo, "v_c")))
    assert moved is (not clamp_in_loss)


# ----------------------------------------------------------------------------- toy task


@pytest.fixture
def toy(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))
    from flrp.training.datasets import resolve_dataset

    return resolve_dataset("toy")


def test_fisor_stays_safe_on_the_toy_task_and_its_feasibility_guidance_is_why(toy):
    """FISOR (small nets, 3000 steps) keeps the normalised cost <= 1 on the toy task, whose data is
    60% unsafe episodes. The same diffusion actor with FISOR's guidance removed (weights 1, one
    sample, i.e. FISOR's actor_objective="bc" without min-Q_h selection) crashes into the hazard,
    so the safety comes from the feasibility critics, not from the data or the architecture."""
    from flrp.evaluation.rollout import evaluate

    ds, task = toy
    small = dict(hidden=32, batch_size=256, actor_hidden=32, actor_blocks=1, time_dim=16, time_hidden=32, actor_tau=0.01)
    algo = FISOR(FISORConfig(**small), device="cpu")
    algo.fit(ds, steps=3000, progress=False)
    res = evaluate(algo, task, episodes=10)
    assert res.norm_cost_mean <= 1.0, res.line()

    unguided = FISOR(FISORConfig(**small, actor_objective="bc", samples=1), device="cpu")
    unguided.fit(ds, steps=3000, progress=False)
    base = evaluate(unguided, task, episodes=10)
    assert base.norm_cost_mean > 1.0, base.line()


def test_lspc_is_safe_on_the_toy_task_and_its_cost_weighted_cvae_is_why(toy):
    """LSPC's decoder is a CVAE fitted with cost-advantage weights exp(2 (V_c - Q_c)), so latents
    near the prior's centre decode to low-cost actions. The encoder picks reward-maximising
    latents inside the clamped box around that centre. Trained on the toy task (small nets, 6000
    steps, V_c trained unclamped), both LSPC-O (encoder -> decoder) and LSPC-S (clamped prior ->
    decoder) keep the normalised cost <= 0.5 on data that is 60% unsafe episodes, and LSPC-O
    earns more than LSPC-S. The same run with the cost weights switched off (beta_cost = 0: a
    plain CVAE of all the data) drives into the hazard (3000 steps suffice), so the safety comes from the cost critics.

    Measured (seeds 0 and 1, evaluation seeds 10000+): cost 0 for both variants from 5000 steps
    on, LSPC-O return 8-10 vs LSPC-S -12 to 3 at 6000 steps; beta_cost = 0: cost 67-70. LSPC's
    own clamp-before-loss (``clamp_vc_in_loss=True``) is not used here: on the toy data it can
    leave V_c frozen below 0 (see the test above), and then Q_c learns only the one-step cost."""
    from flrp.evaluation.rollout import evaluate

    ds, task = toy
    small = dict(hidden=64, batch_size=256, latent_dim=8, clamp_vc_in_loss=False)
    algo = LSPC(LSPCConfig(**small), device="cpu")
    algo.fit(ds, steps=6000, progress=False)
    res_o = evaluate(algo, task, episodes=10)
    algo.config = dataclasses.replace(algo.config, variant="lspc-s")
    res_s = evaluate(algo, task, episodes=10)
    assert res_o.norm_cost_mean <= 0.5, res_o.line()
    assert res_s.norm_cost_mean <= 0.5, res_s.line()
    assert res_o.return_mean > res_s.return_mean, (res_o.line(), res_s.line())

    unweighted = LSPC(LSPCConfig(**small, beta_cost=0.0), device="cpu")
    unweighted.fit(ds, steps=3000, progress=False)  # unsafe from early on (cost 75 at 3000 steps, 67-70 at 6000)
    base = evaluate(unweighted, task, episodes=10)
    assert base.norm_cost_mean > 1.0, base.line()
