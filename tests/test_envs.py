"""flrp.envs.make: the safety-gymnasium import fix, error paths, and the real simulators.

The simulator tests are skipped when Bullet-Safety-Gym / Safety-Gymnasium are not installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import sys
import types

import numpy as np
import pytest

from flrp.envs import make
from flrp.envs.safety_gymnasium_compat import array_defaults_as_factories, import_safety_gymnasium
from flrp.errors import FlrpError

make_module = sys.modules["flrp.envs.make"]  # the attribute flrp.envs.make is the function

# DSRL task -> observation size of the raw simulator, which is DSRL's layout (DSRL adds no
# observation wrapper; its get_dataset asserts dataset obs shape == env observation_space).
BULLET_TASKS = {
    "BallRun": 7, "CarRun": 7, "DroneRun": 17, "AntRun": 33,
    "BallCircle": 8, "CarCircle": 8, "DroneCircle": 18, "AntCircle": 34,
}
SAFETYGYM_TASKS = {
    "CarButton1": 88, "CarButton2": 88, "CarGoal1": 72, "CarGoal2": 72, "CarPush1": 88,
    "CarPush2": 88, "AntVelocity": 27, "HalfCheetahVelocity": 17, "SwimmerVelocity": 8,
}
N_STEPS = 20


# ---------------------------------------------------------------------------------------------
# safety_gymnasium_compat (no simulator needed)
# ---------------------------------------------------------------------------------------------


def _declare(**dataclass_kwargs):
    """Declare a dataclass with a numpy-array default, the way safety-gymnasium's assets do."""
    ns = {"color": np.array([0.0, 1.0, 0.0, 1.0]), "__annotations__": {"color": np.ndarray, "size": float}, "size": 0.3}
    cls = types.new_class("Goal", (), {}, lambda d: d.update(ns))
    return dataclasses.dataclass(cls, **dataclass_kwargs) if dataclass_kwargs else dataclasses.dataclass(cls)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 accepted ndarray defaults")
def test_ndarray_default_is_rejected_without_the_fix():
    with pytest.raises(ValueError, match="mutable default"):
        _declare()


def test_ndarray_default_becomes_default_factory():
    original = dataclasses.dataclass
    with array_defaults_as_factories():
        Goal = _declare()
        Frozen = _declare(frozen=True)  # the @dataclass(...) call form
    assert dataclasses.dataclass is original  # restored
    a, b = Goal(), Goal()
    np.testing.assert_array_equal(a.color, [0.0, 1.0, 0.0, 1.0])
    assert a.color is not b.color  # each instance owns a copy
    a.color[0] = 5.0
    assert b.color[0] == 0.0 and Goal().color[0] == 0.0
    assert Goal(color=np.zeros(4)).color.sum() == 0.0 and Goal().size == 0.3
    assert Frozen().color.shape == (4,)
    field = {f.name: f for f in dataclasses.fields(Goal)}["color"]
    assert field.default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING


def test_fix_is_reentrant_and_restored_on_error():
    original = dataclasses.dataclass
    with pytest.raises(RuntimeError):
        with array_defaults_as_factories():
            with array_defaults_as_factories():
                _declare()
            assert dataclasses.dataclass is not original  # outer context still active
            raise RuntimeError("boom")
    assert dataclasses.dataclass is original


def test_plain_dataclasses_unchanged_inside_the_fix():
    with array_defaults_as_factories():
        @dataclasses.dataclass
        class P:
            x: int = 1
            y: list = dataclasses.field(default_factory=list)

        with pytest.raises(ValueError, match="mutable default"):
            @dataclasses.dataclass
            class Q:
                y: list = []  # noqa: RUF012 - lists are still rejected
    assert P().x == 1 and P().y == []


def test_import_safety_gymnasium_is_idempotent(monkeypatch):
    fake = types.ModuleType("safety_gymnasium")
    monkeypatch.setitem(sys.modules, "safety_gymnasium", fake)
    original = dataclasses.dataclass
    assert import_safety_gymnasium() is fake
    assert dataclasses.dataclass is original


# ---------------------------------------------------------------------------------------------
# error paths (no simulator needed)
# ---------------------------------------------------------------------------------------------


def test_unknown_task():
    with pytest.raises(FlrpError, match="unknown task"):
        make("NoSuchTask")


def test_bad_seed():
    with pytest.raises(FlrpError, match="seed"):
        make("BallRun", seed=-1)


@pytest.mark.parametrize("task", ["EasySparse", "OfflineMetadrive-hardmean-v0"])
def test_metadrive_cannot_be_built(task):
    with pytest.raises(FlrpError) as err:
        make(task)
    msg = str(err.value)
    assert "MetaDrive" in msg and "asset" in msg and "\n" not in msg


def test_missing_bullet_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bullet_safety_gym.envs.builder", None)
    with pytest.raises(FlrpError) as err:
        make("CarRun")
    msg = str(err.value)
    assert make_module.BULLET_INSTALL_HINT in msg and "\n" not in msg
    assert "pip install --no-deps bullet-safety-gym==1.4.0" in msg


def test_missing_safetygym_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "safety_gymnasium", None)
    with pytest.raises(FlrpError) as err:
        make("CarGoal1")
    msg = str(err.value)
    assert make_module.SAFETYGYM_INSTALL_HINT in msg and "\n" not in msg
    assert "--no-deps safety-gymnasium==1.0.0 gymnasium-robotics==1.2.2" in msg


def test_toy_task_builds_without_simulators():
    env = make("ToyHazard", seed=0)
    obs, _ = env.reset()
    _, _, _, _, info = env.step(np.zeros(1, dtype=np.float32))
    assert obs.shape == (2,) and isinstance(info["cost"], float)


# ---------------------------------------------------------------------------------------------
# real simulators
# ---------------------------------------------------------------------------------------------


def _actions(env, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    space = env.action_space
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


def _rollout(env, seed: int | None, actions) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        assert isinstance(info["cost"], float) and info["cost"] >= 0.0
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        out.append(obs)
        if terminated or truncated:
            break
    return np.array(out)


def _check_task(task: str, obs_dim: int, second_instance: bool = True) -> None:
    from flrp.data.tasks import get_task

    np_before, py_before = np.random.get_state(), random.getstate()
    env = make(task, seed=7)
    try:
        assert env.observation_space.shape == (obs_dim,)
        assert env._max_episode_steps == get_task(task).max_episode_steps
        actions = _actions(env, N_STEPS, seed=1)
        first = _rollout(env, None, actions)  # first reset() uses make's seed
        assert first.shape[1:] == env.observation_space.shape and np.isfinite(first).all()
        # another episode in between (other seed, other actions) must not leak into the next
        other = _rollout(env, 3, _actions(env, 13, seed=2))
        again = _rollout(env, 7, actions)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first[0], other[0])  # the seed matters
    finally:
        env.close()
    if second_instance:  # a second instance reproduces the same seeded episode
        env2 = make(task)
        try:
            np.testing.assert_array_equal(_rollout(env2, 7, actions), first)
        finally:
            env2.close()
    # the caller's global generators are untouched
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1]) and np_after[2:] == np_before[2:]
    assert random.getstate() == py_before


@pytest.mark.parametrize("task", list(BULLET_TASKS))
def test_bullet_task(task):
    pytest.importorskip("bullet_safety_gym")
    _check_task(task, BULLET_TASKS[task])


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")  # upstream, numpy 2
@pytest.mark.parametrize("task", list(SAFETYGYM_TASKS))
def test_safetygym_task(task):
    # Not pytest.importorskip("safety_gymnasium"): a plain import fails on Python 3.11 (the
    # dataclass error the compat module fixes), so look for the package, then import it fixed.
    if importlib.util.find_spec("safety_gymnasium") is None:
        pytest.skip("safety_gymnasium not installed")
    import_safety_gymnasium()
    # Every navigation reset recompiles the MuJoCo world (~0.8 s, mostly decoding the skybox
    # PNGs), so the second-instance check runs on one navigation task only.
    navigation = not task.endswith("Velocity")
    _check_task(task, SAFETYGYM_TASKS[task], second_instance=not navigation or task == "CarGoal1")


def test_bullet_time_limit_is_dsrl_episode_length():
    pytest.importorskip("bullet_safety_gym")
    env = make("BallRun", seed=0)  # DSRL: 100 steps (the simulator's own registration also 100)
    env.reset()
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        steps += 1
    assert steps == 100
    env.close()


def test_raw_bullet_needs_the_seeding_fix():
    """Canary for the trap the wrapper fixes: seeding numpy's global generator is not enough.

    Bullet-Safety-Gym ignores reset(seed=...) and draws from np.random; even with np.random
    seeded identically, the RaceCar's motor targets survive PyBullet's restoreState, so the
    first observation depends on the previous episode's last action.
    """
    pytest.importorskip("bullet_safety_gym")
    import gymnasium
    from bullet_safety_gym.envs.builder import EnvironmentBuilder

    with make_module._process_std_streams():  # see make.py: needed under pytest's capture
        raw = EnvironmentBuilder(**gymnasium.spec("SafetyCarRun-v0").kwargs)
    saved = np.random.get_state()
    try:
        firsts = []
        for last_action in ([1.0, 1.0], [-1.0, -1.0]):
            np.random.seed(0)
            firsts.append(raw.reset(seed=0)[0])
            raw.step(np.array(last_action, dtype=np.float32))
        np.random.seed(0)
        firsts.append(raw.reset(seed=0)[0])
    finally:
        np.random.set_state(saved)
        raw.close()
    assert not np.array_equal(firsts[1], firsts[2])


# ---------------------------------------------------------------------------------------------
# the cost signal (a wrapper that reported 0 would pass every shape check above)
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")  # upstream, numpy 2
def test_safetygym_cost_reaches_info():
    """Full-throttle strokes take the Swimmer over its speed limit within a few steps: the
    six-tuple's cost must arrive in ``info["cost"]``."""
    if importlib.util.find_spec("safety_gymnasium") is None:
        pytest.skip("safety_gymnasium not installed")
    import_safety_gymnasium()
    env = make("SwimmerVelocity", seed=0)
    try:
        env.reset(seed=0)
        high = env.action_space.high
        costs = []
        for k in range(50):
            a = (np.sign(np.sin(np.arange(high.shape[0]) * 1.3 + k * 0.9)) * high).astype(np.float32)
            costs.append(env.step(a)[4]["cost"])
    finally:
        env.close()
    assert sum(costs) > 0 and set(costs) <= {0.0, 1.0}, costs
