"""`flrp collect`: DSRL-format datasets made on the simulator (tiny budget, BallRun).

stable-baselines3 is required: without it these tests FAIL (they do not skip), so CI notices a
missing ``flrp[collect]`` extra. The simulator tests skip without Bullet-Safety-Gym, like
tests/test_envs.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from flrp.cli import main
from flrp.collect.behaviour import LagrangeController, PolicySpec, import_sb3, load_actor, safe_name
from flrp.collect.collector import (
    CollectBudget,
    classify_policies,
    collect,
    episode_env_seed,
    get_budget,
    plan_episodes,
)
from flrp.data.hdf5 import REQUIRED_KEYS, load_dsrl_hdf5
from flrp.data.tasks import get_task
from flrp.errors import FlrpError

TASK = "BallRun"


def _require_sb3() -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ModuleNotFoundError:
        pytest.fail("stable-baselines3 is not installed; install flrp[collect] (pip install stable-baselines3==2.9.2). "
                    "This test must not be skipped.")


def test_stable_baselines3_is_installed():
    _require_sb3()


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in REQUIRED_KEYS}


def _assert_same_arrays(a: Path, b: Path) -> None:
    xa, xb = _arrays(a), _arrays(b)
    for k in REQUIRED_KEYS:
        assert xa[k].dtype == xb[k].dtype and xa[k].shape == xb[k].shape, k
        assert np.array_equal(xa[k], xb[k]), k


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    _require_sb3()
    pytest.importorskip("bullet_safety_gym")
    out = tmp_path_factory.mktemp("collect-a")
    return collect(TASK, out, seed=0, budget="tiny", progress=False)


# ---------------------------------------------------------------- no simulator needed


def test_safe_names_keep_the_zip_extension(tmp_path):
    _require_sb3()
    assert safe_name("lam0.5") == "lam0p5"
    assert PolicySpec(lam=0.5).name == "lam0p5" and PolicySpec(lam=20).name == "lam20"
    assert PolicySpec(budget=12.5).name == "budget12p5"
    assert PolicySpec(lam=0.3, relative=True).name == "rlam0p3"
    assert PolicySpec(lam=0.5, relative=True).effective_lam(16.0) == 8.0
    with pytest.raises(FlrpError, match="reward scale"):
        PolicySpec(lam=0.5, relative=True).effective_lam(None)
    assert "." not in PolicySpec(lam=1e-3).name
    # The trap itself: SB3 writes "x_lam0.5_final" without ".zip"; the safe name gets one.
    import gymnasium
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gymnasium.make("Pendulum-v1"), n_steps=64, batch_size=32, device="cpu")
    model.save(tmp_path / f"x_{PolicySpec(lam=0.5).name}_final")
    assert (tmp_path / "x_lam0p5_final.zip").exists()


def test_missing_sb3_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(FlrpError, match=r"stable-baselines3.*pip install stable-baselines3==2\.9\.2") as err:
        import_sb3()
    assert "\n" not in str(err.value)


def test_lagrange_controller_moves_towards_the_budget():
    c = LagrangeController(budget=20, horizon=100, lam0=0.0)
    lams = [c.update(90.0, reward_scale=10.0) for _ in range(5)]
    assert all(b > a for a, b in zip(lams, lams[1:])), lams  # over budget: λ rises
    c2 = LagrangeController(budget=20, horizon=100, lam0=5.0)
    for _ in range(200):
        lam = c2.update(0.0, reward_scale=10.0)
    assert lam == 0.0 and c2.integral == -5.0  # under budget: λ falls to 0, no wind-up below


def test_plan_is_a_pure_function_of_the_seed():
    task = get_task(TASK)
    bud = get_budget("full", task)
    a, b = plan_episodes(0, bud, task), plan_episodes(0, bud, task)
    assert a == b
    assert plan_episodes(1, bud, task) != a
    kinds = {k: sum(p.kind == k for p in a) for k in ("policy", "switch", "late", "random")}
    assert kinds["switch"] > 0.15 * len(a) and kinds["late"] > 0.1 * len(a) and kinds["random"] > 0 and kinds["policy"] > 0.5 * len(a)
    assert all(0 <= p.switch_cost <= task.max_cost for p in a if p.kind == "switch")
    assert all(0 <= p.switch_step <= task.max_episode_steps for p in a if p.kind == "late")
    # the late switch step leaves the unsafe policy about c*/rate steps
    late = plan_episodes(0, bud, task, ("u",), ("s",), {"u": 0.5})
    assert all(p.policy == "s" and p.then_policy == "u" for p in late if p.kind == "late")
    assert len({p.env_seed for p in a}) == len(a) and a[0].env_seed == episode_env_seed(0, 0)
    # collection seeds never meet the evaluation seeds (10000 + i) or another collection seed
    assert min(p.env_seed for p in a) > 10_000 + 1000
    assert not {p.env_seed for p in a} & {p.env_seed for p in plan_episodes(1, bud, task)}


def test_classify_policies():
    unsafe, safe = classify_policies({"lam0": 91.0, "lam2": 90.0, "lam10": 0.0, "lam20": 1.0}, max_cost=80)
    assert unsafe == ("lam0", "lam2") and safe == ("lam10", "lam20")
    # nobody above max_cost/2: the costliest is the unsafe end
    unsafe, safe = classify_policies({"a": 30.0, "b": 0.0}, max_cost=80)
    assert unsafe == ("a",) and safe == ("b",)


# ---------------------------------------------------------------- on the simulator


def test_collect_writes_a_valid_dsrl_file_and_card(collected):
    res = collected
    task = get_task(TASK)
    assert re.fullmatch(r"SafetyBallRun-v0-80-\d+\.hdf5", res.hdf5.name)
    ds = load_dsrl_hdf5(res.hdf5)
    n_traj = int(res.hdf5.stem.rsplit("-", 1)[1])
    assert ds.num_episodes == n_traj == res.card["episode_mix"]["kept"]
    assert set(ds.episode_lengths()) == {task.max_episode_steps}  # Run tasks only time out
    assert ds.timeouts.sum() == n_traj and not ds.terminals.any()
    assert ds.obs_dim == 7 and ds.act_dim == 2
    assert np.all(np.abs(ds.actions) <= 1.0)
    assert np.all(ds.episode_costs() <= task.max_cost)  # DSRL's cap
    assert set(np.unique(ds.costs)) <= {0.0, 1.0}
    # next_observations continue observations inside every episode
    for s, e in ds.episode_bounds[:5]:
        assert np.array_equal(ds.next_observations[s:e - 1], ds.observations[s + 1:e])
    # data card, scatter plot and per-episode table
    card = json.loads(res.card_json.read_text())
    assert card["task"]["name"] == TASK and card["seed"] == 0 and card["budget"] == "tiny"
    assert card["cost_cap"]["applied"] and card["cost_cap"]["value"] == 80
    assert [p["name"] for p in card["policies"]] == ["lam0", "rlam1p25"]
    scale = card["reward_scale"]
    assert scale > 0 and card["policies"][1]["lambda"] == pytest.approx(1.25 * scale)
    assert card["wall_time_s"]["compute_total"] > 0
    md = res.card_md.read_text()
    assert res.hdf5.name in md and res.scatter_png.name in md and "stable-baselines3 2.9.2" in md
    assert res.scatter_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = res.episodes_csv.read_text().splitlines()
    assert len(rows) == 1 + get_budget("tiny", task).episodes
    # the loader finds the task from the file (attrs / DSRL-style name)
    from flrp.training.datasets import resolve_dataset

    _, found = resolve_dataset(str(res.hdf5))
    assert found is not None and found.name == TASK
    assert not list(res.hdf5.parent.glob("*.tmp"))


def test_exported_actor_matches_sb3(collected):
    from stable_baselines3 import PPO

    zips = sorted((collected.work_dir / "policies").glob("*_final.zip"))
    assert [z.name for z in zips] == ["lam0_final.zip", "rlam1p25_final.zip"]
    model, actor = PPO.load(zips[0], device="cpu"), load_actor(zips[0])
    obs = np.random.default_rng(0).normal(size=(16, 7))
    np.testing.assert_allclose(actor(obs), model.predict(obs, deterministic=True)[0], atol=1e-5)


def test_same_seed_gives_identical_data_via_cli(collected, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["collect", TASK, "--out", str(out), "--seed", "0", "--budget", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "trajectories" in printed and "data card" in printed
    other = out / collected.hdf5.name
    assert other.exists(), sorted(p.name for p in out.iterdir())
    _assert_same_arrays(collected.hdf5, other)
    # h5py writes no timestamps: the whole file is identical, not just the arrays
    assert other.read_bytes() == collected.hdf5.read_bytes()


def test_resume_after_deleting_outputs(collected, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(collected.hdf5.parent, out)
    work = out / collected.work_dir.name
    policies, chunks = work / "policies", sorted(work.glob("chunks-*/chunk_*.npz"))
    assert len(chunks) == math.ceil(get_budget("tiny", get_task(TASK)).episodes / 8)
    kept_policy, kept_chunk = policies / "lam0_final.zip", chunks[0]
    before = {p: p.stat().st_mtime_ns for p in (kept_policy, kept_chunk)}
    # lose one policy, one chunk and the dataset itself
    (policies / "rlam1p25_final.zip").unlink()
    chunks[-1].unlink()
    (out / collected.hdf5.name).unlink()
    res = collect(TASK, out, seed=0, budget="tiny", progress=False)
    assert res.hdf5.name == collected.hdf5.name
    _assert_same_arrays(collected.hdf5, res.hdf5)
    assert (policies / "rlam1p25_final.zip").exists() and chunks[-1].exists()
    # what was still there was reused, not redone
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_roundtrip_collect_load_train_evaluate(collected, tmp_path, monkeypatch):
    from flrp.algos.base import Algorithm
    from flrp.evaluation.rollout import evaluate

    run = tmp_path / "bc"
    monkeypatch.chdir(collected.hdf5.parent)  # a relative --dataset is recorded as its absolute path
    code = main(["train", "--algo", "bc-all", "--dataset", collected.hdf5.name, "--steps", "50", "--episodes", "0",
                 "--out", str(run), "--hidden", "16", "--quiet"])
    assert code == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["task"] == TASK and meta["dataset"] == str(collected.hdf5.resolve())
    algo = Algorithm.load(run / "model.pt", device="cpu")
    res = evaluate(algo, get_task(TASK), episodes=2, seed=10_000)
    assert len(res.episodes) == 2
    for x in (res.return_mean, res.cost_mean, res.norm_reward_mean, res.norm_cost_mean):
        assert math.isfinite(x)
    assert all(e.length == 100 for e in res.episodes)


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["collect", "NoSuchTask"], r"unknown task 'NoSuchTask'"),
        (["collect", "ToyHazard"], r"toy task has its own generator"),
        (["collect", "EasySparse"], r"MetaDrive cannot be built here"),
        (["collect", "BallRun", "--seed", "-1"], r"--seed must be >= 0"),
    ],
)
def test_collect_cli_errors_are_one_line(argv, pattern, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flrp: error: ") and "\n" not in err and re.search(pattern, err), err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the ``long`` budget's PPO path


_VEC = dict(n_envs=2, n_steps=512, batch_size=128, normalize=True)


def _vec_budget() -> CollectBudget:
    """``long``'s structure at test size: a vectorised, normalised runner, then a λ fine-tuned from it."""
    return CollectBudget("tinyvec", (
        PolicySpec(lam=0.0, steps=2048, checkpoint_every=1024, seed_offset=1, **_VEC),
        PolicySpec(lam=1.25, relative=True, steps=1024, checkpoint_every=512, seed_offset=2, init_from="lam0", **_VEC),
    ), episodes=12, chunk=6)


def test_long_budget_fine_tunes_each_lambda_from_the_runner():
    for name in ("SwimmerVelocity", "DroneRun"):
        bud = get_budget("long", get_task(name))
        runner, *rest = bud.policies
        tuned = [p for p in rest if not p.label]
        assert runner.lam == 0 and runner.init_from is None and runner.normalize and runner.n_envs == 8
        assert tuned and all(p.init_from == runner.name and p.relative and p.normalize for p in tuned)
        assert sorted(p.lam for p in tuned) == [p.lam for p in tuned] and tuned[-1].lam > 1.25
        assert len({p.seed_offset for p in bud.policies}) == len(bud.policies)
    # DroneRun also trains λ = 3 and 10·r̄ from scratch (fine-tuning the runner never got safe)
    fresh = [p for p in get_budget("long", get_task("DroneRun")).policies if p.label]
    assert [p.name for p in fresh] == ["rlam3-fresh", "rlam10-fresh"] and all(p.init_from is None for p in fresh)
    assert get_budget("long", get_task("SwimmerVelocity")).policies[0].gamma == 0.9999
    # fields added for ``long`` do not change the fingerprints of the budgets made before them
    assert PolicySpec(lam=0.5).fingerprint_dict() == {k: v for k, v in PolicySpec(lam=0.5).__dict__.items()
                                                      if k not in ("n_envs", "normalize", "gamma", "init_from", "label")}
    assert "init_from" in PolicySpec(init_from="lam0").fingerprint_dict()


def test_init_from_must_name_an_earlier_policy():
    a = PolicySpec(lam=0.0, **_VEC)
    with pytest.raises(FlrpError, match="init_from='rlam1' must name an earlier policy"):
        CollectBudget("x", (a, PolicySpec(lam=2.0, init_from="rlam1")), episodes=4)
    with pytest.raises(FlrpError, match="n_envs"):
        PolicySpec(n_envs=3, steps=1000, checkpoint_every=300)


@pytest.fixture(scope="module")
def collected_vec(tmp_path_factory):
    _require_sb3()
    pytest.importorskip("bullet_safety_gym")
    return collect(TASK, tmp_path_factory.mktemp("collect-vec"), seed=0, budget=_vec_budget(), progress=False)


def test_normalised_checkpoints_carry_their_statistics_and_the_actor_applies_them(collected_vec):
    from stable_baselines3 import PPO

    from flrp.collect.behaviour import load_norm, norm_path

    pol = collected_vec.work_dir / "policies"
    zips = sorted(pol.glob("*.zip"))
    assert len(zips) == 6  # two checkpoints and a final model per policy
    assert all(norm_path(z).exists() for z in zips)
    z = pol / "rlam1p25_final.zip"
    model, actor, norm = PPO.load(z, device="cpu"), load_actor(z), load_norm(z)
    assert norm["obs_var"].shape == (7,) and not np.allclose(norm["obs_mean"], 0.0)  # statistics were learned
    obs = np.random.default_rng(0).normal(size=(16, 7)) * 3.0
    # SB3's own VecNormalize, given the saved statistics, is the reference for the transform
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from flrp.collect.behaviour import _penalised_env

    vn = VecNormalize(DummyVecEnv([lambda: _penalised_env(TASK, 0, 0.0)]), clip_obs=float(norm["clip_obs"]), epsilon=float(norm["epsilon"]))
    vn.obs_rms.mean, vn.obs_rms.var = norm["obs_mean"], norm["obs_var"]
    scaled = vn.normalize_obs(obs)
    vn.close()
    np.testing.assert_allclose(actor(obs), model.predict(scaled, deterministic=True)[0], atol=1e-5)
    # ignoring the statistics would act differently: the test above can tell
    assert not np.allclose(actor(obs), model.predict(obs, deterministic=True)[0], atol=1e-3)
    card = collected_vec.card["policies"]
    assert card[1]["ppo_settings"]["init_from"] == "lam0" and card[1]["ppo_settings"]["n_envs"] == 2
    assert "fine-tuned from lam0" in collected_vec.card_md.read_text()


def test_warm_start_copies_the_runners_weights_and_statistics(collected_vec):
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from flrp.collect.behaviour import _penalised_env, _warm_start, load_norm

    pol = collected_vec.work_dir / "policies"
    env = VecNormalize(DummyVecEnv([lambda: _penalised_env(TASK, 5, 1.0)]))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, policy_kwargs={"net_arch": [64, 64]}, seed=5, device="cpu")
    spec = PolicySpec(lam=1.0, init_from="lam0", **_VEC)
    _warm_start(sb3, model, pol, spec)
    src = PPO.load(pol / "lam0_final.zip", device="cpu").policy.state_dict()
    for k, v in model.policy.state_dict().items():
        assert torch.equal(v, src[k]), k
    np.testing.assert_array_equal(env.obs_rms.mean, load_norm(pol / "lam0_final.zip")["obs_mean"])
    with pytest.raises(FlrpError, match="does not exist"):
        _warm_start(sb3, model, pol, PolicySpec(lam=1.0, init_from="nope", **_VEC))
    env.close()


def test_vectorised_collection_is_deterministic(collected_vec, tmp_path):
    again = collect(TASK, tmp_path, seed=0, budget=_vec_budget(), progress=False)
    assert again.hdf5.name == collected_vec.hdf5.name
    _assert_same_arrays(collected_vec.hdf5, again.hdf5)
    assert again.hdf5.read_bytes() == collected_vec.hdf5.read_bytes()


def test_a_damaged_statistics_file_is_a_one_line_error(collected_vec, tmp_path):
    from flrp.collect.behaviour import norm_path

    src = collected_vec.work_dir / "policies" / "lam0_final.zip"
    ckpt = tmp_path / "x_final.zip"
    shutil.copy(src, ckpt)
    norm_path(ckpt).write_bytes(b"not an npz")
    with pytest.raises(FlrpError, match=r"x_final\.norm\.npz: cannot read normalisation statistics") as err:
        load_actor(ckpt)
    assert "\n" not in str(err.value)


def test_statistics_that_do_not_fit_the_policy_are_a_one_line_error(collected_vec, tmp_path):
    from flrp.collect.behaviour import load_norm, norm_path

    src = collected_vec.work_dir / "policies" / "lam0_final.zip"
    ckpt = tmp_path / "y_final.zip"
    shutil.copy(src, ckpt)
    st = load_norm(src)
    st["obs_mean"] = np.zeros(3)
    with open(norm_path(ckpt), "wb") as fh:
        np.savez(fh, **st)
    with pytest.raises(FlrpError, match=r"y_final\.norm\.npz: statistics of shape \(3,\) do not fit"):
        load_actor(ckpt)
    del st["epsilon"]
    with open(norm_path(ckpt), "wb") as fh:
        np.savez(fh, **st)
    with pytest.raises(FlrpError, match="missing key 'epsilon'"):
        load_actor(ckpt)
