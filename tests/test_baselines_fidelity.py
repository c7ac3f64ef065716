"""Each baseline's defaults follow its authors' code (issue 14); every test pins one choice.

Sources (read for facts): OSRL @ 03a4586 (BC, BCQ-L, CPQ, CDT), FISOR @ 2097e8b, LSPC @ 6bad522;
file and line at each value in the algorithm modules.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flrp.algos import Algorithm
from flrp.algos.bc import BC, BCSafe
from flrp.algos.bcq_lag import BCQLag
from flrp.algos.cdt import CDT, OSRL_CDT_TASKS, osrl_target_return
from flrp.algos.cpq import CPQ
from flrp.algos.fisor import FISOR
from flrp.algos.flrp import FLRPConfig
from flrp.algos.lspc import LSPC
from flrp.algos.sources import bootstrap_stops, dataset_task
from flrp.data.dataset import OfflineDataset
from flrp.data.hdf5 import validate_arrays
from flrp.data.tasks import get_task, task_of_file_name
from tests.conftest import synthetic_arrays

BASELINES = [BC, BCSafe, BCQLag, CPQ, CDT, FISOR, LSPC]
TD_CLASSES = [BCQLag, CPQ, FISOR, LSPC]  # the methods with TD backups


def as_task(ds: OfflineDataset, dsrl_file: str) -> OfflineDataset:
    """The same data, as if read from a DSRL file of that name (the loader reads the task from the name)."""
    return dataclasses.replace(ds, source=f"/data/{dsrl_file}", task=task_of_file_name(dsrl_file).name)


# ----------------------------------------------------------------------------- data conventions


@pytest.mark.parametrize("cls", BASELINES)
def test_every_baseline_trains_on_raw_observations_by_default(cls, dataset, tiny):
    """OSRL, FISOR and LSPC never standardise observations; FLRP keeps its own default."""
    assert cls.Config().normalize_obs is False
    algo = tiny(cls)
    algo.fit(dataset, steps=1, progress=False)
    assert algo.spec.obs_mean == [0.0] * dataset.obs_dim and algo.spec.obs_std == [1.0] * dataset.obs_dim
    np.testing.assert_array_equal(algo.prepare_data(dataset)["obs"], dataset.observations)
    standardised = tiny(cls, normalize_obs=True)
    standardised.fit(dataset, steps=1, progress=False)
    assert standardised.spec.obs_mean != [0.0] * dataset.obs_dim
    assert FLRPConfig().normalize_obs is True


@pytest.mark.parametrize("cls", TD_CLASSES)
def test_timeouts_end_the_backup_by_default(cls, dataset, tiny):
    """OSRL, FISOR and LSPC: done = terminals | timeouts; the flag restores flrp's bootstrapping."""
    assert cls.Config().timeout_is_terminal is True
    assert dataset.timeouts.any() and not dataset.terminals.any()
    algo = tiny(cls)
    algo.fit(dataset, steps=1, progress=False)
    np.testing.assert_array_equal(algo.prepare_data(dataset)["terminal"], dataset.timeouts.astype(np.float32))
    bootstrapping = tiny(cls, timeout_is_terminal=False)
    bootstrapping.fit(dataset, steps=1, progress=False)
    assert not bootstrapping.prepare_data(dataset)["terminal"].any()


def test_bootstrap_stops_and_dataset_task(dataset):
    arrays = synthetic_arrays(n_episodes=2, length=3)
    arrays["terminals"][1] = True
    ds = OfflineDataset(**validate_arrays(arrays, "x"))
    np.testing.assert_array_equal(bootstrap_stops(ds, False), [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(bootstrap_stops(ds, True), [0, 1, 1, 0, 0, 1])
    assert dataset_task(dataset) is None  # in memory
    assert dataset_task(as_task(dataset, "OfflineBallCircle-v0-80-1000.hdf5")).name == "BallCircle"
    # the task comes with the data, never from a file name read by the algorithm
    assert dataset_task(dataclasses.replace(dataset, source="/data/OfflineBallCircle-v0-80-1000.hdf5")) is None
    assert task_of_file_name("OfflineMetadrive-easysparse-v0-85-1000.hdf5").name == "EasySparse" and task_of_file_name("x.hdf5") is None


# ----------------------------------------------------------------------------- BCQ-L and CPQ


def all_terminal_zero_cost(dataset: OfflineDataset) -> OfflineDataset:
    n = len(dataset)
    return dataclasses.replace(dataset, terminals=np.ones(n, bool), costs=np.zeros(n, np.float32))


@pytest.mark.parametrize("cls, metric", [(BCQLag, "critic/qc_loss"), (CPQ, "critic/qc_td")])
@pytest.mark.parametrize("masked", [False, True])
def test_osrl_cost_backup_has_no_done_mask(cls, metric, masked, dataset, tiny):
    """OSRL (bcql.py:172, cpq.py:161): y_c = c + gamma Qc', even at a terminal. With every step
    terminal, zero costs and cost critics that output 5 everywhere, the TD error is 5 - 0.99 * 5
    unmasked (OSRL) and 5 - 0 with ``cost_done_mask``."""
    algo = tiny(cls, cost_done_mask=masked)
    ds = all_terminal_zero_cost(dataset)
    algo.fit(ds, steps=1, progress=False)  # builds; the next step starts from the set critics
    for name in ("cost_critic", "cost_critic_target"):
        algo.modules[name].net.layers[-1].weight.data.zero_()
        algo.modules[name].set_output_bias(5.0)
    members = algo.modules["cost_critic"].net.layers[-1].bias.shape[0]
    row = algo.fit(ds, steps=2, log_every=1, progress=False)[-1]
    per_member = 25.0 if masked else (5.0 - 0.99 * 5.0) ** 2
    assert row[metric] == pytest.approx(members * per_member, rel=1e-4)


@pytest.mark.parametrize("shared", [False, True])
def test_osrl_draws_next_actions_separately_for_the_cost_target(shared, dataset, monkeypatch, tiny):
    """OSRL samples next actions in critic_loss and again in cost_critic_loss (bcql.py:141/164,
    cpq.py:141/159); ``shared_next_action`` reuses one draw."""
    calls: dict[str, list[int]] = {"bcq": [], "cpq": []}
    bcq = tiny(BCQLag, shared_next_action=shared)
    bcq.fit(dataset, steps=1, progress=False)
    decode = bcq.modules["vae"].decode
    monkeypatch.setattr(bcq.modules["vae"], "decode", lambda s, *a, **k: calls["bcq"].append(s.shape[0]) or decode(s, *a, **k))
    bcq.fit(dataset, steps=2, progress=False)
    B, N = bcq.config.batch_size, bcq.config.sample_action_num
    assert calls["bcq"].count(B * N) == (1 if shared else 2)  # the next-state decodes (s' repeated N times)

    cpq = tiny(CPQ, shared_next_action=shared)
    cpq.fit(dataset, steps=1, progress=False)
    sample = cpq.modules["actor"].sample
    monkeypatch.setattr(cpq.modules["actor"], "sample", lambda s, *a, **k: calls["cpq"].append(1) or sample(s, *a, **k))
    cpq.fit(dataset, steps=2, progress=False)
    assert len(calls["cpq"]) == (2 if shared else 3)  # next action(s) + the actor's sample


def test_cpq_default_ood_term_adds_no_gradient_to_the_cost_critic(dataset, tiny):
    """OSRL's OOD term (the default) is built under no_grad (cpq.py:158-187): the cost critic's
    step equals plain TD whatever alpha is; the paper's term changes it."""

    def cost_critic_after(log_alpha: float, **kw) -> torch.Tensor:
        algo = tiny(CPQ, log_alpha_init=log_alpha, **kw)
        algo.fit(dataset, steps=2, progress=False)
        return torch.cat([p.detach().flatten() for p in algo.modules["cost_critic"].parameters()])

    assert CPQ.Config().ood_penalty == "osrl"
    assert torch.equal(cost_critic_after(-5.0), cost_critic_after(5.0))
    assert not torch.equal(cost_critic_after(-5.0, ood_penalty="paper"), cost_critic_after(5.0, ood_penalty="paper"))


# ----------------------------------------------------------------------------- FISOR


def test_fisor_batch_split_two_actor_steps_and_critics_on_the_first_rows(dataset, monkeypatch, tiny):
    """FISOR fisor.py:611-634: the actor steps on each half of the batch, the critics on its first
    256 rows (here 16 rows, halves of 8, critics on 4)."""
    import flrp.algos.fisor as fisor_mod

    algo = tiny(FISOR)
    algo.fit(dataset, steps=1, progress=False)
    seen: dict[str, list[torch.Tensor]] = {"actor": [], "critic": []}
    loss = algo.modules["actor"].loss
    monkeypatch.setattr(algo.modules["actor"], "loss", lambda s, a, w, **k: seen["actor"].append(s.clone()) or loss(s, a, w, **k))
    terms = fisor_mod.iql_reward_terms
    monkeypatch.setattr(fisor_mod, "iql_reward_terms", lambda q, qt, v, s, *a: seen["critic"].append(s.clone()) or terms(q, qt, v, s, *a))
    batch = algo.sample_batch(algo._to_device(algo.prepare_data(dataset)), algo.config.batch_size)
    algo.update(batch)
    assert [s.shape[0] for s in seen["actor"]] == [8, 8]
    torch.testing.assert_close(torch.cat(seen["actor"]), batch["obs"])
    assert all(torch.equal(s, batch["obs"][:4]) for s in seen["critic"])


def test_fisor_defaults_give_its_layout_and_cosine_end(dataset):
    c = FISOR.Config()
    assert (c.batch_size, c.actor_updates, c.critic_batch_size) == (2048, 2, 256)
    algo = FISOR(c, device="cpu")
    # 1e6 steps x 2 actor updates of a 3e6-step cosine: the last lr is lr / 4 (Table 4's 1
    # update per step would end at 0.75 lr).
    assert algo._actor_lr(c.steps * c.actor_updates - 1) == pytest.approx(c.lr / 4, rel=1e-5)


def test_fisor_updates_v_before_q(dataset, monkeypatch, tiny):
    """FISOR updates V, then Q against the updated V (fisor.py:631-634): the second critic pass of
    a step sees a V that the first one already moved."""
    import flrp.algos.fisor as fisor_mod

    algo = tiny(FISOR)
    algo.fit(dataset, steps=1, progress=False)
    v_seen: list[torch.Tensor] = []
    terms = fisor_mod.iql_reward_terms

    def spy(q, qt, v, *a):
        v_seen.append(torch.cat([p.detach().flatten().clone() for p in v.parameters()]))
        return terms(q, qt, v, *a)

    monkeypatch.setattr(fisor_mod, "iql_reward_terms", spy)
    q_before = torch.cat([p.detach().flatten().clone() for p in algo.modules["q_r"].parameters()])
    algo.fit(dataset, steps=2, progress=False)
    assert len(v_seen) == 2 and not torch.equal(v_seen[0], v_seen[1])
    assert not torch.equal(q_before, torch.cat([p.detach().flatten() for p in algo.modules["q_r"].parameters()]))


def test_fisor_reward_scale_from_dsrl_constants_when_the_task_is_known(dataset, tiny):
    """FISOR train_offline.py:54: r * max_steps / (MAX_EPISODE_REWARD - MIN_EPISODE_REWARD) of the
    task; in-memory data falls back to the data's own range."""
    ball = as_task(dataset, "OfflineBallCircle-v0-80-1000.hdf5")
    task = get_task("BallCircle")
    algo = tiny(FISOR)
    algo.fit(ball, steps=1, progress=False)
    expected = task.max_episode_steps / (task.max_reward - task.min_reward)
    assert algo.reward_scale_for(ball) == pytest.approx(expected)
    np.testing.assert_allclose(algo.prepare_data(ball)["rew"], dataset.rewards * expected, rtol=1e-6)
    rets = dataset.episode_returns()
    assert algo.reward_scale_for(dataset) == pytest.approx(dataset.episode_lengths().max() / (rets.max() - rets.min()))
    assert tiny(FISOR, reward_scale=2.0).reward_scale_for(ball) == 2.0


# ----------------------------------------------------------------------------- LSPC


def test_lspc_batch_is_lspcs():
    assert LSPC.Config().batch_size == 1024  # lspc_iql_configs.py:37


# ----------------------------------------------------------------------------- CDT


def test_osrl_target_return_rule():
    ball = OSRL_CDT_TASKS["BallCircle"]  # (700, 10), (750, 20), (800, 40)
    assert [osrl_target_return(ball, k) for k in (10, 20, 40, 30, 5)] == [700.0, 750.0, 800.0, 750.0, 700.0]
    button = OSRL_CDT_TASKS["CarButton1"]  # Safety-Gymnasium: pairs at 20/40/80 only
    assert osrl_target_return(button, 10) == 35.0
    assert OSRL_CDT_TASKS["MediumDense"] == OSRL_CDT_TASKS["CarCircle"]  # OSRL inherits the base values
    from flrp.data.tasks import list_tasks

    assert {t.name for t in list_tasks() if t.suite != "toy"} == set(OSRL_CDT_TASKS)


@pytest.mark.parametrize(
    "dsrl_file, limit, target, aug",
    [
        ("OfflineBallCircle-v0-80-1000.hdf5", 10.0, 700.0, (2, 1000.0, 200.0)),  # cdt_configs.py:208
        ("OfflineBallCircle-v0-80-1000.hdf5", 20.0, 750.0, (2, 1000.0, 200.0)),
        ("OfflineAntRun-v0-150-1000.hdf5", 10.0, 700.0, (3, 1000.0, 150.0)),  # cdt_configs.py:107
        ("OfflineCarButton1Gymnasium-v0-250-1000.hdf5", 10.0, 35.0, (0, 45.0, 10.0)),  # :225, no pair at 10
        (None, 10.0, None, (1, None, None)),  # unknown task: data-derived
    ],
)
def test_cdt_uses_osrls_per_task_targets_and_augmentation(dsrl_file, limit, target, aug, dataset, monkeypatch, tiny):
    import flrp.algos.cdt as cdt_mod

    seen: list[dict] = []
    real = cdt_mod.pareto_augmentation
    monkeypatch.setattr(cdt_mod, "pareto_augmentation", lambda *a, **k: seen.append(k) or real(*a, **k))
    ds = as_task(dataset, dsrl_file) if dsrl_file else dataset
    algo = tiny(CDT, cost_limit=limit)
    algo.fit(ds, steps=1, progress=False)
    if target is None:  # the best safe return of the data
        rets, costs = dataset.episode_returns(), dataset.episode_costs()
        target = rets[costs <= limit].max()
    assert algo.target_return == pytest.approx(target) and algo.target_cost == limit
    assert (seen[-1]["deg"], seen[-1]["max_reward"], seen[-1]["max_rew_decrease"]) == aug
    explicit = tiny(CDT, target_return=1.0, aug_deg=4, aug_max_reward=9.0)
    explicit.fit(ds, steps=1, progress=False)
    assert explicit.target_return == 1.0 and (seen[-1]["deg"], seen[-1]["max_reward"]) == (4, 9.0)


def test_cdt_per_task_target_survives_save_load(dataset, tmp_path, tiny):
    algo = tiny(CDT)
    algo.fit(as_task(dataset, "OfflineCarRun-v0-40-1000.hdf5"), steps=1, progress=False)
    loaded = Algorithm.load(algo.save(tmp_path / "m.pt"), device="cpu")
    assert loaded.target_return == algo.target_return == 575.0  # cdt_configs.py:157
