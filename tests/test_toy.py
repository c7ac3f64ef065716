"""The toy hazard task: env contract, exact kernel, IoU scoring, behaviour data, HDF5, plot."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.error import ResetNeeded

from flrp.collect.toy import TOY_EPISODES, TOY_SEED, generate_toy_arrays, make_toy_dataset
from flrp.data.dataset import OfflineDataset
from flrp.data.hdf5 import REQUIRED_KEYS, load_dsrl_hdf5
from flrp.envs.toy import DT, MAX_STEPS, V_MAX, X_HAZARD, ToyHazardEnv, make_toy_env, step_dynamics
from flrp.envs.toy_kernel import (
    feasibility_iou,
    feasible_by_braking,
    kernel_grid,
    kernel_value,
    plot_feasibility,
)
from flrp.errors import FlrpError

# The range the behaviour mixture was tuned to (fraction of episodes with cost <= 10).
SAFE_COST = 10.0
SAFE_FRACTION_RANGE = (0.35, 0.55)


@pytest.fixture(scope="module")
def toy_arrays() -> dict[str, np.ndarray]:
    return generate_toy_arrays(TOY_SEED, TOY_EPISODES)


@pytest.fixture(scope="module")
def toy_dataset(toy_arrays: dict[str, np.ndarray]) -> OfflineDataset:
    return OfflineDataset(**{k: toy_arrays[k] for k in REQUIRED_KEYS})


# ----------------------------------------------------------------------------- environment


def test_env_reset_and_step_contract() -> None:
    env = make_toy_env(seed=3)
    obs, info = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (2,)
    assert env.observation_space.contains(obs)
    assert -1.5 <= obs[0] <= -0.5 and -0.5 <= obs[1] <= 0.5
    assert info["cost"] == 0.0
    total_reward = 0.0
    for t in range(1, MAX_STEPS + 1):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0], dtype=np.float32))
        total_reward += reward
        assert terminated is False
        assert truncated is (t == MAX_STEPS)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert info["cost"] == (1.0 if obs[0] > X_HAZARD else 0.0)
        assert reward == pytest.approx(float(obs[1]))
    # Full throttle for 100 steps pins v at V_MAX and drives deep into the hazard.
    assert obs[1] == pytest.approx(V_MAX)
    assert info["cost"] == 1.0
    with pytest.raises(ResetNeeded):
        env.step(np.array([0.0]))


def test_env_requires_reset_and_rejects_bad_actions() -> None:
    env = ToyHazardEnv()
    with pytest.raises(ResetNeeded):
        env.step(np.array([0.0]))
    env.reset(seed=0)
    with pytest.raises(FlrpError):
        env.step(np.array([np.nan]))
    with pytest.raises(FlrpError):
        env.step(np.array([0.0, 1.0]))


def test_env_clips_actions_and_speed() -> None:
    env = ToyHazardEnv()
    env.reset(options={"state": (0.0, 1.95)})
    obs, reward, *_ = env.step(np.array([5.0]))  # clipped to +1, then v clipped to V_MAX
    assert obs[1] == pytest.approx(V_MAX)
    assert obs[0] == pytest.approx(0.0 + V_MAX * DT)
    assert reward == pytest.approx(V_MAX)
    env.reset(options={"state": (0.0, 0.0)})
    obs, *_ = env.step(np.array([-7.0]))  # clipped to -1
    assert obs[1] == pytest.approx(-DT, abs=1e-7)


def test_env_seed_reproducibility() -> None:
    def rollout(env: ToyHazardEnv, **reset_kwargs: int) -> np.ndarray:
        obs, _ = env.reset(**reset_kwargs)
        traj = [obs]
        for t in range(20):
            obs, *_ = env.step(np.array([np.sin(t)], dtype=np.float32))
            traj.append(obs)
        return np.stack(traj)

    a = rollout(ToyHazardEnv(), seed=42)
    b = rollout(ToyHazardEnv(), seed=42)
    c = rollout(make_toy_env(seed=42))  # seeding at construction == reset(seed=...)
    d = rollout(ToyHazardEnv(), seed=43)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a[0], d[0])


def test_step_dynamics_matches_env() -> None:
    rng = np.random.default_rng(0)
    env = ToyHazardEnv()
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        a = rng.uniform(-1.5, 1.5, size=1).astype(np.float32)
        x_next, v_next, cost, reward = step_dynamics(obs[:1], obs[1:], a)
        obs2, r2, _, _, info = env.step(a)
        np.testing.assert_array_equal(obs2, np.concatenate([x_next, v_next]))
        assert r2 == float(reward[0]) and info["cost"] == float(cost[0])
        obs = obs2


def test_generated_transitions_replay_exactly_in_env(toy_arrays: dict[str, np.ndarray]) -> None:
    # The generator and the env share step_dynamics and float32 state: replaying stored actions
    # from a stored initial state reproduces the stored trajectory bit for bit.
    env = ToyHazardEnv()
    for ep in (0, 7, 500):
        sl = slice(ep * MAX_STEPS, (ep + 1) * MAX_STEPS)
        env.reset(options={"state": toy_arrays["observations"][sl][0]})
        for a, nxt, r, c in zip(
            toy_arrays["actions"][sl], toy_arrays["next_observations"][sl], toy_arrays["rewards"][sl], toy_arrays["costs"][sl]
        ):
            obs, reward, _, _, info = env.step(a)
            np.testing.assert_array_equal(obs, nxt)
            assert reward == float(r) and info["cost"] == float(c)


# ----------------------------------------------------------------------------- exact kernel


def test_dp_kernel_agrees_with_braking_closed_form() -> None:
    xs, vs, mask, value = kernel_grid()
    assert mask.shape == value.shape == (len(xs), len(vs)) == (351, 201)
    X, V = np.meshgrid(xs, vs, indexing="ij")
    agreement = np.mean(feasible_by_braking(X, V) == mask)
    assert agreement >= 0.99
    np.testing.assert_array_equal(mask, value <= 0)
    # Everything left of -1 is viable at any speed (braking from v = 2 travels < 2).
    assert mask[xs <= -1.0].all()
    # Nothing right of the hazard is.
    assert not mask[xs > X_HAZARD].any()


@pytest.mark.parametrize(
    ("x", "v", "feasible"),
    [
        (0.0, 0.0, True),
        (0.99, 2.0, False),  # the first braking step already reaches 0.99 + 0.19
        (1.2, 0.0, False),  # in the hazard at t = 0
        (1.0, 0.0, True),  # on the boundary: x <= 1 is safe
        (0.9, 0.5, True),  # braking touches x = 1.0 exactly (0.94, 0.97, 0.99, 1.0)
        (0.91, 0.5, False),
        (-2.0, 2.0, True),
    ],
)
def test_hand_computed_states(x: float, v: float, feasible: bool) -> None:
    assert bool(feasible_by_braking(x, v)) is feasible
    xs, vs, mask, _ = kernel_grid()
    i, j = int(np.argmin(np.abs(xs - x))), int(np.argmin(np.abs(vs - v)))
    assert bool(mask[i, j]) is feasible
    assert bool(kernel_value(np.array([[x, v]]))[0] <= 0) is feasible


def test_kernel_grid_is_cached_and_read_only() -> None:
    first = kernel_grid()
    assert kernel_grid() is first
    with pytest.raises(ValueError):
        first[2][0, 0] = False


def test_feasibility_iou_exact_and_shifted(toy_dataset: OfflineDataset) -> None:
    exact = feasibility_iou(kernel_value, dataset=toy_dataset)
    assert exact["iou_box"] == 1.0 and exact["iou_support"] == 1.0
    assert exact["precision"] == 1.0 and exact["recall"] == 1.0
    assert exact["support_cells"] > 1000

    def shifted(obs: np.ndarray) -> np.ndarray:  # boundary moved 0.15 to the left: too cautious
        return kernel_value(obs + np.array([0.15, 0.0], dtype=np.float32))

    worse = feasibility_iou(shifted, dataset=toy_dataset)
    assert worse["iou_box"] < 0.96 and worse["iou_support"] < 0.96
    assert worse["precision"] == 1.0 and worse["recall"] < 0.96

    everything = feasibility_iou(lambda o: -np.ones(len(o)))
    assert everything["recall"] == 1.0 and everything["iou_box"] < 0.8
    assert everything["iou_support"] is None and everything["support_cells"] == 0

    with pytest.raises(FlrpError):
        feasibility_iou(lambda o: np.zeros(3))


# ----------------------------------------------------------------------------- behaviour data


def test_generator_layout(toy_arrays: dict[str, np.ndarray]) -> None:
    n = TOY_EPISODES * MAX_STEPS
    assert toy_arrays["observations"].shape == (n, 2) and toy_arrays["observations"].dtype == np.float32
    assert toy_arrays["next_observations"].shape == (n, 2)
    assert toy_arrays["actions"].shape == (n, 1) and np.abs(toy_arrays["actions"]).max() <= 1.0
    assert not toy_arrays["terminals"].any()
    np.testing.assert_array_equal(np.flatnonzero(toy_arrays["timeouts"]), np.arange(MAX_STEPS - 1, n, MAX_STEPS))
    # Within an episode, next_observations[t] is observations[t + 1].
    obs = toy_arrays["observations"].reshape(TOY_EPISODES, MAX_STEPS, 2)
    nxt = toy_arrays["next_observations"].reshape(TOY_EPISODES, MAX_STEPS, 2)
    np.testing.assert_array_equal(obs[:, 1:], nxt[:, :-1])
    np.testing.assert_array_equal(toy_arrays["costs"], (toy_arrays["next_observations"][:, 0] > X_HAZARD).astype(np.float32))


def test_generator_determinism(toy_arrays: dict[str, np.ndarray]) -> None:
    again = generate_toy_arrays(TOY_SEED, TOY_EPISODES)
    for key, arr in toy_arrays.items():
        assert arr.tobytes() == again[key].tobytes(), key
    other = generate_toy_arrays(TOY_SEED + 1, TOY_EPISODES)
    assert not np.array_equal(other["observations"], toy_arrays["observations"])
    assert not np.array_equal(other["actions"], toy_arrays["actions"])


def test_dataset_spread(toy_dataset: OfflineDataset) -> None:
    assert toy_dataset.num_episodes == TOY_EPISODES
    returns, costs = toy_dataset.episode_returns(), toy_dataset.episode_costs()
    safe = costs <= SAFE_COST
    assert SAFE_FRACTION_RANGE[0] <= safe.mean() <= SAFE_FRACTION_RANGE[1]
    assert costs.min() == 0 and costs.max() >= 60
    # Costs are spread, not just 0 or ~90.
    assert np.count_nonzero((costs > SAFE_COST) & (costs < 50)) >= 50
    safe_returns = returns[safe]
    # Best safe episodes stop just short of the hazard: return (x_T - x_0) / dt >= (0.9 - (-0.5)) / 0.1.
    assert safe_returns.max() >= 14.0
    # The average safe episode is far from that.
    assert safe_returns.mean() <= safe_returns.max() - 10.0
    assert safe_returns.std() >= 5.0
    # Some zero-cost episodes end close to the hazard (the braking data pinning the boundary).
    final_x = toy_dataset.next_observations[toy_dataset.timeouts][:, 0]
    assert np.count_nonzero((costs == 0) & (final_x > 0.9)) >= 10
    # Unsafe episodes include braking manoeuvres that overshoot by a little.
    assert np.count_nonzero((final_x > 1.0) & (final_x < 1.3)) >= 10


def test_hdf5_round_trip(tmp_path, toy_arrays: dict[str, np.ndarray]) -> None:
    import h5py

    path = make_toy_dataset(tmp_path / "toy.hdf5", seed=TOY_SEED, episodes=50)
    loaded = load_dsrl_hdf5(path)
    expected = generate_toy_arrays(TOY_SEED, 50)
    assert len(loaded) == 50 * MAX_STEPS and loaded.num_episodes == 50
    for key in REQUIRED_KEYS:
        np.testing.assert_array_equal(loaded.as_dict()[key].reshape(expected[key].shape), expected[key])
    with h5py.File(path, "r") as f:
        assert int(f.attrs["seed"]) == TOY_SEED and int(f.attrs["episodes"]) == 50
        assert "generate_toy_arrays" in str(f.attrs["generator"])
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


# ----------------------------------------------------------------------------- plot


def test_plot_feasibility_writes_png(tmp_path, toy_dataset: OfflineDataset) -> None:
    def shifted(obs: np.ndarray) -> np.ndarray:
        return kernel_value(obs + np.array([0.05, 0.0], dtype=np.float32))

    out = plot_feasibility(shifted, tmp_path / "plots" / "kernel.png", dataset=toy_dataset, title="shifted V_h")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert not list(out.parent.glob(".*.tmp"))
