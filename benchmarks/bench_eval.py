"""Evaluation throughput: env-steps/s of the DSRL protocol run sequentially vs across processes.

    python benchmarks/bench_eval.py [--task CarRun] [--episodes 20] [--workers 2]

Builds an (untrained) FLRP policy of the paper's size for the task, saves it, and times
``flrp.evaluation.rollout.evaluate_model_file`` with 1 worker and with ``--workers`` workers, in
one run. Prints env-steps/s and the speed-up. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def compare(task_name: str, episodes: int = 20, workers: int = 2, algo_name: str = "flrp") -> float:
    """Print env-steps/s with 1 and ``workers`` processes; returns the speed-up."""
    import torch

    from flrp.algos.base import get_algorithm
    from flrp.data.spec import DataSpec
    from flrp.data.tasks import get_task
    from flrp.envs import make
    from flrp.evaluation.rollout import evaluate_model_file

    torch.set_num_threads(1)
    task = get_task(task_name)
    env = make(task.name)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    cls = get_algorithm(algo_name)
    algo = cls(cls.Config(), device="cpu")
    algo.build(DataSpec(obs_dim, act_dim, [0.0] * obs_dim, [1.0] * obs_dim, 1.0, task.max_episode_steps, 0.0, 1.0))
    with tempfile.TemporaryDirectory() as d:
        model = algo.save(Path(d) / "model.pt")
        rates = []
        for w in (1, workers):
            t0 = time.perf_counter()
            res = evaluate_model_file(model, task, episodes=episodes, workers=w)
            dt = time.perf_counter() - t0
            steps = int(np.sum([e.length for e in res.episodes]))
            rates.append(steps / dt)
            print(f"{task.name} {algo_name}: {episodes} episodes, {w} process(es): {steps} env steps in {dt:.1f} s = {steps / dt:,.0f} env-steps/s")
    print(f"parallel evaluation speed-up with {workers} processes: {rates[1] / rates[0]:.2f}x")
    return rates[1] / rates[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="CarRun")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--algo", default="flrp")
    args = p.parse_args()
    compare(args.task, args.episodes, args.workers, args.algo)


if __name__ == "__main__":
    main()
