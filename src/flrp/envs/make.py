"""``flrp.make(task)``: one constructor for every benchmark simulator, matching DSRL.

What the returned env guarantees, whatever the suite:

* the Gymnasium 5-tuple ``step`` API, with ``info["cost"]`` a Python ``float`` on every step
  (safety-gymnasium's ``(obs, reward, cost, terminated, truncated, info)`` is converted the way
  DSRL's own ``SafetyGymnasium2Gymnasium`` wrapper does it);
* DSRL's episode length, ``gymnasium.wrappers.TimeLimit(max_episode_steps=spec.max_episode_steps)``
  (Bullet-Safety-Gym's own registrations use other limits, e.g. 500 for SafetyCarRun-v0);
* DSRL's observation layout. DSRL builds the raw simulator classes with the same arguments as the
  simulators' registered ``Safety*`` ids and adds no observation wrapper, so the raw observation
  *is* DSRL's layout (checked against ``dsrl/offline_*/gym_envs.py``; DSRL pinned
  safety-gymnasium 0.4.0, whose observation code is unchanged in the 1.0.0 used here);
* reproducible seeded episodes: ``reset(seed=s)`` followed by the same actions gives the same
  observations, whatever the env did before, and the caller's global ``numpy.random`` /
  ``random`` state is never changed (see :class:`SeededReset`).

Simulators are imported lazily, on the first ``make`` of their suite; importing :mod:`flrp.envs`
imports none of them.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import sys
from collections.abc import Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any, cast


def _drop_adroit_notice() -> None:
    """gymnasium-robotics 1.2.2 (pulled in by safety-gymnasium) prints a notice about its Adroit
    environments to stderr each time gymnasium loads its plugins; flrp never builds those, and the
    notice buried flrp's own output. It comes from ``farama_notifications``, which both packages
    consult at import: remove that one entry before gymnasium is first imported here."""
    try:
        from farama_notifications import notifications
    except ImportError:
        return
    notifications.pop("gymnasium_robotics", None)


_drop_adroit_notice()

import gymnasium  # noqa: E402
import numpy as np
from gymnasium.wrappers import TimeLimit

from flrp.data.tasks import TaskSpec, get_task
from flrp.errors import FlrpError

__all__ = [
    "BULLET_INSTALL_HINT",
    "SAFETYGYM_INSTALL_HINT",
    "GlobalRngSandbox",
    "SeededReset",
    "CostInInfo",
    "make",
]

BULLET_INSTALL_HINT = "pip install pybullet==3.2.7 && pip install --no-deps bullet-safety-gym==1.4.0"
"""Exact commands that install Bullet-Safety-Gym into a Python 3.11 environment with flrp."""

SAFETYGYM_INSTALL_HINT = (
    "pip install mujoco==2.3.3 pettingzoo==1.24.3 xmltodict pyyaml imageio"
    " && pip install --no-deps safety-gymnasium==1.0.0 gymnasium-robotics==1.2.2"
)
"""Exact commands that install Safety-Gymnasium into a Python 3.11 environment with flrp."""


# --------------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------------


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise FlrpError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


class GlobalRngSandbox:
    """A private copy of the *global* ``numpy.random`` and ``random`` generators.

    Bullet-Safety-Gym ignores ``reset(seed=...)`` and draws its initial states from the global
    ``np.random`` (and, for obstacles, ``random``); safety-gymnasium's Builder draws its layout
    seed from ``np.random`` when built. Inside ``with sandbox:`` the global generators hold this
    sandbox's private state; on exit the private state is saved and the caller's state is put
    back, so the simulator gets a seeded stream and the caller sees no change.

    Not safe against *other threads* drawing from the global generators at the same time
    (there is only one global generator); the swap itself costs ~0.1 ms, so it is done around
    construction and ``reset`` only (stepping these simulators draws no global random numbers).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._np_state: Any = None
        self._py_state: Any = None
        self._saved: tuple[Any, Any] | None = None
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart both private streams from ``seed`` (fresh OS entropy if None)."""
        seq = np.random.SeedSequence(seed)
        self._np_state = np.random.RandomState(np.random.MT19937(seq)).get_state()
        self._py_state = random.Random(int(seq.generate_state(2, np.uint64)[0])).getstate()

    def __enter__(self) -> GlobalRngSandbox:
        if self._saved is not None:
            raise RuntimeError("GlobalRngSandbox is not re-entrant")
        self._saved = (np.random.get_state(), random.getstate())
        np.random.set_state(self._np_state)
        random.setstate(self._py_state)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        self._np_state = np.random.get_state()
        self._py_state = random.getstate()
        np_saved, py_saved = self._saved
        self._saved = None
        np.random.set_state(np_saved)
        random.setstate(py_saved)


class SeededReset(gymnasium.Wrapper):
    """Makes ``reset(seed=s)`` reproducible for simulators that ignore or only partly honour it.

    On ``reset(seed=s)`` the private global-RNG sandbox is re-seeded from ``s``, ``before_reset``
    (a simulator-specific hook that puts back state the simulator forgets to reset) runs, and the
    inner ``reset(seed=s)`` runs inside the sandbox. ``reset()`` without a seed continues the
    streams; the first ``reset()`` after ``make(task, seed=s)`` behaves like ``reset(seed=s)``.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        sandbox: GlobalRngSandbox,
        seed: int | None = None,
        before_reset: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(env)
        self._sandbox = sandbox
        self._pending_seed = seed
        self._before_reset = before_reset
        if seed is not None:
            self.env.action_space.seed(seed)
            self.env.observation_space.seed(seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        seed = _check_seed(seed)
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        if seed is not None:
            self._sandbox.reseed(seed)
        with self._sandbox:
            if self._before_reset is not None:
                self._before_reset()
            return self.env.reset(seed=seed, options=options)


class CostInInfo(gymnasium.Wrapper):
    """Gymnasium 5-tuple with ``info["cost"]`` a float on every step.

    ``six_tuple=True`` converts safety-gymnasium's ``(obs, r, cost, terminated, truncated,
    info)``; otherwise the simulator must already put the cost in ``info["cost"]`` (as
    Bullet-Safety-Gym does on every step), and a missing cost is an error, never a silent 0.
    """

    def __init__(self, env: gymnasium.Env, six_tuple: bool) -> None:
        super().__init__(env)
        self._six_tuple = six_tuple

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._six_tuple:
            obs, reward, cost, terminated, truncated, info = cast(tuple[Any, ...], self.env.step(action))
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if "cost" not in info:
                raise FlrpError(f"simulator step returned no info['cost'] (info keys: {sorted(info)})")
            cost = info["cost"]
        info["cost"] = float(cost)
        return obs, float(reward), bool(terminated), bool(truncated), info


# --------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------


def _missing(spec: TaskSpec, simulator: str, hint: str, err: ModuleNotFoundError) -> FlrpError:
    return FlrpError(
        f"task {spec.name} needs {simulator} (Python module {err.name!r} is missing); "
        f"install it with: {hint}"
    )


@contextlib.contextmanager
def _process_std_streams() -> Iterator[None]:
    """Make ``sys.stdout``/``sys.stderr`` the process's own streams for a moment.

    Bullet-Safety-Gym silences PyBullet (at import and in every env constructor) by pointing
    file descriptors 1/2 at /dev/null, and afterwards flushes the C stream named after
    ``sys.stdout.name`` (``"<stdout>"`` -> libc's ``stdout``). Under pytest's output capture, in
    Jupyter, or whenever a program replaces ``sys.stdout``, that name lookup fails (or there is
    no file descriptor) and the simulator cannot even be imported. The original streams
    ``sys.__stdout__``/``sys.__stderr__`` always work, so they are swapped in meanwhile.
    """
    saved = sys.stdout, sys.stderr
    for stream in saved:
        with contextlib.suppress(Exception):
            stream.flush()
    if sys.__stdout__ is not None:
        sys.stdout = sys.__stdout__
    if sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _import_bullet(spec: TaskSpec) -> ModuleType:
    try:
        # The builder module imports pybullet with its build banner silenced.
        with _process_std_streams():
            return importlib.import_module("bullet_safety_gym.envs.builder")
    except ModuleNotFoundError as err:
        raise _missing(spec, "Bullet-Safety-Gym", BULLET_INSTALL_HINT, err) from None


def _import_safetygym(spec: TaskSpec) -> ModuleType:
    from flrp.envs.safety_gymnasium_compat import import_safety_gymnasium

    try:
        return import_safety_gymnasium()
    except ModuleNotFoundError as err:
        raise _missing(spec, "Safety-Gymnasium", SAFETYGYM_INSTALL_HINT, err) from None


def _neutralise_bullet_motors(raw: Any) -> None:
    """Put every joint motor of a Bullet-Safety-Gym agent back to its just-built setting.

    ``EnvironmentBuilder.reset`` restores a saved PyBullet state, but PyBullet's saved states do
    not include joint-motor targets: the RaceCar's wheel/steering and the Drone's rotor motors
    keep the last action of the previous episode, which changes the first observation of the
    next one. This replays what the agent constructors do (bullet-safety-gym 1.4.0
    ``bases.Joint.init_motor``/``disable_motor`` and ``RaceCar._set_car_constraints``), so every
    reset starts from the same motor state as a freshly built env.
    """
    agent = raw.agent
    motors = set(id(j) for j in agent.motor_list)
    for joint in agent.joint_list:
        joint.init_motor()
        if id(joint) not in motors:
            joint.disable_motor()
    if type(agent).__name__ == "RaceCar":
        bc = raw.bc
        for index in range(bc.getNumJoints(agent.body_id)):
            bc.setJointMotorControl2(agent.body_id, index, bc.VELOCITY_CONTROL, targetVelocity=0, force=0)


def _make_bullet(spec: TaskSpec, seed: int | None, kwargs: dict[str, Any]) -> gymnasium.Env:
    builder = _import_bullet(spec)
    importlib.import_module("bullet_safety_gym")  # registers the Safety*-v0 ids read below

    # DSRL's Offline*Env classes pass exactly the registered Safety*-v0 arguments.
    build_kwargs = {**gymnasium.spec(str(spec.sim_id)).kwargs, **kwargs}
    sandbox = GlobalRngSandbox(seed)
    with sandbox, _process_std_streams():
        raw = builder.EnvironmentBuilder(**build_kwargs)
    env: gymnasium.Env = CostInInfo(raw, six_tuple=False)
    return SeededReset(env, sandbox, seed, before_reset=lambda: _neutralise_bullet_motors(raw))


def _make_safetygym(spec: TaskSpec, seed: int | None, kwargs: dict[str, Any]) -> gymnasium.Env:
    _import_safetygym(spec)
    from gymnasium.envs.registration import load_env_creator

    # safety-gymnasium registers its ids in gymnasium's registry; DSRL instantiates the same
    # entry points (Builder(task_id, {"agent_name": ...}) / Safety*VelocityEnv()) directly.
    reg = gymnasium.spec(str(spec.sim_id))
    creator: Any = load_env_creator(reg.entry_point) if isinstance(reg.entry_point, str) else reg.entry_point
    sandbox = GlobalRngSandbox(seed)
    with sandbox:
        raw = creator(**{**reg.kwargs, **kwargs})
        # The Builder's very first reset (the one that first creates its MuJoCo world) gives
        # physics that differ from every later reset in the last bits (~1e-14, then growing),
        # even with the same seed; one warm-up reset makes all user-visible resets alike
        # (tests/test_envs.py fails without it). Harmless for the velocity tasks.
        raw.reset()
    env: gymnasium.Env = CostInInfo(raw, six_tuple=True)
    return SeededReset(env, sandbox, seed)


def make(task: str, seed: int | None = None, **kwargs: Any) -> gymnasium.Env:
    """Build the simulator of ``task`` the way DSRL does, with DSRL's episode length.

    ``task`` is any name :func:`flrp.data.tasks.get_task` accepts ("CarRun", "OfflineCarRun-v0",
    "SafetyCarGoal1-v0", ...). ``seed`` makes construction and the first ``reset()``
    reproducible (as ``reset(seed=seed)``) and seeds the action/observation spaces. ``kwargs``
    go to the simulator's constructor (e.g. ``render_mode`` for safety-gymnasium).

    Raises :class:`FlrpError` for an unknown task, a MetaDrive task (not buildable here) or a
    missing simulator package (the message holds the exact install command).
    """
    spec = get_task(task)
    seed = _check_seed(seed)
    if spec.suite == "toy":
        from flrp.envs.toy import make_toy_env

        return make_toy_env(seed=seed, **kwargs)
    if spec.suite == "metadrive":
        raise FlrpError(
            f"task {spec.name}: MetaDrive needs its asset download, which is unreachable here, so "
            "the env cannot be built (its datasets and constants still work)"
        )
    if spec.suite == "bullet":
        env = _make_bullet(spec, seed, kwargs)
    elif spec.suite == "safetygym":
        env = _make_safetygym(spec, seed, kwargs)
    else:  # pragma: no cover - tasks.SUITES is closed
        raise FlrpError(f"task {spec.name}: unknown suite {spec.suite!r}")
    return TimeLimit(env, max_episode_steps=spec.max_episode_steps)
