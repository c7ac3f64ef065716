"""FLRP's convergence and recovery levers (issue 11), the presets, and the safety expert's direction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flrp.algos import FLRP, FLRPConfig
from flrp.algos.flrp import FLRP_PRESETS, flow_weights, select_candidates
from flrp.data.dataset import OfflineDataset
from flrp.errors import FlrpError
from flrp.nn.critic_losses import behaviour_hj_value
from tests.test_flrp import refined_and_unrefined

TINY = dict(hidden=16, batch_size=64, prior_layers=2, posterior_layers=1)


def tiny(**kw) -> FLRPConfig:
    return FLRPConfig(**{**TINY, **kw})


def params_of(algo, *names):
    return torch.cat([p.detach().flatten().clone() for n in names for p in algo.modules[n].parameters()])


# ---------------------------------------------------------------- presets
def test_paper_preset_is_the_literal_paper_and_the_defaults():
    """The paper preset is Tables 4-5 / Algorithm 1: every lever at its paper value."""
    assert FLRP.preset_config("paper") == FLRPConfig()
    c = FLRPConfig()
    assert (c.tau, c.hj_next_value, c.critic_warmup_steps, c.flow_warmup_steps) == (0.001, "target", 0, 0)
    assert (c.hj_warm_start_steps, c.infeasible_weighting, c.select_samples, c.select_margin) == (0, "paper", 1, 0.0)
    assert (c.steps, c.hidden, c.batch_size) == (1_000_000, 256, 512)
    assert (c.recovery, c.flow_episode_cost_max, c.expectile_feasibility, c.feasibility_gamma) == ("none", None, 0.9, None)


def test_fast_preset_changes_only_named_fields_and_flags_override_it():
    fast = FLRP.preset_config("fast")
    changed = {f.name for f in dataclasses.fields(FLRPConfig) if getattr(fast, f.name) != getattr(FLRPConfig(), f.name)}
    assert changed == {k for k, v in FLRP_PRESETS["fast"].items() if getattr(FLRPConfig(), k) != v}
    assert FLRP.preset_config("fast", select_samples=1).select_samples == 1
    with pytest.raises(Exception, match="unknown preset 'nope'"):
        FLRP.preset_config("nope")


def test_cli_preset_flag_builds_the_preset_config():
    from flrp.algos.flrp import FLRP as F
    from flrp.cli import _config_from_args, build_parser

    ns = build_parser("flrp").parse_args(["train", "--dataset", "toy", "--preset", "fast", "--tau", "0.002"])
    cfg = _config_from_args(FLRPConfig, ns, None, F)
    assert cfg.tau == 0.002 and cfg.select_samples == FLRP_PRESETS["fast"]["select_samples"]
    ns = build_parser("flrp").parse_args(["train", "--dataset", "toy"])
    assert _config_from_args(FLRPConfig, ns, None, F) == FLRPConfig()


# ---------------------------------------------------------------- phased schedule (Sec. 3.4)
def test_phased_schedule_trains_critics_then_flow_then_everything(dataset):
    algo = FLRP(tiny(critic_warmup_steps=3, flow_warmup_steps=3), device="cpu")
    assert [algo.phase(s) for s in (0, 2, 3, 5, 6, 100)] == ["critic", "critic", "flow", "flow", "all", "all"]
    algo.fit(dataset, steps=1, progress=False)
    snap = lambda: {k: params_of(algo, k) for k in ("q_h", "v_h", "q_r", "v_r", "prior", "posterior", "decoder", "refiner")}  # noqa: E731
    s1 = snap()
    algo.fit(dataset, steps=3, progress=False)  # steps 1, 2: critic phase
    s3 = snap()
    for k in ("q_h", "v_h", "q_r", "v_r"):
        assert not torch.equal(s1[k], s3[k]), k
    for k in ("prior", "posterior", "decoder", "refiner"):
        assert torch.equal(s1[k], s3[k]), k
    algo.fit(dataset, steps=6, progress=False)  # steps 3-5: flow phase
    s6 = snap()
    for k in ("prior", "posterior", "decoder"):
        assert not torch.equal(s3[k], s6[k]), k
    assert torch.equal(s3["refiner"], s6["refiner"])
    algo.fit(dataset, steps=8, progress=False)  # all
    assert not torch.equal(s6["refiner"], snap()["refiner"])


def test_phased_resume_is_bit_exact_across_the_phase_boundary(dataset, tmp_path):
    cfg = tiny(critic_warmup_steps=4, flow_warmup_steps=2, tau=0.005, hj_next_value="online", hj_warm_start_steps=3, infeasible_weighting="fisor")
    full = FLRP(cfg, device="cpu")
    full.fit(dataset, steps=10, progress=False)
    FLRP(cfg, device="cpu").fit(dataset, steps=5, run_dir=tmp_path, checkpoint_every=5, progress=False)
    resumed = FLRP(cfg, device="cpu")
    resumed.fit(dataset, steps=10, run_dir=tmp_path, checkpoint_every=5, progress=False)
    assert torch.equal(full.parameters_vector(), resumed.parameters_vector())


# ---------------------------------------------------------------- HJ backup levers
def _set_constant(net, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    net.set_output_bias(value)


@pytest.mark.parametrize("which, expect_big", [("target", False), ("online", True)])
def test_hj_backup_reads_the_chosen_v_h(dataset, which, expect_big):
    """Eq. 9 reads V_h^tgt(s'); FISOR reads the online V_h. Make them disagree (online 100,
    target -1): with h in {-1, 25} the target backup stays <= 25, the online one is ~99."""
    algo = FLRP(tiny(hj_next_value=which, critic_warmup_steps=5), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    _set_constant(algo.modules["v_h"], 100.0)
    _set_constant(algo.modules["v_h_target"], -1.0)
    for name in ("q_h", "q_h_target"):
        _set_constant(algo.modules[name], 0.0)
    from flrp.nn.critic_losses import hj_feasibility_terms

    data = algo._to_device(algo.prepare_data(dataset))
    b = algo.sample_batch(data, 64)
    m = algo.modules
    terms = hj_feasibility_terms(m["q_h"], m["q_h_target"], m["v_h"], m["v_h" if which == "online" else "v_h_target"],
                                 b["obs"], b["act"], b["h"], b["next_obs"], b["terminal"], 0.99, 0.9)
    # twin members both output 0, so loss_q = 2 * mean(y^2); hand-computed y per row:
    nv = 100.0 if which == "online" else -1.0
    y = 0.01 * b["h"] + 0.99 * torch.maximum(b["h"], torch.tensor(nv))
    assert torch.allclose(terms.loss_q, 2 * y.square().mean())
    assert (terms.loss_q > 5000) == expect_big


def test_behaviour_hj_value_hand_computed():
    h = np.array([-1, -1, 25, -1, -1, -1], np.float32)
    v = behaviour_hj_value(h, [(0, 3), (3, 6)], 0.99)
    assert v[2] == 25.0  # last step: its own h
    assert v[1] == pytest.approx(0.01 * -1 + 0.99 * 25)
    assert v[0] == pytest.approx(0.01 * -1 + 0.99 * (0.01 * -1 + 0.99 * 25))
    np.testing.assert_allclose(v[3:], -1.0)  # a safe trajectory stays at h_safe


def test_warm_start_regresses_q_h_to_the_behaviour_value(dataset):
    """During the warm start Q_h's loss is the MSE to V_b (not the backup): with Q_h constant 0
    the loss is 2 * mean(V_b^2) over the batch."""
    algo = FLRP(tiny(hj_warm_start_steps=10, critic_warmup_steps=10), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    for name in ("q_h", "q_h_target"):
        _set_constant(algo.modules[name], 0.0)
    data = algo._to_device(algo.prepare_data(dataset))
    state = algo._sampler_state()
    b = algo.sample_batch(data, 64)
    algo._set_sampler_state(state)
    metrics = algo.update(b)
    assert torch.allclose(metrics["critic/q_h"], 2 * b["h_mc"].square().mean())


# ---------------------------------------------------------------- weights and selection
def test_flow_weights_paper_and_fisor_hand_computed():
    q_h = torch.tensor([-1.0, 30.0, 20.0])
    v_h = torch.tensor([-1.0, 25.0, 25.0])
    adv_r = torch.tensor([0.5, 0.5, 0.5])
    w, w_r = flow_weights(q_h, v_h, adv_r, FLRPConfig())
    sig = torch.sigmoid(torch.tensor(1.0))
    assert torch.allclose(w[0], sig * sig) and w[1] < 1e-20 and w[2] < 1e-15
    assert torch.allclose(w_r, torch.tensor([np.exp(1.5), 0.0, 0.0], dtype=torch.float32))
    w, w_r = flow_weights(q_h, v_h, adv_r, FLRPConfig(infeasible_weighting="fisor"))
    assert torch.allclose(w[0], sig * sig)  # feasible states: unchanged
    assert torch.allclose(w[1:], torch.tensor([np.exp(-25.0), 150.0], dtype=torch.float32))  # exp(5 (V_h - Q_h)), clip 150
    assert torch.allclose(w_r[1:], w[1:])


def test_select_candidates_prefers_reward_among_feasible_else_lowest_q_h():
    q_h = torch.tensor([[-1.0, 5.0], [-0.5, 3.0], [2.0, 4.0]])  # (N=3, B=2)
    q_r = torch.tensor([[1.0, 9.0], [2.0, 0.0], [9.0, 0.0]])
    assert select_candidates(q_h, q_r).tolist() == [1, 1]  # state 0: best Q_r of the feasible two; state 1: lowest Q_h


def test_select_margin_narrows_what_counts_as_feasible():
    q_h = torch.tensor([[-0.3, -0.9], [-0.8, -0.2], [0.5, 3.0]])  # (N=3, B=2)
    q_r = torch.tensor([[9.0, 9.0], [1.0, 1.0], [0.0, 0.0]])
    assert select_candidates(q_h, q_r).tolist() == [0, 0]  # Q_h <= 0: the best Q_r
    assert select_candidates(q_h, q_r, margin=0.5).tolist() == [1, 0]  # state 0: only -0.8 is <= -0.5
    assert select_candidates(q_h, q_r, margin=0.95).tolist() == [1, 0]  # none feasible: the lowest Q_h
    q_c = torch.tensor([[2.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    assert select_candidates(q_h, q_r, q_c, margin=0.95).tolist() == [2, 2]  # or the lowest Q_c
    # tiered: when none clears the margin, the best Q_r among Q_h <= 0 comes before the lowest Q_c
    assert select_candidates(q_h, q_r, q_c, margin=0.95, tiered=True).tolist() == [0, 0]
    assert select_candidates(q_h, q_r, q_c, margin=0.5, tiered=True).tolist() == [1, 0]  # margin met: as untiered


def test_select_margin_is_inference_only(dataset):
    """Training never reads select_margin: the same seed trains the same weights with any margin,
    which is what lets benchmarks/flrp_acting_rules.py re-evaluate a trained model with another one."""
    a, b = (FLRP(tiny(select_samples=4, select_margin=m), device="cpu") for m in (0.0, 0.6))
    for algo in (a, b):
        algo.fit(dataset, steps=3, progress=False)
    for name, module in a.modules.items():
        assert all(torch.equal(x, y) for x, y in zip(module.state_dict().values(), b.modules[name].state_dict().values())), name


@pytest.mark.parametrize("with_margin", [False, True])
def test_select_samples_acts_with_the_chosen_candidate(dataset, with_margin):
    """act() with N candidates returns exactly the candidate select_candidates picks from the
    critics' values of the N decoded samples (same noise), with the config's margin."""
    algo = FLRP(tiny(select_samples=8), device="cpu")
    algo.fit(dataset, steps=3, progress=False)
    s = torch.as_tensor(algo.spec.normalize_obs(dataset.observations[:6]))
    state = algo._noise_gen.get_state()
    with torch.no_grad():
        rep = s.repeat(8, 1)
        cand = algo.decode_base(rep, torch.randn(48, algo.latent_dim, generator=algo._noise_gen))
        q_h = algo.modules["q_h"](rep, cand).max(0).values.view(8, 6)
        q_r = algo.modules["q_r"](rep, cand).min(0).values.view(8, 6)
        # a margin that splits the candidates, so an act() that ignored it would pick otherwise
        margin = -float(q_h.median()) if with_margin else 0.0
        pick = select_candidates(q_h, q_r, margin=margin)
        assert margin >= 0 and (not with_margin or not torch.equal(pick, select_candidates(q_h, q_r)))
        algo.config.select_margin = margin
        algo._noise_gen.set_state(state)
        a = algo.act(s, deterministic=False)
    assert torch.equal(a, cand.view(8, 6, -1)[pick, torch.arange(6)])
    assert a.shape == (6, 2) and bool((a.abs() <= 1).all())
    assert algo.predict(dataset.observations[:6], deterministic=True).shape == (6, 2)  # u_0 = 0: no selection


# ---------------------------------------------------------------- the safety expert's direction
def _hazard_bandit(n: int = 4000, seed: int = 0) -> OfflineDataset:
    """One-step episodes from a fixed state; actions +-0.8 with equal reward, +0.8 incurs cost."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(scale=0.01, size=(n, 2)).astype(np.float32)
    bad = rng.uniform(size=n) < 0.5
    act = np.where(bad, 0.8, -0.8)[:, None].astype(np.float32) + rng.normal(scale=0.02, size=(n, 1)).astype(np.float32)
    return OfflineDataset(obs, obs.copy(), act, np.zeros(n, np.float32), bad.astype(np.float32), np.ones(n, bool), np.zeros(n, bool))


def test_safety_expert_moves_the_action_toward_low_q_h():
    """Eq. 14 with lambda_r = 0: the refined action moves from the data's average toward the
    action with low Q_h (-0.8), away from the costly one (+0.8). The flow is made blind to
    safety (Eq. 11's weight flat, no shaping) so that it models both actions and only the
    safety expert can tell them apart."""
    ds = _hazard_bandit()
    cfg = FLRPConfig(hidden=32, batch_size=128, tau=0.05, prior_layers=2, posterior_layers=1, lr=1e-3, lambda_reward=0.0,
                     weight_temperature_q=1e6, weight_temperature_v=1e6, lambda_shape=0.0)
    refined, base = refined_and_unrefined(ds, cfg)
    assert refined.mean() < -0.3, (refined.mean(), base.mean())
    assert refined.mean() < base.mean() - 0.3, (refined.mean(), base.mean())


# ---------------------------------------------------------------- the safety diagnosis
def _trace(cost, q, v, path_first, path_last, feas):
    from flrp.evaluation.diagnose import EpisodeTrace

    n = len(cost)
    return EpisodeTrace(
        seed=0, obs=[np.zeros(2)] * n, act=[np.zeros(1)] * n, cost=list(cost), reward=[1.0] * n, v_h=list(v),
        q_h_taken=list(q), q_h_path=[np.array([a, b]) for a, b in zip(path_first, path_last)],
        any_feasible_prior=list(feas), any_feasible_refined=list(feas),
    )


def test_diagnosis_figures_hand_computed():
    """One episode: costly steps 5-7 (one excursion of 3) and 9 (one of 1); the taken action is
    flagged at steps 3-7; one cost-free episode with 1 flagged step of 10."""
    from flrp.data.tasks import get_task
    from flrp.evaluation.diagnose import summarize

    cost = [0, 0, 0, 0, 0, 1, 1, 1, 0, 1]
    q = [-1, -1, -1, 2, 2, 2, 2, 2, -1, -1]
    v = [-1, -1, 3, 3, 3, 3, 3, 3, 3, 3]
    # unrefined flagged at steps 0-3 with a feasible sample at 0-2; refinement fixes steps 0 and 1
    first = [1, 1, 1, 1, -1, -1, -1, -1, -1, -1]
    last = [-1, -1, 1, 1, -1, -1, -1, -1, -1, -1]
    feas = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    bad = _trace(cost, q, v, first, last, feas)
    good = _trace([0] * 10, [3] + [-1] * 9, [-1] * 10, [-1] * 10, [-1] * 10, [1] * 10)
    d = summarize([bad, good], get_task("ToyHazard"), horizon=4)
    assert d.onsets == 2 and d.excursions == [3, 1]
    # onset at 5: flagged at k=0,1,2 (steps 5,4,3), not k=3,4 (steps 2,1); onset at 9: k=0..4 = steps 9..5 -> -,-,+,+,+
    assert d.recall_q == [0.5, 0.5, 1.0, 0.5, 0.5]
    assert d.recall_v[3] == 1.0 and d.recall_v[4] == 0.5  # V_h > 0 from step 2 on
    assert d.false_alarm_rate == pytest.approx(0.1)
    assert d.flagged_steps == 3 and d.refiner_effectiveness == pytest.approx(2 / 3)
    assert d.steps_outside_frac == pytest.approx(4 / 20)
    assert "critic" in d.verdict


def test_diagnose_replays_exactly_the_evaluation_episodes(tmp_path, dataset):
    """The diagnosis runs the evaluation's own episodes (same seeds and acting-noise groups): its
    returns and costs equal evaluate()'s. On the toy task it also scores the flags against the
    exact kernel, and writes its three files."""
    from flrp.data.tasks import get_task
    from flrp.evaluation.diagnose import diagnose
    from flrp.evaluation.rollout import evaluate
    from flrp.training.datasets import resolve_dataset

    ds, task = resolve_dataset("toy")
    algo = FLRP(tiny(select_samples=4), device="cpu")
    algo.fit(ds, steps=30, progress=False)
    algo.save(tmp_path / "model.pt")
    res = evaluate(algo, task, episodes=7, seed=100)
    d = diagnose(tmp_path / "model.pt", get_task("ToyHazard"), tmp_path, episodes=7, seed=100, samples=3, horizon=5, dataset=ds)
    assert d.return_mean == pytest.approx(res.return_mean) and d.cost_mean == pytest.approx(res.cost_mean)
    assert d.toy is not None and 0.0 <= d.toy["Q_h flag accuracy"] <= 1.0 and d.toy["steps"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diagnosis.json", "diagnosis.md", "diagnosis.png", "model.pt"]
    # the data section: the model's own critics on logged pairs, in the json and the markdown
    assert d.data is not None and d.data["pairs"] == min(40_000, len(ds))
    assert 0.0 <= d.data["share of pairs from episodes above the cost limit"] <= 1.0
    assert "| data: " in (tmp_path / "diagnosis.md").read_text()
    with pytest.raises(FlrpError, match="obs/act dims"):  # another task's data, refused before any rollout
        diagnose(tmp_path / "model.pt", get_task("ToyHazard"), tmp_path, episodes=1, dataset=dataset)


def test_data_flags_hand_computed():
    """Six logged pairs: episodes of cost 0, 5 and 20 (limit 10), two pairs each."""
    from flrp.evaluation.diagnose import UNSAFE_SHARE_KEY, Diagnosis, _verdict, data_flags

    q = [-1.0, 2.0, -0.5, -1.0, -1.0, -0.2]  # feasible: pairs 0, 2, 3, 4, 5
    v = [1.0, -1.0, -1.0, -1.0, 3.0, 3.0]
    cost = [0, 0, 5, 5, 20, 20]
    f = data_flags(q, v, cost, cost_limit=10.0)
    assert f["pairs"] == 6 and f["share of pairs from episodes above the cost limit"] == pytest.approx(1 / 3)
    assert f["V_h(s) > 0 on states of cost-free episodes"] == pytest.approx(0.5)
    assert f["Q_h(s,a) <= 0 on pairs of cost-free episodes"] == pytest.approx(0.5)
    assert f["Q_h(s,a) <= 0 on pairs of episodes above the cost limit"] == pytest.approx(1.0)
    assert f[UNSAFE_SHARE_KEY] == pytest.approx(2 / 5)
    with pytest.raises(FlrpError, match="differ in length"):
        data_flags(q, v[:5], cost)
    # the verdict names the data when most feasible-looking pairs come from unsafe episodes
    d = Diagnosis(episodes=1, horizon=1, onsets=1, recall_q=[1.0, 1.0], recall_v=[1.0, 1.0], false_alarm_rate=0.0,
                  flagged_steps=0, refiner_effectiveness=float("nan"), feasible_available_when_flagged=0.0, excursions=[3],
                  steps_outside_frac=0.1, saturated_frac=0.0, return_mean=0.0, cost_mean=3.0, norm_reward=0.0, norm_cost=0.3,
                  verdict="", data=data_flags(q, v, [20, 20, 20, 20, 0, 0]))
    assert "the data: 0.60 of the logged pairs" in _verdict(d)
    d.data = f
    assert "the data" not in _verdict(d)
    # a run's flow filter: only the pairs it keeps count as imitated
    g = data_flags(q, v, [20, 20, 20, 20, 0, 0], kept=[False, True, False, False, True, True])
    assert g["share of pairs the run's flow filter keeps"] == pytest.approx(0.5) and g[UNSAFE_SHARE_KEY] == pytest.approx(0.0)


def test_feasibility_gamma_sets_the_hj_discount_only(dataset):
    """feasibility_gamma replaces gamma in Eq. 9's backup (and the warm start), nowhere else:
    with Q_h = 0 and V_h^tgt = 10 the Q_h loss is 2 mean(y^2), y = (1-g_h) h + g_h max(h, 10)."""
    for g_h in (None, 0.5):
        algo = FLRP(tiny(feasibility_gamma=g_h, critic_warmup_steps=10), device="cpu")
        algo.fit(dataset, steps=1, progress=False)
        for name in ("q_h", "q_h_target"):
            _set_constant(algo.modules[name], 0.0)
        _set_constant(algo.modules["v_h_target"], 10.0)
        data = algo._to_device(algo.prepare_data(dataset))
        state = algo._sampler_state()
        b = algo.sample_batch(data, 64)
        algo._set_sampler_state(state)
        g = 0.99 if g_h is None else g_h
        y = (1 - g) * b["h"] + g * torch.clamp(b["h"], min=10.0)
        assert torch.allclose(algo.update(b)["critic/q_h"], 2 * y.square().mean())
    assert FLRPConfig().feasibility_gamma is None


def test_recovery_critic_ranks_ways_back_where_q_h_is_flat(dataset, tmp_path):
    """recovery="cost": Q_c/V_c train (and resume bit-exactly); where no candidate is feasible the
    lowest-Q_c one is kept, and the infeasible-state weights use V_c - Q_c."""
    assert select_candidates(torch.tensor([[5.0], [5.0], [5.0]]), torch.zeros(3, 1), torch.tensor([[3.0], [1.0], [2.0]])).tolist() == [1]
    q_h, v_h = torch.tensor([25.0, 25.0]), torch.tensor([25.0, 25.0])  # flat Q_h inside a violation
    w, _ = flow_weights(q_h, v_h, torch.zeros(2), FLRPConfig(infeasible_weighting="fisor"), adv_rec=torch.tensor([0.2, -1.0]))
    assert torch.allclose(w, torch.exp(torch.tensor([1.0, -5.0])))
    cfg = tiny(recovery="cost", infeasible_weighting="fisor", select_samples=4)
    algo = FLRP(cfg, device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    before = params_of(algo, "q_c", "v_c")
    hist = algo.fit(dataset, steps=4, log_every=4, progress=False)
    assert not torch.equal(before, params_of(algo, "q_c", "v_c")) and "critic/q_c" in hist[-1]
    assert algo.predict(dataset.observations[:3], deterministic=False).shape == (3, 2)
    FLRP(cfg, device="cpu").fit(dataset, steps=3, run_dir=tmp_path, checkpoint_every=3, progress=False)
    resumed = FLRP(cfg, device="cpu")
    resumed.fit(dataset, steps=6, run_dir=tmp_path, checkpoint_every=3, progress=False)
    full = FLRP(cfg, device="cpu")
    full.fit(dataset, steps=6, progress=False)
    assert torch.equal(full.parameters_vector(), resumed.parameters_vector())


def test_exact_time_to_violation_agrees_with_the_kernel():
    """The toy diagnosis's exact time to an unavoidable violation (full braking) is finite
    exactly where the closed-form kernel says the state is doomed."""
    from flrp.envs.toy_kernel import feasible_by_braking
    from flrp.evaluation.diagnose import _braking_time_to_violation

    rng = np.random.default_rng(0)
    x, v = rng.uniform(-1, 1.2, 2000), rng.uniform(-2, 2, 2000)
    t = _braking_time_to_violation(x, v)
    np.testing.assert_array_equal(t <= 200, ~feasible_by_braking(x, v))
    from flrp.envs.toy import X_HAZARD

    assert (x > X_HAZARD).any() and (t[x > X_HAZARD] == 0).all()  # already in the hazard: 0 steps


def test_diagnose_finds_the_runs_dataset_or_says_why_not(tmp_path):
    """flrp diagnose's data section reads the dataset recorded in run.json; a recorded file that
    has gone is skipped with a note, 'none' skips it, and a given path that does not exist is an error."""
    import json

    from flrp.data.tasks import get_task
    from flrp.training import run_dataset

    task = get_task("ToyHazard")
    assert run_dataset(tmp_path, task) == (None, "data section skipped: no dataset recorded in run.json (pass --dataset FILE)")
    (tmp_path / "run.json").write_text(json.dumps({"dataset": str(tmp_path / "gone.hdf5")}))
    ds, note = run_dataset(tmp_path, task)
    assert ds is None and "gone.hdf5 is not there" in note
    assert run_dataset(tmp_path, task, "none")[0] is None
    (tmp_path / "run.json").write_text(json.dumps({"dataset": "toy"}))
    ds, note = run_dataset(tmp_path, task)
    assert ds is not None and len(ds) > 0 and note == "data section from toy"
    with pytest.raises(FlrpError, match="missing.hdf5"):
        run_dataset(tmp_path, task, str(tmp_path / "missing.hdf5"))


def test_flow_episode_cost_max_drops_unsafe_episodes_from_the_flow_only(dataset):
    """flow_episode_cost_max = c: pairs of episodes with cost > c get weight 0 in Eq. 11, 12 and
    15 (a batch of only such pairs trains no flow term), the critics still learn from them; a
    value that keeps no episode is a one-line error; None (the paper) keeps every pair."""
    ep_cost = dataset.episode_costs()
    c_max = float(np.median(ep_cost))
    algo = FLRP(tiny(flow_episode_cost_max=c_max), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    data = algo.prepare_data(dataset)
    np.testing.assert_array_equal(data["flow_keep"] > 0, ep_cost[dataset.episode_index()] <= c_max)
    assert 0 < data["flow_keep"].mean() < 1
    b = algo.sample_batch(algo._to_device(data), 64)
    b = {k: v[b["flow_keep"] == 0] for k, v in b.items()}  # only pairs of dropped episodes
    before = params_of(algo, "q_h", "v_h")
    m = algo.update(b)
    assert float(m["flow/elbo"]) == 0.0 and float(m["flow/shape"]) == 0.0 and float(m["feas/w_mean"]) == 0.0
    assert not torch.equal(before, params_of(algo, "q_h", "v_h"))
    assert ep_cost.min() > 0  # every synthetic episode has some cost
    with pytest.raises(FlrpError, match="keeps no pair of"):
        FLRP(tiny(flow_episode_cost_max=float(ep_cost.min()) / 2), device="cpu").fit(dataset, steps=1, progress=False)
    paper = FLRP(tiny(), device="cpu")
    paper.fit(dataset, steps=1, progress=False)
    assert "flow_keep" not in paper.prepare_data(dataset) and FLRPConfig().flow_episode_cost_max is None
    # flow_episode_filter="feasible-states": where V_h(s) > 0 the dropped pairs keep their
    # (FISOR) weights - the data's ways back; "all-states" drops them there too
    for scope, trains in (("all-states", False), ("feasible-states", True)):
        algo = FLRP(tiny(flow_episode_cost_max=c_max, flow_episode_filter=scope, infeasible_weighting="fisor"), device="cpu")
        algo.fit(dataset, steps=1, progress=False)
        _set_constant(algo.modules["v_h"], 5.0)  # every state infeasible
        m = algo.update(dict(b))
        assert (float(m["feas/w_mean"]) > 0) == trains and (float(m["flow/elbo"]) != 0) == trains
    assert FLRPConfig().flow_episode_filter == "all-states"
    # "cost-to-go": a pair is kept iff its episode's cost from that step on is <= c
    algo = FLRP(tiny(flow_episode_cost_max=2.0, flow_episode_filter="cost-to-go"), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    keep = algo.prepare_data(dataset)["flow_keep"] > 0
    for start, end in dataset.episode_bounds[:5]:
        for t in range(start, end):
            assert keep[t] == (dataset.costs[t:end].sum() <= 2.0)
    assert 0 < keep.mean() < 1 and keep[np.array([e - 1 for _, e in dataset.episode_bounds])].any()


def _acting_rules():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("flrp_acting_rules", Path(__file__).parents[1] / "benchmarks" / "flrp_acting_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_acting_rules_that_skip_the_refiner(dataset):
    """benchmarks/flrp_acting_rules.py's rules without refinement (results/flrp-levers/parts):
    'prior' at sigma 0 is the prior's unrefined mode; 'priorsel' keeps what select_candidates picks
    among the unrefined mode and N - 1 unrefined samples; 'mode' takes the unrefined mode where its
    Q_h clears the margin, else the preset's pick among N refined candidates."""
    rules = _acting_rules()
    algo = FLRP(tiny(select_samples=4), device="cpu")
    algo.fit(dataset, steps=3, progress=False)
    s = torch.as_tensor(algo.spec.normalize_obs(dataset.observations[:6]))
    rows = torch.arange(6)
    zeros = torch.zeros(6, algo.latent_dim)
    with torch.no_grad():
        mode = algo.decode_base(s, zeros, steps=0)
        assert not torch.equal(mode, algo.decode_base(s, zeros))  # the refiner moves it
        assert torch.equal(rules.make_act(algo, "prior", 0.0, 4)(s, False), mode)

        state = algo._noise_gen.get_state()
        u0 = torch.randn(24, algo.latent_dim, generator=algo._noise_gen)
        u0[:6] = 0.0
        rep = s.repeat(4, 1)
        cand = algo.decode_base(rep, u0, steps=0)
        q_h = algo.modules["q_h"](rep, cand).max(0).values.view(4, 6)
        q_r = algo.modules["q_r"](rep, cand).min(0).values.view(4, 6)
        algo._noise_gen.set_state(state)
        a = rules.make_act(algo, "priorsel", 1.0, 4, margin=0.0)(s, False)
        assert torch.equal(a, cand.view(4, 6, -1)[select_candidates(q_h, q_r), rows])

        algo._noise_gen.set_state(state)
        assert torch.equal(rules.make_act(algo, "mode", 1.0, 4, margin=-float("inf"))(s, False), mode)  # always clears
        algo._noise_gen.set_state(state)
        never = rules.make_act(algo, "mode", 1.0, 4, margin=float("inf"))(s, False)
        algo._noise_gen.set_state(state)
        assert torch.equal(never, rules.make_act(algo, "flrp", 1.0, 4, margin=float("inf"))(s, False))
        assert not torch.equal(never, mode)
