"""Dataset overview: per-episode statistics and the cost-return scatter (paper Fig. 5 style)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import COST_LIMIT, TaskSpec
from flrp.errors import FlrpError
from flrp.files import atomic_path

__all__ = ["dataset_summary", "summary_markdown", "plot_cost_return_scatter"]


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"min": float("nan"), "mean": float("nan"), "max": float("nan")}
    return {"min": float(np.min(x)), "mean": float(np.mean(x)), "max": float(np.max(x))}


def dataset_summary(ds: OfflineDataset, task: TaskSpec | None = None, cost_limit: float = COST_LIMIT) -> dict[str, Any]:
    """Sizes and per-episode return/cost/length statistics; plain Python types (JSON-ready).

    ``safe_fraction`` is the share of episodes whose undiscounted cost is <= ``cost_limit``
    (OSRL's BC-Safe selection rule). With a task, its DSRL constants are included under ``"task"``.
    """
    if cost_limit < 0:
        raise FlrpError(f"cost limit must be >= 0, got {cost_limit!r}")
    returns = ds.episode_returns()
    costs = ds.episode_costs()
    lengths = ds.episode_lengths()
    n_ep = int(ds.num_episodes)
    n_safe = int(np.count_nonzero(costs <= cost_limit))
    summary: dict[str, Any] = {
        "source": ds.source,
        "transitions": len(ds),
        "episodes": n_ep,
        "obs_dim": ds.obs_dim,
        "act_dim": ds.act_dim,
        "return": _stats(returns),
        "cost": _stats(costs),
        "length": {"min": int(lengths.min()) if n_ep else 0, "max": int(lengths.max()) if n_ep else 0},
        "cost_limit": float(cost_limit),
        "safe_episodes": n_safe,
        "safe_fraction": n_safe / n_ep if n_ep else float("nan"),
    }
    if task is not None:
        summary["task"] = {
            "name": task.name,
            "suite": task.suite,
            "dsrl_id": task.dsrl_id,
            "max_episode_steps": task.max_episode_steps,
            "min_reward": task.min_reward,
            "max_reward": task.max_reward,
            "min_cost": task.min_cost,
            "max_cost": task.max_cost,
        }
    return summary


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """A small two-column markdown table of a :func:`dataset_summary` result."""
    r, c, ln = summary["return"], summary["cost"], summary["length"]
    rows = [
        ("source", str(summary.get("source", ""))),
        ("transitions", str(summary["transitions"])),
        ("episodes", str(summary["episodes"])),
        ("obs / act dim", f"{summary['obs_dim']} / {summary['act_dim']}"),
        ("episode return min / mean / max", " / ".join(_fmt(r[k]) for k in ("min", "mean", "max"))),
        ("episode cost min / mean / max", " / ".join(_fmt(c[k]) for k in ("min", "mean", "max"))),
        ("episode length min / max", f"{ln['min']} / {ln['max']}"),
        (f"episodes with cost <= {_fmt(summary['cost_limit'])}",
         f"{summary['safe_episodes']} ({100 * summary['safe_fraction']:.1f}%)"),
    ]
    task = summary.get("task")
    if task:
        rows += [
            ("task", f"{task['name']} ({task['suite']}, {task['dsrl_id']})"),
            ("max episode steps", str(task["max_episode_steps"])),
            ("DSRL reward bounds", f"{_fmt(task['min_reward'])} .. {_fmt(task['max_reward'])}"),
            ("DSRL cost bounds", f"{_fmt(task['min_cost'])} .. {_fmt(task['max_cost'])}"),
        ]
    # Pipes inside a cell would break the table.
    lines = ["| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def plot_cost_return_scatter(
    ds: OfflineDataset,
    path: str | os.PathLike[str],
    title: str | None = None,
    cost_limit: float = COST_LIMIT,
    reference: tuple[float, float] | None = None,
    reference_label: str = "DSRL return range",
) -> Path:
    """One dot per trajectory (x = episode cost, y = episode return), dashed line at the limit.

    ``reference = (min, max)`` draws two dotted horizontal lines, e.g. DSRL's published return
    range for the task, so a made dataset can be compared with DSRL's by eye. Written atomically
    as PNG; returns the final path.
    """
    import matplotlib

    # Select the backend only when plotting, so importing flrp never changes matplotlib state.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if cost_limit < 0:
        raise FlrpError(f"cost limit must be >= 0, got {cost_limit!r}")
    returns = ds.episode_returns()
    costs = ds.episode_costs()
    safe = costs <= cost_limit
    n_safe, n_unsafe = int(np.count_nonzero(safe)), int(np.count_nonzero(~safe))

    fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=120)
    try:
        ax.scatter(costs[safe], returns[safe], s=8, alpha=0.6, color="tab:blue",
                   label=f"cost ≤ {cost_limit:g}: {n_safe}")
        ax.scatter(costs[~safe], returns[~safe], s=8, alpha=0.6, color="tab:red",
                   label=f"cost > {cost_limit:g}: {n_unsafe}")
        ax.axvline(cost_limit, color="black", linestyle="--", linewidth=1.0, label=f"cost limit {cost_limit:g}")
        if reference is not None:
            lo, hi = (float(x) for x in reference)
            ax.axhline(hi, color="tab:green", linestyle=":", linewidth=1.2, label=f"{reference_label} [{lo:.0f}, {hi:.0f}]")
            ax.axhline(lo, color="tab:green", linestyle=":", linewidth=1.2)
        ax.set_xlabel("episode cost")
        ax.set_ylabel("episode return")
        ax.set_title(title if title is not None else f"{Path(ds.source).name}: {len(costs)} trajectories", fontsize="medium")
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        target = Path(path)
        with atomic_path(target) as tmp:
            # The temp name ends in ".tmp", so the format must be explicit.
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return target
