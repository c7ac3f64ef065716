"""Behaviour data for the toy hazard task (:mod:`flrp.envs.toy`), in DSRL's flat layout.

The data has to let an offline safe-RL method (a) pin down the feasible-set boundary, which
needs braking manoeuvres that end just short of, and just past, the hazard, and (b) beat
behaviour cloning of the safe episodes, which needs safe episodes of very different quality.
So every episode runs one behaviour policy drawn from a mixture:

* **brake-point** (~35%): throttle (full, or a random level in [0.3, 1]) until ``x >= x_sw``,
  then full braking until ``v <= 0``, then hold (``a = -k v``). ``x_sw ~ U(-1.2, 1.0)``: early
  switches stop far from the hazard (safe, low return), late ones overshoot and park inside it
  (unsafe, high cost); the ones in between trace the kernel boundary. Half of these episodes
  instead switch when the predicted full-braking stop ``x + v|v|/2`` reaches
  ``x_stop ~ U(0.4, 1.15)``, which puts many more braking manoeuvres right on the boundary.
* **PD target** (~35%): ``a = clip(kp (x* - x) - kd v)`` with ``x* ~ U(-0.5, 3)`` - a smooth
  spread of stopping points on both sides of the hazard, with under-damped overshoots.
* **switch** (~20%): an aggressive PD (``x* >= 1.5``) for the first ``k ~ U{0..100}`` steps,
  then a safe one (``x* < 1``) - episodes that enter the hazard and recover, so costs take
  intermediate values.
* **random** (~10%): uniform actions; the velocity random-walks, so these cover the state
  space broadly (some drift far left at speed: safe but with very negative returns).

The controllers get Gaussian action noise with a per-episode ``sigma ~ U(0, 0.3)``. All
transitions come from :func:`flrp.envs.toy.step_dynamics` (the environment's own physics) in
float32, so replaying the stored actions in the env reproduces the stored observations.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from flrp.data.hdf5 import REQUIRED_KEYS, validate_arrays
from flrp.envs.toy import MAX_STEPS, V0_RANGE, X0_RANGE, step_dynamics
from flrp.errors import FlrpError
from flrp.files import write_bytes

__all__ = [
    "TOY_SEED",
    "TOY_EPISODES",
    "GENERATOR_NAME",
    "POLICY_KINDS",
    "POLICY_PROBS",
    "data_dir",
    "generate_toy_arrays",
    "make_toy_dataset",
    "toy_dataset_path",
]

TOY_SEED: int = 0
TOY_EPISODES: int = 1000
GENERATOR_NAME: str = "flrp.collect.toy.generate_toy_arrays/v1"
"""Stored in the HDF5 attrs; bump the suffix whenever the generated data changes."""

POLICY_KINDS: tuple[str, ...] = ("brake_point", "pd", "switch", "random")
POLICY_PROBS: tuple[float, ...] = (0.35, 0.35, 0.20, 0.10)

_BRAKE, _PD, _SWITCH, _RANDOM = range(4)


def generate_toy_arrays(seed: int = TOY_SEED, episodes: int = TOY_EPISODES) -> dict[str, np.ndarray]:
    """Roll out ``episodes`` behaviour episodes of :data:`~flrp.envs.toy.MAX_STEPS` steps each.

    Vectorized over episodes; deterministic in ``seed`` (same seed, same bytes). Returns the
    DSRL keys with episode-major rows: ``observations`` / ``next_observations`` (N, 2) float32,
    ``actions`` (N, 1) float32 (the clipped action actually applied), ``rewards`` / ``costs``
    (N,) float32, ``terminals`` (N,) all False, ``timeouts`` (N,) True on each episode's last
    step, plus ``policy_kind`` (N,) int8 (index into :data:`POLICY_KINDS`, for analysis; the
    DSRL loader ignores it).
    """
    if int(episodes) < 1:
        raise FlrpError(f"toy generator: episodes must be >= 1, got {episodes}")
    E, T = int(episodes), MAX_STEPS
    rng = np.random.default_rng(seed)

    # Per-episode parameters, all drawn up front in a fixed order (determinism does not
    # depend on which branches are taken later).
    kind = rng.choice(len(POLICY_KINDS), size=E, p=POLICY_PROBS)
    x = rng.uniform(*X0_RANGE, size=E).astype(np.float32)
    v = rng.uniform(*V0_RANGE, size=E).astype(np.float32)
    sigma = rng.uniform(0.0, 0.3, size=E)
    # brake-point: half full throttle, half a random throttle level.
    throttle = np.where(rng.random(E) < 0.5, 1.0, rng.uniform(0.3, 1.0, size=E))
    x_switch = rng.uniform(-1.2, 1.0, size=E)
    # Half the brake-point episodes switch on the *predicted stopping point* instead of the
    # position: they start braking once x + v|v| / 2 (the continuous-time full-braking stop)
    # reaches x_stop. That lands their braking manoeuvres on the kernel boundary at every speed
    # the data reaches, on both sides of it (x_stop straddles X_HAZARD), which is exactly where
    # the feasibility critic needs dense data; position switches alone hit it only in a narrow
    # band of x_sw.
    anticipate = rng.random(E) < 0.5
    x_stop = rng.uniform(0.4, 1.15, size=E)
    k_hold = rng.uniform(0.5, 2.0, size=E)
    # PD target controller (also the "safe" half of the switch episodes).
    x_target = rng.uniform(-0.5, 3.0, size=E)
    kp = rng.uniform(0.5, 3.0, size=E)
    kd = rng.uniform(0.5, 2.5, size=E)
    # switch: aggressive target for the first k steps, then a safe one.
    x_target_unsafe = rng.uniform(1.5, 3.0, size=E)
    x_target_safe = rng.uniform(-0.5, 1.0, size=E)
    kp_unsafe = rng.uniform(1.0, 3.0, size=E)
    kd_unsafe = rng.uniform(0.5, 1.5, size=E)
    k_switch = rng.integers(0, T + 1, size=E)
    noise = rng.standard_normal((T, E)) * sigma
    random_actions = rng.uniform(-1.0, 1.0, size=(T, E))

    obs = np.empty((T, E, 2), dtype=np.float32)
    next_obs = np.empty((T, E, 2), dtype=np.float32)
    actions = np.empty((T, E), dtype=np.float32)
    rewards = np.empty((T, E), dtype=np.float32)
    costs = np.empty((T, E), dtype=np.float32)
    phase = np.zeros(E, dtype=np.int8)  # brake-point: 0 throttle, 1 braking, 2 holding

    for t in range(T):
        xf, vf = x.astype(np.float64), v.astype(np.float64)
        # Brake-point phases advance on the state *before* acting, like a real controller.
        trigger = np.where(anticipate, xf + vf * np.maximum(vf, 0.0) / 2.0 >= x_stop, xf >= x_switch)
        phase = np.where((phase == 0) & trigger, 1, phase)
        phase = np.where((phase == 1) & (vf <= 0.0), 2, phase)
        a_brake = np.select([phase == 0, phase == 1], [throttle, -1.0], -k_hold * vf)
        a_pd = kp * (x_target - xf) - kd * vf
        a_switch = np.where(
            t < k_switch,
            kp_unsafe * (x_target_unsafe - xf) - kd_unsafe * vf,
            kp * (x_target_safe - xf) - kd * vf,
        )
        a = np.select([kind == _BRAKE, kind == _PD, kind == _SWITCH], [a_brake, a_pd, a_switch], 0.0)
        a = np.where(kind == _RANDOM, random_actions[t], np.clip(a, -1.0, 1.0) + noise[t])
        a = np.clip(a, -1.0, 1.0).astype(np.float32)

        x_next, v_next, c, r = step_dynamics(x, v, a)
        obs[t, :, 0], obs[t, :, 1] = x, v
        next_obs[t, :, 0], next_obs[t, :, 1] = x_next, v_next
        actions[t], rewards[t], costs[t] = a, r, c
        x, v = x_next, v_next

    # (T, E) -> episode-major (E*T,) rows, the order DSRL files use.
    def flat(arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.swapaxes(arr, 0, 1)).reshape(E * T, *arr.shape[2:])

    timeouts = np.zeros((E, T), dtype=bool)
    timeouts[:, -1] = True
    return {
        "observations": flat(obs),
        "next_observations": flat(next_obs),
        "actions": flat(actions)[:, None],
        "rewards": flat(rewards),
        "costs": flat(costs),
        "terminals": np.zeros(E * T, dtype=bool),
        "timeouts": timeouts.reshape(-1),
        "policy_kind": np.repeat(kind.astype(np.int8), T),
    }


def make_toy_dataset(
    path: str | os.PathLike[str], seed: int = TOY_SEED, episodes: int = TOY_EPISODES
) -> Path:
    """Generate the toy data and write it as a DSRL HDF5 file (atomically).

    The file's attrs record ``seed``, ``episodes`` and ``generator`` so the data can be
    regenerated bit-for-bit. Only the DSRL keys are written. The HDF5 image is built in memory and
    written by :func:`flrp.files.write_bytes`, so a full or read-only disk is one line and h5py never
    meets a failing write.
    """
    import h5py

    arrays = validate_arrays(generate_toy_arrays(seed=seed, episodes=episodes), str(path))
    attrs = {"seed": int(seed), "episodes": int(episodes), "generator": GENERATOR_NAME, "env": "flrp.envs.toy.ToyHazardEnv"}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for key in REQUIRED_KEYS:
            f.create_dataset(key, data=arrays[key], compression="gzip", compression_opts=4)
        f.attrs.update(attrs)
    write_bytes(path, buf.getvalue())
    return Path(path)


def data_dir() -> Path:
    """Where generated datasets are cached: ``$FLRP_DATA_DIR``, default ``~/.cache/flrp/datasets``."""
    return Path(os.environ.get("FLRP_DATA_DIR", Path.home() / ".cache" / "flrp" / "datasets"))


def toy_dataset_path() -> Path:
    """The embedded toy dataset, generated on first use (deterministic: seed TOY_SEED)."""
    path = data_dir() / f"ToyHazard-v0-seed{TOY_SEED}-{TOY_EPISODES}.hdf5"
    if not path.exists():
        make_toy_dataset(path, seed=TOY_SEED, episodes=TOY_EPISODES)
    return path
