"""One evaluation path for every algorithm (OSRL/DSRL protocol, paper Sec. 4 and C.4).

``evaluate`` runs N episodes, each reset with its own seed (seed, seed+1, ...), up to the task's
episode length, reading the cost from ``info["cost"]``. Episodes run in lockstep so the policy's
forward pass is batched across them; episodes run in fixed groups (``EVAL_GROUP``) that may be
spread over processes without changing the numbers. Nothing here selects checkpoints: evaluation only reports.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flrp.data.tasks import COST_LIMIT, TaskSpec
from flrp.errors import FlrpError
from flrp.evaluation.metrics import is_safe, normalized_cost, normalized_reward

# Below this many env steps an evaluation stays in one process. Forked workers start in
# milliseconds (bench_eval, 2 cores: CarRun 20 x 200 steps 1.79x, CarGoal1 20 x 1000 1.92x);
# spawned ones (CUDA) take seconds, hence the larger bound there.
PARALLEL_MIN_ENV_STEPS = 4_000
PARALLEL_MIN_ENV_STEPS_SPAWN = 20_000

__all__ = ["EpisodeStats", "EvalResult", "run_episodes", "evaluate", "evaluate_model_file"]


@dataclass
class EpisodeStats:
    seed: int
    ret: float
    cost: float
    length: int


@dataclass
class EvalResult:
    task: str
    cost_limit: float
    episodes: list[EpisodeStats]
    norm_reward_mean: float
    norm_reward_std: float
    norm_cost_mean: float
    norm_cost_std: float
    return_mean: float
    return_std: float
    cost_mean: float
    cost_std: float
    safe: bool

    @classmethod
    def from_episodes(cls, task: TaskSpec, episodes: list[EpisodeStats], cost_limit: float) -> "EvalResult":
        if not episodes:  # a mean over nothing is NaN: never a result
            raise FlrpError(f"{task.name}: an evaluation needs at least one episode (--episodes >= 1)")
        rets = np.array([e.ret for e in episodes])
        costs = np.array([e.cost for e in episodes])
        nr = normalized_reward(rets, task)
        nc = normalized_cost(costs, cost_limit)
        # Safe is judged on the mean over episodes (OSRL/FISOR/LSPC normalise the mean).
        return cls(
            task=task.name,
            cost_limit=cost_limit,
            episodes=episodes,
            norm_reward_mean=float(np.mean(nr)),
            norm_reward_std=float(np.std(nr)),
            norm_cost_mean=float(np.mean(nc)),
            norm_cost_std=float(np.std(nc)),
            return_mean=float(rets.mean()),
            return_std=float(rets.std()),
            cost_mean=float(costs.mean()),
            cost_std=float(costs.std()),
            safe=bool(is_safe(float(np.mean(nc)))),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "SAFE" if self.safe else "UNSAFE"
        return (
            f"{self.task}: normalized reward {self.norm_reward_mean:.3f} ± {self.norm_reward_std:.3f}, "
            f"normalized cost {self.norm_cost_mean:.3f} ± {self.norm_cost_std:.3f} ({verdict} at limit {self.cost_limit:g}); "
            f"return {self.return_mean:.1f} ± {self.return_std:.1f}, cost {self.cost_mean:.1f} ± {self.cost_std:.1f} "
            f"over {len(self.episodes)} episodes"
        )

    def markdown(self) -> str:
        return (
            "| task | episodes | norm. reward | norm. cost | return | cost | verdict |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {self.task} | {len(self.episodes)} | {self.norm_reward_mean:.3f} ± {self.norm_reward_std:.3f} | "
            f"{self.norm_cost_mean:.3f} ± {self.norm_cost_std:.3f} | {self.return_mean:.1f} ± {self.return_std:.1f} | "
            f"{self.cost_mean:.1f} ± {self.cost_std:.1f} | {'safe' if self.safe else 'unsafe'} |\n"
        )


class _StatelessRunner:
    """Adapter for policies that act on the current observation only."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def act(self, obs: np.ndarray, env_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.policy.predict(obs, deterministic=deterministic)

    def observe(self, env_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None:
        pass


def run_episodes(policy: Any, task: TaskSpec, seeds: list[int], deterministic: bool = True) -> list[EpisodeStats]:
    """Run one episode per seed in lockstep.

    ``policy`` has ``predict(obs_batch, deterministic)``. A stateful policy (e.g. CDT, which tracks
    returns- and costs-to-go) instead provides ``episode_runner(n_envs)`` returning an object with
    ``act(obs, env_ids, deterministic)`` and ``observe(env_ids, rewards, costs)``; ``env_ids`` are
    the indices of the episodes still running.
    """
    from flrp.envs import make

    envs = [make(task.name) for _ in seeds]
    try:
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])
        n = len(envs)
        runner = policy.episode_runner(n) if hasattr(policy, "episode_runner") else _StatelessRunner(policy)
        ret, cost, length = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        for _ in range(task.max_episode_steps):
            if not alive.any():
                break
            idx = np.flatnonzero(alive)
            actions = runner.act(obs[idx], idx, deterministic)
            step_r, step_c = np.zeros(len(idx)), np.zeros(len(idx))
            for j, i in enumerate(idx):
                o, r, terminated, truncated, info = envs[i].step(actions[j])
                obs[i] = o
                step_r[j], step_c[j] = float(r), float(info.get("cost", 0.0))
                length[i] += 1
                if terminated or truncated:
                    alive[i] = False
            ret[idx] += step_r
            cost[idx] += step_c
            runner.observe(idx, step_r, step_c)
        return [EpisodeStats(int(s), float(r), float(c), int(n)) for s, r, c, n in zip(seeds, ret, cost, length)]
    finally:
        for env in envs:
            env.close()


# Episodes are evaluated in fixed groups of this many seeds, each group in lockstep and with its
# own acting-noise stream (Algorithm.seeded_noise), so results do not depend on how many processes
# share the work. 5 keeps the policy's forward pass batched and splits the usual 10 or 20 episodes
# evenly over 2 cores.
EVAL_GROUP = 5


def _seeds(seed: int, episodes: int) -> list[int]:
    if int(episodes) < 1:
        raise FlrpError(f"--episodes must be positive to evaluate, got {episodes}")
    return [seed + i for i in range(int(episodes))]


def _groups(seeds: list[int]) -> list[list[int]]:
    return [seeds[i : i + EVAL_GROUP] for i in range(0, len(seeds), EVAL_GROUP)]


def _run_group(policy: Any, task: TaskSpec, seeds: list[int], deterministic: bool) -> list[EpisodeStats]:
    noise = policy.seeded_noise(seeds[0]) if hasattr(policy, "seeded_noise") else contextlib.nullcontext()
    with noise:
        return run_episodes(policy, task, seeds, deterministic)


_LOADED: dict[tuple[str, str, int, int], Any] = {}


def _load(model_path: str, device: str) -> Any:
    """The saved model, loaded once per process (again if the file changed since)."""
    st = os.stat(model_path)
    key = (os.path.realpath(model_path), device, st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        from flrp.algos.base import Algorithm

        _LOADED.clear()
        _LOADED[key] = Algorithm.load(model_path, device=device)
    return _LOADED[key]


def _worker(model_path: str, task_name: str, seeds: list[int], deterministic: bool | None, device: str) -> list[EpisodeStats]:
    from flrp.data.tasks import get_task

    algo = _load(model_path, device)
    det = algo.eval_deterministic if deterministic is None else deterministic
    return _run_group(algo, get_task(task_name), seeds, det)


def _model_cost_limit(policy: Any) -> float:
    """kappa of Eq. 40 that ``policy`` was trained with (``config.cost_limit``), else the paper's 10."""
    return float(getattr(getattr(policy, "config", None), "cost_limit", COST_LIMIT))


def evaluate(
    policy: Any,
    task: TaskSpec,
    episodes: int = 20,
    seed: int = 0,
    cost_limit: float | None = None,
    deterministic: bool | None = None,
) -> EvalResult:
    """Evaluate an in-memory policy in this process (the same groups and numbers as
    :func:`evaluate_model_file` on its saved copy).

    ``deterministic=None`` uses the policy's own convention (``eval_deterministic``);
    ``cost_limit=None`` its ``config.cost_limit`` (an object without one: the paper's 10)."""
    cost_limit = _model_cost_limit(policy) if cost_limit is None else cost_limit
    seeds = _seeds(seed, episodes)
    det = getattr(policy, "eval_deterministic", True) if deterministic is None else deterministic
    out = [e for g in _groups(seeds) for e in _run_group(policy, task, g, det)]
    return EvalResult.from_episodes(task, out, cost_limit)


def _mp_context(device: str) -> mp.context.BaseContext:
    """fork on CPU where available (no start-up: torch, the simulator and flrp are already
    imported, as PyTorch's own DataLoader workers do); spawn for CUDA, which cannot be forked."""
    if device.startswith("cpu") and "fork" in mp.get_all_start_methods():
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return mp.get_context("fork")
    return mp.get_context("spawn")


def evaluate_model_file(
    model_path: str | Path,
    task: TaskSpec,
    episodes: int = 20,
    seed: int = 0,
    cost_limit: float | None = None,
    deterministic: bool | None = None,
    workers: int | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate a saved model, spreading its groups of episodes over ``workers`` processes.

    This process takes a share itself; the others are forked (on CPU) after the model and the
    simulator are loaded here, so a worker starts in milliseconds. ``workers=None`` uses one
    process per core when the evaluation has at least 4k env steps (20k when workers must be
    spawned), else this process only.
    The numbers are the same for any ``workers`` (see ``EVAL_GROUP``). ``cost_limit=None``: the
    model's own ``config.cost_limit`` (the one its training evaluation used).
    """
    from flrp.envs.dims import check_task_fits

    seeds = _seeds(seed, episodes)
    groups = _groups(seeds)
    ctx = _mp_context(device)
    if workers is None:
        bound = PARALLEL_MIN_ENV_STEPS if ctx.get_start_method() == "fork" else PARALLEL_MIN_ENV_STEPS_SPAWN
        workers = (os.cpu_count() or 1) if episodes * task.max_episode_steps >= bound else 1
    workers = max(1, min(workers, len(groups)))
    args = (str(model_path), task.name, deterministic, device)
    shares = [groups[i::workers] for i in range(workers)]
    loaded = _load(str(model_path), device)
    spec = loaded.spec
    cost_limit = _model_cost_limit(loaded) if cost_limit is None else cost_limit
    check_task_fits(spec.obs_dim, spec.act_dim, task, f"model {model_path}")
    with contextlib.ExitStack() as stack:
        futures = []
        if workers > 1:
            from flrp.envs import make

            make(task.name).close()  # import the simulator here once, before forking
            pool = stack.enter_context(cf.ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx))
            futures = [pool.submit(_worker_share, *args, share) for share in shares[1:]]
        parts = _run_share(*args, shares[0]) + [part for f in futures for part in f.result()]
    results = {e.seed: e for part in parts for e in part}
    return EvalResult.from_episodes(task, [results[s] for s in seeds], cost_limit)


def _run_share(model_path: str, task_name: str, deterministic: bool | None, device: str, share: list[list[int]]) -> list[list[EpisodeStats]]:
    return [_worker(model_path, task_name, g, deterministic, device) for g in share]


def _worker_share(model_path: str, task_name: str, deterministic: bool | None, device: str, share: list[list[int]]) -> list[list[EpisodeStats]]:
    """A pool process's share: one thread per worker (and no OpenMP pool inherited across fork)."""
    import torch

    torch.set_num_threads(1)
    return _run_share(model_path, task_name, deterministic, device, share)
