"""A toy safe-RL task whose exact feasible set is known: a 1-D double integrator with a hazard.

State / observation ``s = (x, v)``; action ``a`` in ``[-1, 1]`` is an acceleration. One step
(semi-implicit Euler, ``dt = 0.1``)::

    v' = clip(v + a * dt, -V_MAX, V_MAX)
    x' = x + v' * dt
    cost   = 1.0 if x' > X_HAZARD else 0.0     # cost of the state *reached*, like DSRL's costs[t]
    reward = v'                                # so an episode's return is (x_T - x_0) / dt

Driving right pays, the hazard ``x > 1`` is on the right: the best safe behaviour accelerates,
then brakes so that it stops just short of ``x = 1``. Because the dynamics are monotone
(``x'`` and ``v'`` increase with ``x``, ``v`` and ``a``), full braking is the optimal way to
avoid the hazard, which gives a closed form for the viability kernel (see
:mod:`flrp.envs.toy_kernel`).

:func:`step_dynamics` is the single definition of the physics: the environment and the data
generator (:mod:`flrp.collect.toy`) both call it, so offline data and online evaluation can
never disagree. The state is kept in float32, the observation dtype, so the next observation is
a pure function of the current observation and action (the dataset is exactly Markov in what it
records).

Nothing is registered with gymnasium at import time; build the environment with
:func:`make_toy_env`.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding

from flrp.errors import FlrpError

__all__ = [
    "DT",
    "V_MAX",
    "X_HAZARD",
    "MAX_STEPS",
    "X0_RANGE",
    "V0_RANGE",
    "step_dynamics",
    "ToyHazardEnv",
    "make_toy_env",
]

DT: float = 0.1
"""Integration step (seconds)."""
V_MAX: float = 2.0
"""Speed limit: velocities are clipped to ``[-V_MAX, V_MAX]``."""
X_HAZARD: float = 1.0
"""The hazard is ``x > X_HAZARD``; ``x == X_HAZARD`` is still safe."""
MAX_STEPS: int = 100
"""Episode length; the step that reaches it returns ``truncated=True``."""
X0_RANGE: tuple[float, float] = (-1.5, -0.5)
"""Initial position is uniform on this interval."""
V0_RANGE: tuple[float, float] = (-0.5, 0.5)
"""Initial velocity is uniform on this interval."""


def step_dynamics(
    x: np.ndarray | float, v: np.ndarray | float, a: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One deterministic step for arrays of states and actions (broadcasting).

    Actions outside ``[-1, 1]`` are clipped. The arithmetic keeps the floating dtype of the
    inputs (float32 in, float32 out: the Python-float constants are "weak" under NumPy 2's
    promotion rules), which is what lets the env and the generator produce identical bytes.

    Returns ``(x_next, v_next, cost, reward)``; cost is 1.0 where ``x_next > X_HAZARD``.
    """
    x = np.asarray(x)
    v = np.asarray(v)
    a = np.clip(np.asarray(a), -1.0, 1.0)
    v_next = np.clip(v + a * DT, -V_MAX, V_MAX)
    x_next = x + v_next * DT
    cost = (x_next > X_HAZARD).astype(x_next.dtype if x_next.dtype.kind == "f" else np.float64)
    reward = v_next.copy()
    return x_next, v_next, cost, reward


class ToyHazardEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """The double-integrator hazard task as a gymnasium environment.

    ``step`` returns ``(obs, reward, terminated=False, truncated, {"cost": c})``; ``truncated``
    becomes true on step :data:`MAX_STEPS`, after which ``reset`` must be called. The env never
    terminates: entering the hazard costs, it does not end the episode (as in DSRL data).

    ``reset(options={"state": (x, v)})`` starts from a given state instead of the random one,
    which evaluation code uses to probe specific states (e.g. near the kernel boundary).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, seed: int | None = None) -> None:
        self.observation_space = spaces.Box(
            low=np.array([-np.inf, -V_MAX], dtype=np.float32),
            high=np.array([np.inf, V_MAX], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
        if seed is not None:
            # Same generator reset(seed=seed) would build, so make_toy_env(seed).reset()
            # equals ToyHazardEnv().reset(seed=seed).
            self._np_random, _ = seeding.np_random(seed)
        self._state: np.ndarray | None = None
        self._t = 0

    @property
    def state(self) -> np.ndarray | None:
        """A copy of the current ``(x, v)`` (float32), or None before the first reset."""
        return None if self._state is None else self._state.copy()

    @property
    def elapsed_steps(self) -> int:
        return self._t

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "state" in options:
            s = np.asarray(options["state"], dtype=np.float32).reshape(-1)
            if s.shape != (2,) or not np.all(np.isfinite(s)):
                raise FlrpError(f"ToyHazardEnv.reset: options['state'] must be a finite (x, v) pair, got {options['state']!r}")
            s[1] = np.clip(s[1], -V_MAX, V_MAX)
        else:
            x0 = self.np_random.uniform(*X0_RANGE)
            v0 = self.np_random.uniform(*V0_RANGE)
            s = np.array([x0, v0], dtype=np.float32)
        self._state = s
        self._t = 0
        return self._state.copy(), {"cost": 0.0}

    def step(self, action: np.ndarray | float) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise ResetNeeded("ToyHazardEnv.step called before reset()")
        if self._t >= MAX_STEPS:
            raise ResetNeeded(f"ToyHazardEnv.step called after the {MAX_STEPS}-step episode ended; call reset()")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.size != 1:
            raise FlrpError(f"ToyHazardEnv.step: action must hold one number, got shape {np.shape(action)}")
        if not np.isfinite(a[0]):
            raise FlrpError(f"ToyHazardEnv.step: action is {a[0]} (NaN/inf; did the policy diverge?)")
        x_next, v_next, cost, reward = step_dynamics(self._state[:1], self._state[1:], a)
        self._state = np.concatenate([x_next, v_next]).astype(np.float32, copy=False)
        self._t += 1
        truncated = self._t >= MAX_STEPS
        return self._state.copy(), float(reward[0]), False, truncated, {"cost": float(cost[0])}


def make_toy_env(seed: int | None = None) -> gymnasium.Env:
    """A fresh :class:`ToyHazardEnv` (unwrapped; it enforces the 100-step limit itself).

    ``seed`` seeds the env's generator so the first ``reset()`` is reproducible.
    """
    return ToyHazardEnv(seed=seed)
