"""Behaviour policies for dataset collection: PPO on the real simulator, reward ``r - λ·c``.

DSRL built its datasets from online agents trained under several cost thresholds; this module
does the same with stable-baselines3's PPO (MLP [64, 64], SB3 defaults otherwise), one policy
per :class:`PolicySpec`:

* ``budget=None``: a fixed multiplier ``λ`` (``λ = 0`` is the unconstrained, high-return,
  high-cost policy). Fixed multipliers give bang-bang policies (all cost or none), except near
  the task's switching point, where checkpoints along training wander between the two.
  ``relative=True`` reads ``lam`` in units of a reward scale given at training time (the
  collector passes the unconstrained policy's mean ``|r|`` per step), so one set of ratios lands
  on both sides of the switching point of tasks whose rewards differ in scale: the switching
  point measured at 100k PPO steps is λ ∈ (5, 10) for BallRun (~16 reward per step) and
  λ ∈ (1, 2) for CarRun (~6 per step), i.e. a ratio of about 0.3.
* ``budget=b``: Lagrangian PPO - ``λ`` is adapted after every rollout from the mean cost of the
  episodes finished in it, so that the episode cost approaches ``b``. ``λ`` starts at
  ``spec.lam`` (0 by default): early checkpoints are unconstrained, later ones are pushed
  towards the budget, and the oscillation around it (the usual Lagrangian behaviour) is welcome
  here, because the collector keeps checkpoints along training to spread the data over the
  cost–return plane.

Checkpoints are written every ``checkpoint_every`` env steps as ``<name>_step<NNNNNNN>.zip``
plus ``<name>_final.zip`` and a ``<name>.json`` record (λ history, wall time). Names must not
contain dots: SB3 treats ``"x_lam0.5_final"`` as having the extension ``.5_final`` and writes
no ``.zip`` (see :func:`safe_name`). For collection the PPO actor is exported to a
:class:`NumpyActor` (its deterministic mean action), so rolling out does not call SB3 at all.

stable-baselines3 is an optional dependency (``pip install 'flrp[collect]'``); it is imported
only when a policy is trained or loaded, and its absence is a one-line :class:`FlrpError`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from flrp.data.tasks import TaskSpec
from flrp.errors import FlrpError
from flrp.files import atomic_path, write_json

__all__ = [
    "SB3_VERSION",
    "SB3_INSTALL_HINT",
    "PolicySpec",
    "LagrangeController",
    "CostPenalty",  # noqa: F822 (module __getattr__: the class is built on first use)
    "cost_penalty",
    "NumpyActor",
    "TrainedPolicy",
    "safe_name",
    "import_sb3",
    "train_policy",
    "load_trained_policy",
    "load_actor",
    "load_norm",
    "norm_path",
]

SB3_VERSION = "2.9.2"
SB3_INSTALL_HINT = f"pip install stable-baselines3=={SB3_VERSION}  (or: pip install 'flrp[collect]')"


def import_sb3() -> ModuleType:
    """Import stable-baselines3, or raise a one-line :class:`FlrpError` with the install command."""
    try:
        import stable_baselines3
    except ModuleNotFoundError as err:
        raise FlrpError(
            f"dataset collection needs stable-baselines3 (Python module {err.name!r} is missing); "
            f"install it with: {SB3_INSTALL_HINT}"
        ) from None
    return stable_baselines3


def safe_name(text: str) -> str:
    """A file stem SB3 can save under: ``"."`` becomes ``"p"``, anything else odd ``"-"``.

    ``safe_name("lam0.5")`` is ``"lam0p5"``. SB3 appends ``.zip`` only when the path has no
    suffix, so a dot anywhere in the stem silently loses the extension.
    """
    out = re.sub(r"[^A-Za-z0-9_-]", "-", text.replace(".", "p"))
    if not out:
        raise FlrpError(f"empty policy name from {text!r}")
    return out


def _fmt_num(x: float) -> str:
    return safe_name(f"{x:g}")


@dataclass(frozen=True)
class PolicySpec:
    """One behaviour policy to train.

    ``budget`` (episode cost) selects Lagrangian PPO (``lam`` is then the initial multiplier);
    without it ``lam`` is a fixed multiplier. ``relative`` makes ``lam`` a ratio to the reward
    scale passed to :func:`train_policy`.
    ``steps`` env steps in total, a checkpoint every ``checkpoint_every`` steps (and at the end).
    ``seed_offset`` keeps the PPO seeds of the policies of one collection distinct.
    """

    lam: float = 0.0
    budget: float | None = None
    relative: bool = False
    steps: int = 100_000
    checkpoint_every: int = 10_000
    seed_offset: int = 0
    # PPO rollout length per env copy (SB3's ``n_steps``: a rollout is ``n_envs · n_steps`` env
    # steps); SB3's default 2048. Small budgets (tests) use fewer.
    n_steps: int = 2048
    batch_size: int = 64
    # ``n_envs`` copies of the task stepped in lockstep (SB3 DummyVecEnv, one process); with
    # ``normalize`` SB3's VecNormalize standardises observations and scales rewards (its
    # statistics are saved beside each checkpoint and applied by :class:`NumpyActor`).
    # ``init_from`` names an earlier policy of the same budget whose final weights and
    # normalisation statistics this one starts from (λ fine-tuning of a trained runner).
    n_envs: int = 1
    normalize: bool = False
    gamma: float = 0.99
    init_from: str | None = None
    # Appended to the name (``rlam3-fresh``): tells apart two policies with the same λ.
    label: str = ""

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise FlrpError(f"policy multiplier λ must be >= 0, got {self.lam}")
        if self.budget is not None and self.budget < 0:
            raise FlrpError(f"policy cost budget must be >= 0, got {self.budget}")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise FlrpError(f"policy steps and checkpoint_every must be >= 1 (got {self.steps}, {self.checkpoint_every})")
        # Checkpoints are taken when the step count reaches a target; with n_envs copies it moves
        # in strides of n_envs, so targets must be multiples of it to be labelled exactly.
        if self.n_envs < 1 or self.steps % self.n_envs or self.checkpoint_every % self.n_envs:
            raise FlrpError(f"policy n_envs must be >= 1 and divide steps and checkpoint_every (got n_envs={self.n_envs}, "
                            f"steps={self.steps}, checkpoint_every={self.checkpoint_every})")
        if not 0.0 < self.gamma <= 1.0:
            raise FlrpError(f"policy gamma must be in (0, 1], got {self.gamma}")

    def fingerprint_dict(self) -> dict[str, Any]:
        """The spec as a dict, without the later-added fields that hold their defaults.

        Budgets hash this, so the fingerprints of budgets made before ``n_envs``/``normalize``/
        ``gamma``/``init_from``/``label`` existed (and recorded in shipped datasets) do not change.
        """
        d = asdict(self)
        for key, default in _LATER_FIELDS.items():
            if d[key] == default:
                del d[key]
        return d

    @property
    def name(self) -> str:
        """Dot-free file stem, e.g. ``lam0``, ``lam0p5``, ``rlam0p3`` (relative), ``budget20``."""
        lam = ("rlam" if self.relative else "lam") + _fmt_num(self.lam)
        tag = "-" + safe_name(self.label) if self.label else ""
        if self.budget is None:
            return lam + tag
        return "budget" + _fmt_num(self.budget) + ("" if self.lam == 0 and not self.relative else "-" + lam) + tag

    def effective_lam(self, reward_scale: float | None = None) -> float:
        """The multiplier in reward units (``lam · reward_scale`` when ``relative``)."""
        if not self.relative:
            return float(self.lam)
        if reward_scale is None or not np.isfinite(reward_scale) or reward_scale < 0:
            raise FlrpError(f"policy {self.name}: a relative λ needs a finite reward scale >= 0, got {reward_scale!r}")
        return float(self.lam) * float(reward_scale)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Env-step counts at which checkpoints are written (the last one is ``steps``)."""
        steps = list(range(self.checkpoint_every, self.steps, self.checkpoint_every))
        return steps + [self.steps]


_LATER_FIELDS: dict[str, Any] = {"n_envs": 1, "normalize": False, "gamma": 0.99, "init_from": None, "label": ""}


class LagrangeController:
    """PI update of the cost multiplier (a damped dual ascent, as in PID-Lagrangian PPO).

    The error is the episode-cost excess over the budget expressed in reward units per step,
    ``e = r_scale · (J_c − b) / T``, so one set of gains works across tasks whose per-step
    rewards differ by an order of magnitude (BallRun ~16, CarRun ~6): λ is in "reward per unit
    cost" and a policy that is safe needs λ of the order of its per-step reward. ``r_scale`` is
    the running mean absolute per-step reward seen so far.
    ``λ = max(0, λ0 + k_p·e + I)``, ``I = max(−λ0, I + k_i·e)`` (the integral is clamped so it
    never winds up below zero multiplier).
    """

    def __init__(self, budget: float, horizon: int, lam0: float = 0.0, k_p: float = 0.5, k_i: float = 0.15) -> None:
        self.budget = float(budget)
        self.horizon = int(horizon)
        self.lam0 = float(lam0)
        self.k_p, self.k_i = float(k_p), float(k_i)
        self.integral = 0.0
        self.lam = float(lam0)

    def update(self, mean_episode_cost: float, reward_scale: float) -> float:
        err = reward_scale * (mean_episode_cost - self.budget) / self.horizon
        self.integral = max(-self.lam0, self.integral + self.k_i * err)
        self.lam = max(0.0, self.lam0 + self.k_p * err + self.integral)
        return self.lam


@functools.cache
def _cost_penalty_class() -> type:
    # Built on first use: importing gymnasium loads its env plugins (~0.5 s and warnings from
    # gymnasium-robotics), which the CLI should not pay for `flrp tasks`.
    import gymnasium

    class CostPenalty(gymnasium.Wrapper):
        """Reward ``r − λ·c`` for the learner; records true return and cost of finished episodes.

        ``lam`` is a plain attribute so a callback can change it between rollouts (``set_attr``).
        """

        def __init__(self, env: gymnasium.Env, lam: float) -> None:
            super().__init__(env)
            self.lam = float(lam)
            self._ret = 0.0
            self._cost = 0.0
            self._steps = 0
            self.finished: list[tuple[float, float, int]] = []
            self.abs_reward_sum = 0.0
            self.total_steps = 0

        def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
            self._ret, self._cost, self._steps = 0.0, 0.0, 0
            return self.env.reset(**kwargs)

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            cost = float(info["cost"])
            self._ret += float(reward)
            self._cost += cost
            self._steps += 1
            self.abs_reward_sum += abs(float(reward))
            self.total_steps += 1
            if terminated or truncated:
                self.finished.append((self._ret, self._cost, self._steps))
            return obs, float(reward) - self.lam * cost, terminated, truncated, info

        def pop_finished(self) -> list[tuple[float, float, int]]:
            out, self.finished = self.finished, []
            return out

        def reward_scale(self) -> float:
            return self.abs_reward_sum / max(1, self.total_steps)

    return CostPenalty


def cost_penalty(env: Any, lam: float) -> Any:
    """Wrap ``env`` in :class:`CostPenalty` (reward ``r − λ·c``)."""
    return _cost_penalty_class()(env, lam)


def __getattr__(name: str) -> Any:
    if name == "CostPenalty":
        return _cost_penalty_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrainedPolicy:
    """What :func:`train_policy` leaves behind (also stored as ``<name>.json``)."""

    name: str
    spec: dict[str, Any]
    seed: int
    lam_effective: float
    checkpoints: dict[int, str]  # env steps -> checkpoint file name (relative to the policy dir)
    final: str
    lam_history: list[tuple[int, float, float, float]] = field(default_factory=list)  # (steps, λ, mean return, mean cost)
    wall_time_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoints"] = {str(k): v for k, v in self.checkpoints.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainedPolicy":
        d = dict(d)
        d["checkpoints"] = {int(k): v for k, v in d["checkpoints"].items()}
        d["lam_history"] = [tuple(x) for x in d.get("lam_history", [])]
        return cls(**d)


def norm_path(path: str | Path) -> Path:
    """The VecNormalize statistics saved beside checkpoint ``path``: ``x_final.zip`` -> ``x_final.norm.npz``."""
    return Path(path).with_suffix(".norm.npz")


_NORM_KEYS = ("obs_mean", "obs_var", "obs_count", "ret_mean", "ret_var", "ret_count", "clip_obs", "clip_reward", "epsilon")


def _norm_state(vecnorm: Any) -> dict[str, np.ndarray]:
    return {
        "obs_mean": np.asarray(vecnorm.obs_rms.mean, dtype=np.float64),
        "obs_var": np.asarray(vecnorm.obs_rms.var, dtype=np.float64),
        "obs_count": np.asarray(vecnorm.obs_rms.count, dtype=np.float64),
        "ret_mean": np.asarray(vecnorm.ret_rms.mean, dtype=np.float64),
        "ret_var": np.asarray(vecnorm.ret_rms.var, dtype=np.float64),
        "ret_count": np.asarray(vecnorm.ret_rms.count, dtype=np.float64),
        "clip_obs": np.asarray(vecnorm.clip_obs, dtype=np.float64),
        "clip_reward": np.asarray(vecnorm.clip_reward, dtype=np.float64),
        "epsilon": np.asarray(vecnorm.epsilon, dtype=np.float64),
    }


def load_norm(path: str | Path) -> dict[str, np.ndarray] | None:
    """The normalisation statistics saved beside checkpoint ``path``, or None if it has none."""
    npz = norm_path(path)
    if not npz.exists():
        return None
    try:
        with np.load(npz) as f:
            missing = [k for k in _NORM_KEYS if k not in f.files]
            if missing:
                raise FlrpError(f"{npz}: missing key {missing[0]!r} (not a flrp normalisation file)")
            return {k: f[k].copy() for k in _NORM_KEYS}
    except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as err:
        raise FlrpError(f"{npz}: cannot read normalisation statistics ({err})") from None


def _set_norm_state(vecnorm: Any, st: dict[str, np.ndarray]) -> None:
    vecnorm.obs_rms.mean, vecnorm.obs_rms.var, vecnorm.obs_rms.count = st["obs_mean"].copy(), st["obs_var"].copy(), float(st["obs_count"])
    vecnorm.ret_rms.mean, vecnorm.ret_rms.var, vecnorm.ret_rms.count = st["ret_mean"].copy(), st["ret_var"].copy(), float(st["ret_count"])


def _save_model(model: Any, path: Path) -> None:
    """Save an SB3 model (and, first, its VecNormalize statistics), each file atomically.

    The statistics go first, so a checkpoint ``.zip`` that exists always has them beside it.
    """
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:
        with atomic_path(norm_path(path)) as tmp:
            with open(tmp, "wb") as fh:
                state: dict[str, Any] = _norm_state(vecnorm)
                np.savez(fh, **state)
    else:
        norm_path(path).unlink(missing_ok=True)  # a stale one from another run would be applied
    # The temp name ends in ".tmp" (a non-empty suffix), so SB3 writes exactly that file.
    with atomic_path(path) as tmp:
        model.save(tmp)


def _make_callback(sb3: ModuleType, spec: PolicySpec, policy_dir: Path, horizon: int, record: TrainedPolicy, progress: bool) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    lam0 = record.lam_effective
    controller = LagrangeController(spec.budget, horizon, lam0=lam0) if spec.budget is not None else None
    todo = list(spec.checkpoint_steps)

    class _Callback(BaseCallback):
        """Checkpoints, the λ update after each rollout, and progress (flrp.progress)."""

        def _on_training_start(self) -> None:
            self._bar = None
            if progress:
                from flrp.progress import progress as progress_bar

                self._bar = progress_bar(spec.steps, desc=f"PPO {spec.name}", unit="step", leave=False)

        def _on_step(self) -> bool:
            n = int(self.num_timesteps)
            if self._bar is not None:
                self._bar.update(n - self._bar.n)
            while todo and n >= todo[0]:
                step = todo.pop(0)
                fname = f"{spec.name}_step{step:07d}.zip"
                _save_model(self.model, policy_dir / fname)
                record.checkpoints[step] = fname
            return True

        def _on_rollout_end(self) -> None:
            env = self.training_env
            finished = [ep for part in env.env_method("pop_finished") for ep in part]
            if not finished:
                return
            mean_ret = float(np.mean([f[0] for f in finished]))
            mean_cost = float(np.mean([f[1] for f in finished]))
            lam = float(env.get_attr("lam")[0])
            if controller is not None:
                scale = float(np.mean(env.env_method("reward_scale")))
                lam = controller.update(mean_cost, scale)
                env.set_attr("lam", lam)
            record.lam_history.append((int(self.num_timesteps), lam, mean_ret, mean_cost))
            if self._bar is not None:
                self._bar.set_postfix(lam=f"{lam:.2f}", ret=f"{mean_ret:.0f}", cost=f"{mean_cost:.1f}", refresh=False)

        def _on_training_end(self) -> None:
            if self._bar is not None:
                self._bar.close()

    return _Callback()


def train_policy(
    task: TaskSpec,
    spec: PolicySpec,
    policy_dir: str | Path,
    seed: int,
    progress: bool = True,
    reward_scale: float | None = None,
) -> TrainedPolicy:
    """Train one PPO behaviour policy (or return the finished one found in ``policy_dir``).

    A policy counts as finished when both ``<name>_final.zip`` and ``<name>.json`` exist; a
    partial run (killed mid-training) is restarted from scratch, which gives the same weights
    because everything is seeded (PPO seed ``seed + spec.seed_offset``, except that a policy with
    ``init_from`` trains on the runner's torch/numpy streams, see :func:`_warm_start`; the env is built with
    the same seed; one torch thread). ``reward_scale`` is needed by a ``relative`` spec.
    """
    policy_dir = Path(policy_dir)
    found = _finished(policy_dir, spec.name)
    # A relative λ resolved against another reward scale is stale (cannot happen with a
    # deterministic reference policy, but a hand-edited work dir could hold one).
    if found is not None and math.isclose(found.lam_effective, spec.effective_lam(reward_scale), rel_tol=1e-9, abs_tol=1e-12):
        return found
    sb3 = import_sb3()
    import torch

    policy_dir.mkdir(parents=True, exist_ok=True)
    ppo_seed = int(seed) + int(spec.seed_offset)
    lam = spec.effective_lam(reward_scale)
    t0 = time.perf_counter()
    if spec.n_envs == 1 and not spec.normalize:
        env = _penalised_env(task.name, ppo_seed, lam)  # SB3 wraps it (Monitor, DummyVecEnv)
    else:
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        # Construction seeds only; PPO(seed=...) reseeds the copies with ppo_seed + i at their
        # first reset (DummyVecEnv.seed), which is what decides the episodes.
        env = DummyVecEnv([functools.partial(_penalised_env, task.name, ppo_seed + 7919 * i, lam) for i in range(spec.n_envs)])
        if spec.normalize:
            env = VecNormalize(env, gamma=spec.gamma)
    record = TrainedPolicy(name=spec.name, spec=asdict(spec), seed=ppo_seed, lam_effective=lam, checkpoints={}, final=f"{spec.name}_final.zip")
    # torch intra-op threads: one per process (the machine is shared); restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = sb3.PPO(
            "MlpPolicy",
            env,
            n_steps=spec.n_steps,
            batch_size=spec.batch_size,
            policy_kwargs={"net_arch": [64, 64]},
            seed=ppo_seed,
            device="cpu",
            verbose=0,
            **({} if spec.gamma == 0.99 else {"gamma": spec.gamma}),
        )
        if spec.init_from is not None:
            _warm_start(sb3, model, policy_dir, spec)
        callback = _make_callback(sb3, spec, policy_dir, task.max_episode_steps, record, progress)
        model.learn(total_timesteps=spec.steps, callback=callback)
        # Step checkpoints are written mid-rollout at exact step counts (holding the weights of
        # the latest PPO update); PPO finishes its last rollout and update past `steps`, and
        # that model is `<name>_final.zip`. The branch below only guards a run that ended early.
        if spec.steps not in record.checkpoints:
            fname = f"{spec.name}_step{spec.steps:07d}.zip"
            _save_model(model, policy_dir / fname)
            record.checkpoints[spec.steps] = fname
        record.wall_time_s = time.perf_counter() - t0
        write_json(policy_dir / f"{spec.name}.json", record.to_json())
        _save_model(model, policy_dir / record.final)
    finally:
        torch.set_num_threads(threads)
        env.close()
    return record


def _penalised_env(task_name: str, seed: int, lam: float) -> Any:
    from flrp.envs import make

    return cost_penalty(make(task_name, seed=seed), lam=lam)


def _warm_start(sb3: ModuleType, model: Any, policy_dir: Path, spec: PolicySpec) -> None:
    """Start ``model`` from the final weights (and normalisation) of policy ``spec.init_from``.

    The optimiser starts afresh; only the network (actor, critic, log-std) and the VecNormalize
    statistics are copied, so the fine-tuning run sees the runner's observation scale at once.
    Note: ``PPO.load`` reseeds torch's and numpy's global generators with the *runner's* seed,
    so a fine-tuned policy draws its action noise and minibatch order from that seed (its own
    ``seed_offset`` reaches only the env copies). Deterministic all the same; the ``long``
    datasets were made this way, so it is kept.
    """
    src = policy_dir / f"{spec.init_from}_final.zip"
    if not src.exists():
        raise FlrpError(f"policy {spec.name}: init_from={spec.init_from!r} but {src} does not exist (train it first)")
    source = sb3.PPO.load(src, device="cpu")
    try:
        model.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as err:
        raise FlrpError(f"policy {spec.name}: {src} does not match this policy's network ({' '.join(str(err).split())})") from None
    norm = load_norm(src)
    vecnorm = model.get_vec_normalize_env()
    if (norm is None) != (vecnorm is None):
        raise FlrpError(f"policy {spec.name}: init_from={spec.init_from!r} ({src}) and this policy must both use normalize or neither")
    if vecnorm is not None and norm is not None:
        _set_norm_state(vecnorm, norm)


def _finished(policy_dir: Path, name: str) -> TrainedPolicy | None:
    meta, final = policy_dir / f"{name}.json", policy_dir / f"{name}_final.zip"
    if not (meta.exists() and final.exists()):
        return None
    rec = TrainedPolicy.from_json(json.loads(meta.read_text()))
    files = [policy_dir / f for f in (*rec.checkpoints.values(), rec.final)]
    if not all(f.exists() for f in files):
        return None
    if rec.spec.get("normalize") and not all(norm_path(f).exists() for f in files):
        return None
    return rec


def load_trained_policy(policy_dir: str | Path, name: str) -> TrainedPolicy | None:
    """The record of a finished policy in ``policy_dir``, or None."""
    return _finished(Path(policy_dir), name)


class NumpyActor:
    """The deterministic action of an SB3 PPO ``MlpPolicy``, in numpy float64.

    SB3's ``predict(obs, deterministic=True)`` is ``clip(action_net(tanh-MLP(obs)), low, high)``
    for a Box action space (no squashing); this replays it from the exported weights, which is
    ~20x faster per single observation than going through SB3 and torch.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], head: tuple[np.ndarray, np.ndarray], low: np.ndarray, high: np.ndarray,
                 norm: dict[str, np.ndarray] | None = None) -> None:
        self.layers = layers
        self.head = head
        self.low, self.high = low, high
        # VecNormalize's observation transform, clip((o − μ) / sqrt(σ² + ε), ±clip), if trained with it.
        self.norm = None
        if norm is not None:
            self.norm = (norm["obs_mean"], np.sqrt(norm["obs_var"] + float(norm["epsilon"])), float(norm["clip_obs"]))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float64)
        if self.norm is not None:
            mean, std, clip = self.norm
            h = np.clip((h - mean) / std, -clip, clip)
        for w, b in self.layers:
            h = np.tanh(h @ w.T + b)
        w, b = self.head
        return np.clip(h @ w.T + b, self.low, self.high)

    @classmethod
    def from_model(cls, model: Any, norm: dict[str, np.ndarray] | None = None) -> "NumpyActor":
        import torch

        policy = model.policy
        act_fn = getattr(policy, "activation_fn", None)
        if act_fn is not torch.nn.Tanh:
            raise FlrpError(f"NumpyActor supports SB3 policies with Tanh activations, got {act_fn}")
        if getattr(policy, "squash_output", False):
            raise FlrpError("NumpyActor does not support squashed SB3 policies")
        layers = []
        for mod in policy.mlp_extractor.policy_net:
            if isinstance(mod, torch.nn.Linear):
                layers.append((mod.weight.detach().double().numpy().copy(), mod.bias.detach().double().numpy().copy()))
        head = policy.action_net
        space = model.action_space
        return cls(
            layers,
            (head.weight.detach().double().numpy().copy(), head.bias.detach().double().numpy().copy()),
            np.asarray(space.low, dtype=np.float64),
            np.asarray(space.high, dtype=np.float64),
            norm,
        )


def load_actor(path: str | Path) -> NumpyActor:
    """Load an SB3 PPO checkpoint (``.zip``, plus its ``.norm.npz`` if any) and export its deterministic actor."""
    sb3 = import_sb3()
    p = Path(path)
    if not p.exists():
        raise FlrpError(f"{p}: no such policy checkpoint")
    model = sb3.PPO.load(p, device="cpu")
    norm = load_norm(p)
    if norm is not None and norm["obs_mean"].shape != tuple(model.observation_space.shape):
        raise FlrpError(f"{norm_path(p)}: statistics of shape {norm['obs_mean'].shape} do not fit the policy's observations {model.observation_space.shape}")
    return NumpyActor.from_model(model, norm)
