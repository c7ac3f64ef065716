"""``flrp collect TASK``: DSRL-format datasets made by the package itself, on the real simulator.

Pipeline (every stage resumable, everything seeded):

1. **Behaviour policies** (:mod:`flrp.collect.behaviour`): PPO [64, 64] with reward ``r − λ·c``
   for each :class:`~flrp.collect.behaviour.PolicySpec` of the budget, checkpointed along
   training. A policy whose ``<name>_final.zip`` and ``<name>.json`` exist is not retrained.
2. **Episode plan**: ``episodes`` episodes drawn from ``seed`` (and the switch pools, which are
   themselves deterministic), so a resumed run plans the same episodes. Each episode is one of

   * ``policy`` – one training checkpoint of one policy (uniform over all checkpoints of all
     policies), deterministic action plus Gaussian noise ``σ ∈ {0, .1, .3, .6}``. Fixed-λ PPO is
     bang-bang (all cost or none); checkpoints × noise fill the two clusters and the return axis.
   * ``switch`` – an unsafe final policy until the episode's cost reaches ``c* ~ U(0, max_cost)``,
     then a safe final policy (pools from each final policy's measured cost,
     :func:`classify_policies`; the measurement is seeded and cached). This fills the
     middle costs evenly, whatever the unsafe policy's cost rate is, so none of them is lost to
     the cost cap (a switch at a uniform *time* would put most CarRun switch episodes above
     DSRL's cap of 40).
   * ``late`` – the reverse: a safe final policy first, an unsafe one from step
     ``k = T − c*/rate`` on (``rate`` = the unsafe policy's measured cost per step), so the cost
     again lands near ``c*``, but it is paid at the end of the episode, from other states.
   Both switch kinds use action noise ``σ ∈ {0, .1, .3}``, which widens the cost–return band.
   * ``random`` – uniform random actions: the low returns.

   Every episode has its own env seed ``1_000_000·(seed + 1) + index`` (disjoint from the
   evaluation seeds 10000+ and across collection seeds) and its own noise generator
   ``default_rng([seed, 1, index])``; it runs through :func:`flrp.envs.make` (seeded resets are
   reproducible), so an episode's data do not depend on which process or chunk ran it.
3. **Chunks**: episodes are rolled out in chunks of ``chunk`` episodes, each saved as
   ``chunks-<plan hash>/chunk_NNNNN.npz`` (atomically); existing chunks are loaded instead of
   re-run. The work directory's ``manifest.json`` pins task, seed and policy specs; a different
   episode plan (other budget mix or count) gets its own chunk directory and reuses the policies.
4. **Assembly**: chunks concatenated in episode order; with ``cost_cap=True`` (the default)
   episodes whose cost exceeds DSRL's ``MAX_EPISODE_COST`` of the task are dropped, as DSRL's
   own files are capped (the cap is the middle number of a DSRL file name, e.g.
   ``SafetyCarCircle-v0-100-1450.hdf5``; this also keeps returns near DSRL's reward range, so
   normalised rewards stay comparable). One gzip HDF5 file
   ``<SimId>-<cap>-<n_trajectories>.hdf5`` is written, plus the data card ``<stem>.md`` /
   ``<stem>.json``, the cost–return scatter ``<stem>.png`` and ``<stem>.episodes.csv``
   (per-episode source, kept or dropped). Without the cap the middle number is the largest
   episode cost in the file (rounded up).

Determinism: with the same seed and budget the data arrays are identical bit for bit (PPO runs
on one torch thread from fixed seeds; the simulators are reset from per-episode seeds).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from flrp.collect.behaviour import (
    NumpyActor,
    PolicySpec,
    TrainedPolicy,
    import_sb3,
    load_actor,
    norm_path,
    train_policy,
)
from flrp.data.tasks import COST_LIMIT, TaskSpec, get_task
from flrp.errors import FlrpError
from flrp.files import atomic_path, write_json, write_text

__all__ = [
    "GENERATOR_NAME",
    "BUDGET_NAMES",
    "SIGMAS",
    "CollectBudget",
    "EpisodePlan",
    "CollectResult",
    "get_budget",
    "plan_episodes",
    "classify_policies",
    "episode_env_seed",
    "rollout_episode",
    "dataset_file_name",
    "collect",
]

GENERATOR_NAME = "flrp.collect.collector/v1"
"""Stored in the HDF5 attrs and the data card; bump whenever the collected data would change."""

SIGMAS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.6)
"""Gaussian action-noise levels of ``policy`` episodes (actions in [-1, 1])."""

KINDS: tuple[str, ...] = ("policy", "switch", "late", "random")

_FINAL = -1
"""Checkpoint step meaning "the policy's final model" (switch episodes use final models)."""

FINAL_EVAL_EPISODES = 3
"""Deterministic episodes per final policy, to sort policies into unsafe / safe pools."""


@dataclass(frozen=True)
class CollectBudget:
    """How much to train and collect: the behaviour policies, the episode count and mix."""

    name: str
    policies: tuple[PolicySpec, ...]
    episodes: int
    chunk: int = 50
    frac_switch: float = 0.20
    frac_late: float = 0.15
    frac_random: float = 0.05
    sigmas: tuple[float, ...] = SIGMAS

    def __post_init__(self) -> None:
        if len(self.policies) < 2:
            raise FlrpError("a collection budget needs at least two policies (unsafe and safe)")
        if len({p.name for p in self.policies}) != len(self.policies):
            raise FlrpError("policy names of a budget must be distinct")
        if self.episodes < 1 or self.chunk < 1:
            raise FlrpError(f"episodes and chunk must be >= 1 (got {self.episodes}, {self.chunk})")
        fracs = (self.frac_switch, self.frac_late, self.frac_random)
        if min(fracs) < 0 or sum(fracs) > 1:
            raise FlrpError("frac_switch, frac_late, frac_random must be >= 0 with a sum <= 1")
        names = [p.name for p in self.policies]
        for i, p in enumerate(self.policies):
            if p.init_from is not None and p.init_from not in names[:i]:
                raise FlrpError(f"policy {p.name}: init_from={p.init_from!r} must name an earlier policy of the budget ({', '.join(names[:i]) or 'none'})")
        first = self.policies[0]
        if any(p.relative for p in self.policies) and (first.relative or first.lam != 0 or first.budget is not None):
            raise FlrpError("relative λ needs policies[0] to be the unconstrained policy (fixed λ = 0): it sets the reward scale")

    def fingerprint(self) -> str:
        """Hash of everything that determines the data (not the name)."""
        d = asdict(self)
        d.pop("name")
        d["policies"] = [q.fingerprint_dict() for q in self.policies]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def policies_fingerprint(self) -> str:
        """Hash of the behaviour-policy specs only (what the ``policies/`` directory holds)."""
        d = [p.fingerprint_dict() for p in self.policies]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# Behaviour-policy multipliers. λ = 0 is the unconstrained policy; the others are ratios to its
# mean |reward| per step (PolicySpec.relative), because the switching point between "all cost"
# and "no cost" sits at a similar *ratio* across tasks: at 100k PPO steps BallRun (~16 reward
# per step) is unconstrained for λ <= 5 (return 1614, cost 91) and safe for λ >= 10 (408 / 0);
# CarRun (~6 per step) is unconstrained for λ <= 1 (~1230 / 184) and safe for λ >= 2 (541 / 0),
# and at λ = 2 its checkpoints wander (costs 162, 61, 7, 0, 0, 0, 22, 19, 0, 0 every 10k steps).
# Ratios 0.3 and 0.5 sit near that point (middle-cost checkpoints), 1.25 is safely above it.
# Lagrangian PPO (PolicySpec(budget=...)) was tried on BallRun (budget 20, 100k steps) and did
# not settle at a middle cost: from λ0 = 0 it went unconstrained and stayed there although λ rose
# past 50; from λ0 = 10 it stayed at cost ~0. The named budgets therefore use fixed λ; the middle
# costs come from near-switching-point checkpoints and from switch episodes.
RATIO_SAFE = 1.25

BUDGET_NAMES: tuple[str, ...] = ("tiny", "small", "medium", "full", "long")

# ``long``: a runner trained longer and faster, then fine-tuned under each λ. 100k single-env PPO
# steps (``full``) learn BallRun, CarRun and CarCircle but not the Drone, Ant or velocity tasks
# (their unconstrained policies stay slow, so the data miss the high-cost side). Eight envs in
# lockstep with VecNormalize and minibatches of 256 ran HalfCheetahVelocity at ~8k env steps/s on
# one core (``full``'s single-env PPO ran the Bullet tasks at 400-700) and reached return ~1700 /
# cost ~250 within 1M steps.
# Fine-tuning each λ from the runner's final weights makes the checkpoints along that run walk
# the frontier from the runner's (high return, high cost) towards the safe side. The ratios are
# larger than ``full``'s: where a cost is paid at almost every step (DroneRun, the velocity tasks)
# fine-tuning at 0.3 or 0.6·r̄ did not lower the runner's cost at all (DroneRun 158 -> 158,
# HalfCheetahVelocity 241 -> 425 and 270 as it kept speeding up), 1.25 and 3·r̄ left DroneRun at
# 157 after 200k steps, and 3·r̄ brought HalfCheetahVelocity to 29 in 300k steps.
LONG_RATIOS: tuple[float, ...] = (0.6, RATIO_SAFE, 3.0, 10.0)
LONG_STEPS: dict[str, tuple[int, int, float]] = {
    # task -> (runner steps, fine-tuning steps per λ, discount). Swimmer needs γ ≈ 1 (its reward
    # only pays off over long horizons; SB3-zoo's PPO setting).
    "SwimmerVelocity": (1_000_000, 300_000, 0.9999),
    "HalfCheetahVelocity": (1_000_000, 300_000, 0.99),
    # AntVelocity: a 1M-step runner reached return 735 / cost 6 (too slow for the 2.62 m/s
    # limit: the data held costs <= 51); at 3M steps, 4213 / 861.
    "AntVelocity": (3_000_000, 300_000, 0.99),
    # Bullet's Ant learns slowly: a probe runner had return 12 on AntCircle after 300k steps.
    "AntRun": (2_000_000, 300_000, 0.99),
    "AntCircle": (2_000_000, 300_000, 0.99),
}
LONG_STEPS_DEFAULT = (600_000, 200_000, 0.99)  # Bullet tasks: their simulators are 3-8x slower
LONG_FRESH_RATIOS: dict[str, tuple[float, ...]] = {
    # Policies trained from scratch (not from the runner) at these λ ratios, for tasks where
    # fine-tuning does not find the safe side. DroneRun's cost is a velocity violation that its
    # runner pays from step ~42 on; fine-tuned at 3·r̄ (λ ≈ 14) its cost stayed at 157 for 200k
    # steps, and at 10·r̄ (λ ≈ 47) its return fell from 936 to ~500 while the cost stayed at
    # ~150 for 150k steps. From scratch at λ ≈ 47 the cost is 0 within 50k steps (return ~20).
    "DroneRun": (3.0, 10.0),
    # Swimmer: the 1M-step runner swims at return ~305 and pays cost ~555 (wiggle speed over the
    # limit); fine-tuned at 0.5, 2, 6 and 20·r̄ its cost stayed at 490–510.
    "SwimmerVelocity": (2.0, 6.0, 20.0),
}
LONG_RATIOS_BY_TASK: dict[str, tuple[float, ...]] = {
    # Swimmer earns ~0.03 reward per step (a PPO runner at 1M steps: return ~35, ~30 cost steps
    # from its wiggles), so a cost step weighs ~30 reward steps: its λ ratios are scaled up.
    "SwimmerVelocity": (0.5, 2.0, 6.0, 20.0),
}


def _policies(ratios: Iterable[float], steps: int, every: int, **kw: Any) -> tuple[PolicySpec, ...]:
    """λ = 0 first, then one relative-λ policy per ratio (distinct PPO seeds)."""
    specs = [PolicySpec(lam=0.0, steps=steps, checkpoint_every=every, seed_offset=1, **kw)]
    specs += [PolicySpec(lam=float(r), relative=True, steps=steps, checkpoint_every=every, seed_offset=i + 2, **kw)
              for i, r in enumerate(ratios)]
    return tuple(specs)


def get_budget(name: str, task: TaskSpec) -> CollectBudget:
    """The named budget (the same for every task; ``task`` is for budgets that scale with it).

    λ ratios are relative to the unconstrained policy's reward per step (see ``RATIO_SAFE``):

    * ``tiny`` – tests only: λ ∈ {0, 1.25·r̄} × 2048 PPO steps, 20 episodes (seconds).
    * ``small`` – λ ∈ {0, 1.25·r̄} × 30k steps, 400 episodes.
    * ``medium`` – λ ∈ {0, 0.5·r̄, 1.25·r̄} × 60k steps, 800 episodes.
    * ``full`` – λ ∈ {0, 0.3·r̄, 0.5·r̄, 1.25·r̄} × 100k steps, 1500 episodes before the cost cap
      (which drops the unconstrained policies' own episodes: ~60 % are kept on BallRun).
    * ``long`` – for tasks ``full`` does not learn (Drone, Ant, velocity): a λ = 0 runner with 8
      lockstep envs and VecNormalize (600k steps; 1M on Swimmer and HalfCheetah, 3M on AntVelocity, 2M on Bullet's Ant), then λ ∈
      {0.6, 1.25, 3, 10}·r̄ (Swimmer: {0.5, 2, 6, 20}·r̄) each fine-tuned from it (200k / 300k
      steps), 2000 episodes. DroneRun adds λ ∈ {3, 10}·r̄ trained from scratch (``-fresh``), Swimmer {2, 6, 20}·r̄.
    """
    if name == "tiny":
        return CollectBudget("tiny", _policies((RATIO_SAFE,), 2048, 1024, n_steps=512), episodes=20, chunk=8)
    if name == "small":
        return CollectBudget("small", _policies((RATIO_SAFE,), 30_000, 10_000), episodes=400)
    if name == "medium":
        return CollectBudget("medium", _policies((0.5, RATIO_SAFE), 60_000, 10_000), episodes=800)
    if name == "full":
        return CollectBudget("full", _policies((0.3, 0.5, RATIO_SAFE), 100_000, 10_000), episodes=1500)
    if name == "long":
        runner, tune, gamma = LONG_STEPS.get(task.name, LONG_STEPS_DEFAULT)
        vec: dict[str, Any] = dict(n_envs=8, n_steps=2048, batch_size=256, normalize=True, gamma=gamma)
        specs = [PolicySpec(lam=0.0, steps=runner, checkpoint_every=runner // 10, seed_offset=1, **vec)]
        tuned: list[dict[str, Any]] = [dict(init_from=specs[0].name, lam=r) for r in LONG_RATIOS_BY_TASK.get(task.name, LONG_RATIOS)]
        fresh: list[dict[str, Any]] = [dict(label="fresh", lam=r) for r in LONG_FRESH_RATIOS.get(task.name, ())]
        for kw in tuned + fresh:  # relative λ, PPO seed offsets 2, 3, ... in this order
            specs.append(PolicySpec(relative=True, steps=tune, checkpoint_every=tune // 10, seed_offset=len(specs) + 1, **kw, **vec))
        return CollectBudget("long", tuple(specs), episodes=2000)
    raise FlrpError(f"unknown collection budget {name!r}; choose one of {', '.join(BUDGET_NAMES)}")


# --------------------------------------------------------------------------------------------
# Episode plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodePlan:
    """Everything that decides one episode (its randomness comes from ``(seed, index)``)."""

    index: int
    env_seed: int
    kind: str
    policy: str | None = None  # the policy acting first (switch: unsafe; late: safe)
    step: int | None = None  # checkpoint (env steps) of ``policy``; -1 = the final model
    sigma: float = 0.0
    then_policy: str | None = None  # switch / late: the final policy taking over
    switch_cost: float | None = None  # switch: episode cost at which ``then_policy`` takes over
    switch_step: int | None = None  # late: step from which ``then_policy`` acts


def episode_env_seed(seed: int, index: int) -> int:
    """Env seed of episode ``index`` of a collection with ``seed``."""
    return 1_000_000 * (int(seed) + 1) + int(index)


def plan_episodes(
    seed: int,
    budget: CollectBudget,
    task: TaskSpec,
    unsafe: tuple[str, ...] | None = None,
    safe: tuple[str, ...] | None = None,
    cost_rates: dict[str, float] | None = None,
) -> list[EpisodePlan]:
    """The episode list of a collection: a pure function of its arguments.

    ``unsafe`` / ``safe`` are the policy names switch episodes draw from (default: the first and
    the last policy of the budget) and ``cost_rates`` the unsafe policies' cost per step (default
    1); :func:`collect` takes both from each final policy's measured cost, which is itself
    deterministic.
    """
    unsafe = unsafe or (budget.policies[0].name,)
    safe = safe or (budget.policies[-1].name,)
    rates = cost_rates or {}
    rng = np.random.default_rng([int(seed), 0])
    n, horizon = budget.episodes, task.max_episode_steps
    p_policy = 1.0 - budget.frac_switch - budget.frac_late - budget.frac_random
    # Every draw is made for every episode, in a fixed order, so the plan does not depend on
    # which branch an episode takes.
    kinds = rng.choice(len(KINDS), size=n, p=[p_policy, budget.frac_switch, budget.frac_late, budget.frac_random])
    pairs = [(p.name, s) for p in budget.policies for s in p.checkpoint_steps]
    pair_idx = rng.integers(0, len(pairs), size=n)
    sigma_idx = rng.integers(0, len(budget.sigmas), size=n)
    switch_sigma = rng.choice([0.0, 0.1, 0.3], size=n)
    switch_cost = rng.uniform(0.0, float(task.max_cost), size=n)
    unsafe_idx = rng.integers(0, len(unsafe), size=n)
    safe_idx = rng.integers(0, len(safe), size=n)
    plans = []
    for i in range(n):
        env_seed = episode_env_seed(seed, i)
        kind = KINDS[kinds[i]]
        if kind == "policy":
            name, step = pairs[pair_idx[i]]
            plans.append(EpisodePlan(i, env_seed, kind, name, int(step), float(budget.sigmas[sigma_idx[i]])))
        elif kind == "switch":
            plans.append(EpisodePlan(i, env_seed, kind, unsafe[unsafe_idx[i]], _FINAL, float(switch_sigma[i]),
                                     then_policy=safe[safe_idx[i]], switch_cost=float(switch_cost[i])))
        elif kind == "late":
            bad = unsafe[unsafe_idx[i]]
            # Steps the unsafe policy needs to pay about c*; a policy with no measured cost
            # gets the whole episode.
            rate = max(float(rates.get(bad, 1.0)), 1e-6)
            k = int(np.clip(round(horizon - float(switch_cost[i]) / rate), 0, horizon))
            plans.append(EpisodePlan(i, env_seed, kind, safe[safe_idx[i]], _FINAL, float(switch_sigma[i]),
                                     then_policy=bad, switch_step=k))
        else:
            plans.append(EpisodePlan(i, env_seed, kind))
    return plans


def classify_policies(final_costs: dict[str, float], max_cost: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split policies into the switch episodes' unsafe and safe pools by their final cost.

    Unsafe: mean episode cost above ``max_cost / 2`` (enough to reach any switch cost in
    ``[0, max_cost]`` most of the time), else the costliest policy. Safe: within
    ``0.05 · max_cost`` of the cheapest policy. Names keep the budget's order.
    """
    names = list(final_costs)
    lo = min(final_costs.values())
    unsafe = tuple(n for n in names if final_costs[n] > max_cost / 2) or (max(names, key=lambda n: final_costs[n]),)
    safe = tuple(n for n in names if final_costs[n] <= lo + 0.05 * max_cost)
    return unsafe, safe


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------


def rollout_episode(env: Any, plan: EpisodePlan, actors: dict[tuple[str, int], NumpyActor], seed: int, max_steps: int) -> dict[str, np.ndarray]:
    """Run one planned episode; returns its DSRL rows (float32 obs/actions, bool flags).

    ``actors`` maps ``(policy name, checkpoint step)`` to the exported actor. The stored action
    is the clipped action actually sent to the simulator.
    """
    rng = np.random.default_rng([int(seed), 1, plan.index])
    space = env.action_space
    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    act_dim = int(np.prod(space.shape))
    actor = actors[(plan.policy, plan.step)] if plan.policy is not None else None  # type: ignore[index]
    then_actor = actors[(plan.then_policy, _FINAL)] if plan.then_policy is not None else None
    obs, _ = env.reset(seed=plan.env_seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")}
    cost_sum = 0.0
    switched = False
    for t in range(max_steps):
        if plan.kind == "late" and not switched and t >= int(plan.switch_step):  # type: ignore[arg-type]
            actor, switched = then_actor, True
        if plan.kind == "random":
            a = rng.uniform(low, high)
        else:
            assert actor is not None
            a = actor(obs)
            if plan.sigma > 0:
                a = a + plan.sigma * rng.standard_normal(act_dim)
        a = np.clip(a, low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(a)
        cost = float(info["cost"])
        rows["observations"].append(np.asarray(obs, dtype=np.float32))
        rows["next_observations"].append(np.asarray(next_obs, dtype=np.float32))
        rows["actions"].append(a)
        rows["rewards"].append(float(reward))
        rows["costs"].append(cost)
        rows["terminals"].append(bool(terminated))
        # A step that both terminates and times out is a termination (DSRL splits on either).
        rows["timeouts"].append(bool(truncated and not terminated))
        cost_sum += cost
        obs = next_obs
        if plan.kind == "switch" and not switched and cost_sum >= float(plan.switch_cost):  # type: ignore[arg-type]
            actor, switched = then_actor, True
        if terminated or truncated:
            break
    if not (rows["terminals"][-1] or rows["timeouts"][-1]):
        # The env's own TimeLimit equals max_steps, so this only guards a mismatched env.
        rows["timeouts"][-1] = True
    return {
        "observations": np.stack(rows["observations"]),
        "next_observations": np.stack(rows["next_observations"]),
        "actions": np.stack(rows["actions"]),
        "rewards": np.asarray(rows["rewards"], dtype=np.float32),
        "costs": np.asarray(rows["costs"], dtype=np.float32),
        "terminals": np.asarray(rows["terminals"], dtype=bool),
        "timeouts": np.asarray(rows["timeouts"], dtype=bool),
    }


_ROW_KEYS = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")


def _plan_hash(plans: list[EpisodePlan]) -> str:
    blob = json.dumps([GENERATOR_NAME, [asdict(p) for p in plans]], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _chunk_dir(work: Path, plans: list[EpisodePlan]) -> Path:
    # Chunks are keyed by the exact episode plan: a changed mix, count or generator starts a
    # fresh directory instead of mixing episodes of two plans (the policies are still reused).
    return work / f"chunks-{_plan_hash(plans)}"


def _chunk_path(chunk_dir: Path, c: int) -> Path:
    return chunk_dir / f"chunk_{c:05d}.npz"


def _save_chunk(path: Path, episodes: list[dict[str, np.ndarray]], stats: dict[str, Any]) -> None:
    arrays = {k: np.concatenate([e[k] for e in episodes]) for k in _ROW_KEYS}
    arrays["episode_lengths"] = np.asarray([len(e["rewards"]) for e in episodes], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays, stats=np.frombuffer(json.dumps(stats).encode(), dtype=np.uint8))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _load_chunk(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in (*_ROW_KEYS, "episode_lengths")}
        stats = json.loads(bytes(z["stats"]).decode())
    return arrays, stats


# --------------------------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------------------------


@dataclass
class CollectResult:
    """Paths and figures of one collection."""

    hdf5: Path
    card_md: Path
    card_json: Path
    scatter_png: Path
    episodes_csv: Path
    work_dir: Path
    card: dict[str, Any] = field(default_factory=dict)


def dataset_file_name(task: TaskSpec, cap: float, n_traj: int) -> str:
    """DSRL-style ``<SimId>-<cap>-<n>.hdf5`` (cap printed as an integer when it is one)."""
    if task.sim_id is None:
        raise FlrpError(f"task {task.name} has no simulator id")
    cap_s = str(int(cap)) if float(cap).is_integer() else f"{cap:g}"
    return f"{task.sim_id}-{cap_s}-{int(n_traj)}.hdf5"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("flrp", "stable-baselines3", "torch", "numpy", "gymnasium", "pybullet", "bullet-safety-gym", "safety-gymnasium", "mujoco"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _check_task(task_name: str) -> TaskSpec:
    task = get_task(task_name)
    if task.suite == "toy":
        raise FlrpError("the toy task has its own generator (flrp.collect.toy); `flrp collect` is for simulator tasks")
    if task.suite == "metadrive":
        raise FlrpError(f"task {task.name}: MetaDrive cannot be built here, so its data cannot be collected")
    # Build once now so a missing simulator fails before any training (one-line FlrpError).
    from flrp.envs import make

    make(task.name, seed=0).close()
    return task


def _policy_dir(work: Path) -> Path:
    return work / "policies"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _final_eval(work: Path, spec: TaskSpec, rec: TrainedPolicy, env: Any, seed: int) -> dict[str, Any]:
    """Mean return/cost of a final policy over :data:`FINAL_EVAL_EPISODES` noise-free episodes.

    Cached in ``policies/<name>.final_eval.json``, keyed by the checksum of the final model so a
    retrained policy is re-measured. Seeds ``episode_env_seed(seed, 900_000 + j)`` are never
    used by collection episodes.
    """
    final = _policy_dir(work) / rec.final
    cache = _policy_dir(work) / f"{rec.name}.final_eval.json"
    # The actions depend on the model and on its normalisation statistics (if any): hash both.
    digest = _sha256(final) + (":" + _sha256(norm_path(final)) if norm_path(final).exists() else "")
    if cache.exists():
        got = json.loads(cache.read_text())
        if got.get("model_sha256") == digest:
            return got
    actors = {(rec.name, _FINAL): load_actor(final)}
    rets, costs, abs_r, steps = [], [], 0.0, 0
    for j in range(FINAL_EVAL_EPISODES):
        plan = EpisodePlan(900_000 + j, episode_env_seed(seed, 900_000 + j), "policy", rec.name, _FINAL, 0.0)
        ep = rollout_episode(env, plan, actors, seed, spec.max_episode_steps)
        r = ep["rewards"].astype(np.float64)
        rets.append(float(r.sum()))
        costs.append(float(ep["costs"].astype(np.float64).sum()))
        abs_r += float(np.abs(r).sum())
        steps += len(r)
    out = {"model_sha256": digest, "returns": rets, "costs": costs, "return_mean": float(np.mean(rets)),
           "cost_mean": float(np.mean(costs)), "abs_reward_per_step": abs_r / max(1, steps)}
    write_json(cache, out)
    return out


def collect(
    task: str,
    out_dir: str | Path,
    seed: int = 0,
    budget: str | CollectBudget = "small",
    cost_cap: bool = True,
    work_dir: str | Path | None = None,
    progress: bool = True,
    keep_work: bool = True,
) -> CollectResult:
    """Train behaviour policies, roll out the planned episodes and write one DSRL HDF5 file.

    ``out_dir`` receives the dataset and its data card; intermediate files (SB3 checkpoints,
    episode chunks, the plan) go to ``work_dir`` (default ``<out_dir>/work-<SimId>-seed<seed>-
    <budget>``), which makes a rerun of the same command resume. ``cost_cap`` drops episodes
    whose cost exceeds DSRL's ``max_cost`` for the task (DSRL's own files are capped that way).
    ``keep_work=False`` deletes the work directory after a successful write.
    """
    t_start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise FlrpError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    spec = _check_task(task)
    import_sb3()  # fail before any work if stable-baselines3 is missing
    bud = get_budget(budget, spec) if isinstance(budget, str) else budget
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out / f"work-{spec.sim_id}-seed{seed}-{bud.name}"
    work.mkdir(parents=True, exist_ok=True)

    # A work dir made with other settings would silently mix data: refuse it.
    manifest = {"generator": GENERATOR_NAME, "task": spec.name, "seed": seed, "policies_fingerprint": bud.policies_fingerprint()}
    man_path = work / "manifest.json"
    if man_path.exists():
        old = json.loads(man_path.read_text())
        if old != manifest:
            raise FlrpError(f"{work}: work directory was made with other settings ({old}); delete it or pick another --work dir")
    else:
        write_json(man_path, manifest)

    # ---- 1. behaviour policies, 2. final-policy evaluation. The first policy (λ = 0) is
    # trained and measured first: its mean |reward| per step is the scale of relative λ.
    from flrp.envs import make

    records: dict[str, TrainedPolicy] = {}
    final_eval: dict[str, dict[str, Any]] = {}
    reward_scale: float | None = None
    env = make(spec.name, seed=episode_env_seed(seed, 0))
    try:
        for i, pspec in enumerate(bud.policies):
            if progress:
                print(f"flrp collect: policy {i + 1}/{len(bud.policies)} {pspec.name} ({pspec.steps} PPO steps)", flush=True)
            rec = train_policy(spec, pspec, _policy_dir(work), seed=1000 * seed, progress=progress, reward_scale=reward_scale)
            records[pspec.name] = rec
            final_eval[pspec.name] = _final_eval(work, spec, rec, env, seed)
            if i == 0:
                reward_scale = float(final_eval[pspec.name]["abs_reward_per_step"])
    finally:
        env.close()
    unsafe, safe = classify_policies({n: e["cost_mean"] for n, e in final_eval.items()}, spec.max_cost)
    rates = {n: final_eval[n]["cost_mean"] / spec.max_episode_steps for n in unsafe}
    plans = plan_episodes(seed, bud, spec, unsafe, safe, rates)
    needed: set[tuple[str, int]] = set()
    for p in plans:
        if p.kind == "policy":
            needed.add((p.policy, p.step))  # type: ignore[arg-type]
        if p.then_policy is not None:
            needed.add((p.policy, _FINAL))  # type: ignore[arg-type]
            needed.add((p.then_policy, _FINAL))

    # ---- 3. chunks
    n_chunks = math.ceil(len(plans) / bud.chunk)
    chunk_dir = _chunk_dir(work, plans)
    missing = [c for c in range(n_chunks) if not _chunk_path(chunk_dir, c).exists()]
    if missing:
        actors = {}
        for name, step in sorted(needed):
            rec = records[name]
            fname = rec.final if step == _FINAL else rec.checkpoints[step]
            actors[(name, step)] = load_actor(_policy_dir(work) / fname)
        env = make(spec.name, seed=episode_env_seed(seed, 0))
        bar = None
        if progress:
            from flrp.progress import progress as progress_bar

            bar = progress_bar(len(plans), initial=len(plans) - sum(len(plans[c * bud.chunk:(c + 1) * bud.chunk]) for c in missing), desc=f"collect {spec.name}", unit="episode")
        try:
            for c in missing:
                t0 = time.perf_counter()
                chunk_plans = plans[c * bud.chunk:(c + 1) * bud.chunk]
                eps = []
                for p in chunk_plans:
                    eps.append(rollout_episode(env, p, actors, seed, spec.max_episode_steps))
                    if bar is not None:
                        bar.update(1)
                _save_chunk(_chunk_path(chunk_dir, c), eps, {"wall_time_s": time.perf_counter() - t0, "episodes": len(eps)})
        finally:
            env.close()
            if bar is not None:
                bar.close()

    # ---- 4. assemble
    parts, chunk_times = [], []
    for c in range(n_chunks):
        arrays, stats = _load_chunk(_chunk_path(chunk_dir, c))
        parts.append(arrays)
        chunk_times.append(float(stats["wall_time_s"]))
    full = {k: np.concatenate([p[k] for p in parts]) for k in (*_ROW_KEYS, "episode_lengths")}
    lengths = full.pop("episode_lengths")
    if len(lengths) != len(plans):
        raise FlrpError(f"{work}: chunks hold {len(lengths)} episodes, the plan has {len(plans)}; delete the chunks directory")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ep_ret = np.add.reduceat(full["rewards"].astype(np.float64), starts)
    ep_cost = np.add.reduceat(full["costs"].astype(np.float64), starts)
    keep = ep_cost <= spec.max_cost if cost_cap else np.ones(len(plans), dtype=bool)
    if not keep.any():
        raise FlrpError(f"{spec.name}: no episode has cost <= {spec.max_cost:g}; nothing to write")
    row_keep = np.repeat(keep, lengths)
    data = {k: v[row_keep] for k, v in full.items()}
    n_traj = int(keep.sum())
    cap_value = float(spec.max_cost) if cost_cap else float(math.ceil(ep_cost[keep].max()))
    name = dataset_file_name(spec, cap_value, n_traj)
    h5_path = out / name
    stem = h5_path.stem
    attrs: dict[str, Any] = {
        "task": spec.name,
        "sim_id": str(spec.sim_id),
        "dsrl_id": spec.dsrl_id,
        "seed": seed,
        "budget": bud.name,
        "budget_fingerprint": bud.fingerprint(),
        "cost_cap": cap_value if cost_cap else -1.0,
        "generator": GENERATOR_NAME,
    }
    from flrp.data.hdf5 import load_dsrl_hdf5, write_dsrl_hdf5

    write_dsrl_hdf5(h5_path, data, attrs=attrs)

    # ---- 5. data card
    csv_path = out / f"{stem}.episodes.csv"
    _write_episodes_csv(csv_path, plans, ep_ret, ep_cost, lengths, keep)
    ds = load_dsrl_hdf5(h5_path)
    from flrp.plotting.dataset import dataset_summary, plot_cost_return_scatter

    png = out / f"{stem}.png"
    plot_cost_return_scatter(ds, png, title=f"{spec.name} (flrp collect, seed {seed}, {bud.name}):\n{n_traj} trajectories",
                             reference=(spec.min_reward, spec.max_reward))
    summary = dataset_summary(ds, spec, cost_limit=COST_LIMIT)
    card = _card(spec, bud, seed, cost_cap, cap_value, plans, records, final_eval, (unsafe, safe), ep_ret, ep_cost, keep, summary, chunk_times, time.perf_counter() - t_start, h5_path, png, csv_path, work)
    card_json = out / f"{stem}.json"
    card_md = out / f"{stem}.md"
    write_json(card_json, card)
    write_text(card_md, _card_markdown(card))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(f"flrp collect: wrote {h5_path} ({n_traj} trajectories, {len(ds)} transitions) and {card_md}", flush=True)
    return CollectResult(h5_path, card_md, card_json, png, csv_path, work, card)


def _write_episodes_csv(path: Path, plans: list[EpisodePlan], ret: np.ndarray, cost: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "env_seed", "kind", "policy", "checkpoint_step", "sigma", "then_policy", "switch_cost", "switch_step", "return", "cost", "length", "kept"])
    for p, r, c, n, k in zip(plans, ret, cost, lengths, keep):
        w.writerow([p.index, p.env_seed, p.kind, p.policy or "", "" if p.step is None else p.step, p.sigma,
                    p.then_policy or "", "" if p.switch_cost is None else f"{p.switch_cost:.3f}",
                    "" if p.switch_step is None else p.switch_step, f"{r:.4f}", f"{c:g}", int(n), int(bool(k))])
    write_text(path, buf.getvalue())


def _rng3(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"min": float("nan"), "mean": float("nan"), "max": float("nan")}
    return {"min": float(np.min(x)), "mean": float(np.mean(x)), "max": float(np.max(x))}


def _card(spec: TaskSpec, bud: CollectBudget, seed: int, cost_cap: bool, cap_value: float, plans: list[EpisodePlan],
          records: dict[str, TrainedPolicy], final_eval: dict[str, dict[str, Any]],
          pools: tuple[tuple[str, ...], tuple[str, ...]], ret: np.ndarray, cost: np.ndarray, keep: np.ndarray, summary: dict[str, Any],
          chunk_times: list[float], wall: float, h5: Path, png: Path, csv_path: Path, work: Path) -> dict[str, Any]:
    kinds = np.array([p.kind for p in plans])
    by_kind = {}
    for k in KINDS:
        m = kinds == k
        by_kind[k] = {"planned": int(m.sum()), "kept": int((m & keep).sum()),
                      "return": _rng3(ret[m & keep]), "cost": _rng3(cost[m & keep])}
    pols = []
    for p in bud.policies:
        rec = records[p.name]
        last = rec.lam_history[-1] if rec.lam_history else (0, p.lam, float("nan"), float("nan"))
        pols.append({
            "name": p.name,
            "mode": "lagrangian" if p.budget is not None else "fixed-lambda",
            "lambda": rec.lam_effective,
            "lambda_spec": f"{p.lam:g} x reward scale" if p.relative else f"{p.lam:g}",
            "cost_budget": p.budget,
            "ppo_steps": p.steps,
            "ppo_settings": {"n_envs": p.n_envs, "n_steps": p.n_steps, "batch_size": p.batch_size, "normalize": p.normalize,
                             "gamma": p.gamma, "init_from": p.init_from},
            "checkpoints": sorted(rec.checkpoints),
            "ppo_seed": rec.seed,
            "final_lambda": float(last[1]),
            "last_rollout_return": float(last[2]),
            "last_rollout_cost": float(last[3]),
            "train_wall_time_s": rec.wall_time_s,
            "final_eval_return": final_eval[p.name]["return_mean"],
            "final_eval_cost": final_eval[p.name]["cost_mean"],
            "lambda_history": [list(h) for h in rec.lam_history],
        })
    train_time = float(sum(r.wall_time_s for r in records.values()))
    collect_time = float(sum(chunk_times))
    return {
        "generator": GENERATOR_NAME,
        "file": h5.name,
        "scatter_png": png.name,
        "episodes_csv": csv_path.name,
        "work_dir": str(work),
        "task": {"name": spec.name, "suite": spec.suite, "sim_id": spec.sim_id, "dsrl_id": spec.dsrl_id,
                 "max_episode_steps": spec.max_episode_steps, "dsrl_min_reward": spec.min_reward,
                 "dsrl_max_reward": spec.max_reward, "dsrl_max_cost": spec.max_cost},
        "seed": seed,
        "budget": bud.name,
        "budget_fingerprint": bud.fingerprint(),
        "cost_cap": {"applied": cost_cap, "value": cap_value,
                     "rule": "episodes with cost > DSRL max_cost dropped" if cost_cap else "no cap; value = max episode cost kept, rounded up"},
        "policies": pols,
        "switch_pools": {"unsafe": list(pools[0]), "safe": list(pools[1])},
        "reward_scale": final_eval[bud.policies[0].name]["abs_reward_per_step"],
        "episode_mix": {"planned": len(plans), "kept": int(keep.sum()), "dropped_by_cap": int((~keep).sum()),
                        "sigmas": list(bud.sigmas), "frac_switch": bud.frac_switch, "frac_late": bud.frac_late, "frac_random": bud.frac_random,
                        "by_kind": by_kind},
        "all_planned_episodes": {"return": _rng3(ret), "cost": _rng3(cost)},
        "dataset": summary,
        "wall_time_s": {"train_policies": train_time, "collect_episodes": collect_time,
                        "compute_total": train_time + collect_time, "this_invocation": wall},
        "versions": _versions(),
    }


def _ppo_settings_lines(policies: list[dict[str, Any]]) -> list[str]:
    """One line per policy whose PPO settings differ from the single-env defaults (``long`` budgets)."""
    out = []
    for p in policies:
        st = p.get("ppo_settings")
        if not st or (st["n_envs"] == 1 and not st["normalize"] and st["init_from"] is None and st["gamma"] == 0.99):
            continue
        start = f", fine-tuned from {st['init_from']}'s final weights" if st["init_from"] else ""
        out.append(f"- {p['name']}: {st['n_envs']} lockstep envs, rollout {st['n_envs']} × {st['n_steps']} steps, minibatch {st['batch_size']}, "
                   f"VecNormalize {'on' if st['normalize'] else 'off'}, γ = {st['gamma']:g}{start}.")
    return out + [""] if out else []


def _card_markdown(card: dict[str, Any]) -> str:
    from flrp.plotting.dataset import summary_markdown

    t = card["task"]
    mix = card["episode_mix"]
    wt = card["wall_time_s"]
    lines = [
        f"# {card['file']}",
        "",
        f"DSRL-format dataset for **{t['name']}** ({t['sim_id']}, episode length {t['max_episode_steps']}), "
        f"made by `flrp collect {t['name']} --seed {card['seed']} --budget {card['budget']}` ({card['generator']}).",
        "",
        "## How it was made",
        "",
        "Behaviour policies: stable-baselines3 PPO, MLP [64, 64], reward r − λ·c, checkpoints along training. "
        "Episodes: `policy` = one checkpoint with Gaussian action noise σ ∈ "
        f"{{{', '.join(f'{s:g}' for s in mix['sigmas'])}}}; `switch` = an unsafe final policy until the episode cost reaches "
        f"c* ~ U(0, {t['dsrl_max_cost']:g}), then a safe final policy; `late` = a safe final policy, then an unsafe one for the "
        "last c*/rate steps (rate = its measured cost per step); both with noise σ ∈ {0, 0.1, 0.3}; `random` = uniform actions. "
        "Each episode has its own env seed (see the episodes CSV).",
        "",
        f"Cost cap: {'**applied**' if card['cost_cap']['applied'] else 'not applied'} — {card['cost_cap']['rule']} "
        f"(cap value in the file name: {card['cost_cap']['value']:g}).",
        "",
        f"Relative λ are multiples of the reward scale r̄ = {card['reward_scale']:.3g} (mean |reward| per step of the first, unconstrained policy).",
        "",
        *_ppo_settings_lines(card["policies"]),
        "| policy | mode | λ (spec) | λ | cost budget | PPO steps | final λ | last rollout return / cost | final policy return / cost | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in card["policies"]:
        budget = "—" if p["cost_budget"] is None else f"{p['cost_budget']:g}"
        lines.append(f"| {p['name']} | {p['mode']} | {p['lambda_spec']} | {p['lambda']:.3g} | {budget} | {p['ppo_steps']} | {p['final_lambda']:.3g} | "
                     f"{p['last_rollout_return']:.0f} / {p['last_rollout_cost']:.1f} | "
                     f"{p['final_eval_return']:.0f} / {p['final_eval_cost']:.1f} | {p['train_wall_time_s']:.0f} |")
    pools = card["switch_pools"]
    lines += ["", f"Final policies measured on {FINAL_EVAL_EPISODES} noise-free episodes. Switch pools: unsafe "
              f"{', '.join(pools['unsafe'])} (cost > {t['dsrl_max_cost'] / 2:g}, else the costliest); safe "
              f"{', '.join(pools['safe'])} (within {0.05 * t['dsrl_max_cost']:g} of the lowest cost)."]
    lines += ["", "| episode kind | planned | kept | return min / mean / max | cost min / mean / max |", "|---|---|---|---|---|"]
    for k, v in mix["by_kind"].items():
        r, c = v["return"], v["cost"]
        if v["kept"] == 0:
            lines.append(f"| {k} | {v['planned']} | 0 | — | — |")
            continue
        lines.append(f"| {k} | {v['planned']} | {v['kept']} | {r['min']:.0f} / {r['mean']:.0f} / {r['max']:.0f} | {c['min']:.0f} / {c['mean']:.1f} / {c['max']:.0f} |")
    lines.append(f"| **total** | {mix['planned']} | {mix['kept']} | | |")
    lines += [
        "",
        "## Dataset",
        "",
        summary_markdown(card["dataset"]).rstrip(),
        "",
        f"![cost-return scatter]({card['scatter_png']})",
        "",
        "## Wall time (one CPU core)",
        "",
        f"policy training {wt['train_policies']:.0f} s, episode collection {wt['collect_episodes']:.0f} s, "
        f"total {wt['compute_total']:.0f} s (this invocation {wt['this_invocation']:.0f} s; a resumed run reuses earlier stages).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        "",
    ]
    return "\n".join(lines)
