"""Random-action env-steps/s for each simulator task, through flrp.envs.make.

Usage::

    python benchmarks/bench_env_steps.py                    # the 8 Bullet + 9 Safety-Gymnasium tasks
    python benchmarks/bench_env_steps.py --tasks CarRun CarGoal1 --seconds 5

Prints one line per task: step rate (time spent in ``step`` only), mean ``reset`` time, steps
taken, episodes finished. Tasks whose simulator is not installed are reported and skipped.
Single process; run it on an otherwise idle machine for stable numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flrp.envs import make
from flrp.errors import FlrpError

__all__ = ["DEFAULT_TASKS", "bench_task", "main"]

DEFAULT_TASKS = [
    "BallRun", "CarRun", "DroneRun", "AntRun", "BallCircle", "CarCircle", "DroneCircle", "AntCircle",
    "CarButton1", "CarButton2", "CarGoal1", "CarGoal2", "CarPush1", "CarPush2",
    "AntVelocity", "HalfCheetahVelocity", "SwimmerVelocity",
]


def bench_task(task: str, seconds: float, seed: int = 0) -> dict[str, float]:
    """Step ``task`` with uniform random actions for about ``seconds`` of stepping time."""
    env = make(task, seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    t0 = time.perf_counter()
    env.reset()
    reset_times = [time.perf_counter() - t0]
    step_time, steps, episodes = 0.0, 0, 0
    while step_time < seconds:
        action = rng.uniform(low, high).astype(env.action_space.dtype)
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        step_time += time.perf_counter() - t0
        steps += 1
        if terminated or truncated:
            episodes += 1
            t0 = time.perf_counter()
            env.reset()
            reset_times.append(time.perf_counter() - t0)
    env.close()
    return {
        "steps_per_s": steps / step_time,
        "reset_s": float(np.mean(reset_times)),
        "steps": float(steps),
        "episodes": float(episodes),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    parser.add_argument("--seconds", type=float, default=3.0, help="stepping time per task")
    args = parser.parse_args(argv)
    print(f"{'task':<22}{'steps/s':>10}{'reset s':>10}{'steps':>9}{'episodes':>10}", flush=True)
    for task in args.tasks:
        try:
            r = bench_task(task, args.seconds)
        except FlrpError as err:
            print(f"{task:<22} skipped: {err}", flush=True)
            continue
        print(
            f"{task:<22}{r['steps_per_s']:>10.0f}{r['reset_s']:>10.3f}{int(r['steps']):>9}{int(r['episodes']):>10}",
            flush=True,
        )


if __name__ == "__main__":
    main()
