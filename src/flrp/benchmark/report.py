"""A sweep's results: every run's ``eval.json`` -> ``results.csv``, ``results.md``, ``results.png``.

* ``results.csv`` is the tidy table: one row per evaluated run (algorithm, override tag, dataset,
  task, seed, cost limit, normalized reward and cost, raw return and cost, safe verdict, run dir).
* ``results.md`` is the summary in the paper's Table 1 style: per task and algorithm, the
  normalized reward (Eq. 39) and normalized cost (Eq. 40) as mean ± std over seeds, where each
  seed contributes its mean over evaluation episodes (the value its ``eval.json`` reports). An
  entry is safe iff its mean normalized cost is <= 1 (:func:`flrp.evaluation.metrics.is_safe`);
  the best reward among the safe entries of each task is bold. Std is the population std
  (``ddof=0``, as ``EvalResult`` and OSRL use), 0 for a single seed.
* ``results.png`` plots normalized cost (x, dashed line at the limit 1) against normalized
  reward (y): one marker per algorithm with error bars over seeds, faint dots for single seeds,
  one panel per task.

Runs are found from the directory layout ``<algo>/<dataset-stem>/seed<k>[/<override-tag>]`` (with
``run.json`` as a fallback for runs placed elsewhere); ``sweep.json``, if present, supplies the
order of algorithms and tasks and the runs that have no result yet. All files are written
atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flrp.errors import FlrpError
from flrp.evaluation.metrics import is_safe
from flrp.io import atomic_path, write_text

__all__ = [
    "RunRecord",
    "GroupSummary",
    "collect_runs",
    "summarize",
    "results_markdown",
    "write_results_csv",
    "plot_cost_reward",
    "write_report",
]

_SEED_DIR = re.compile(r"seed(\d+)")


@dataclass
class RunRecord:
    """One run of a sweep; the metric fields are ``nan`` until its ``eval.json`` exists.

    Attributes:
        algo: algorithm registry name.
        variant: override tag (``refine_steps=3``) or ``""``.
        dataset: dataset stem (the layout's second level).
        task: evaluation task (from ``eval.json``/``run.json``), ``""`` if unknown.
        seed: config seed.
        dir: run directory relative to the sweep directory (POSIX form).
        status: ``evaluated``, ``partial`` (checkpoint, no result), ``started`` or ``not started``.
        cost_limit, episodes: evaluation protocol of the run.
        norm_reward, norm_cost: means over the run's evaluation episodes.
        return_mean, cost_mean: raw episode return and cost, means over episodes.
        safe: the run's own verdict (its mean normalized cost <= 1).
    """

    algo: str
    variant: str
    dataset: str
    task: str
    seed: int
    dir: str
    status: str
    cost_limit: float = math.nan
    episodes: int = 0
    norm_reward: float = math.nan
    norm_cost: float = math.nan
    return_mean: float = math.nan
    cost_mean: float = math.nan
    safe: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.algo} [{self.variant}]" if self.variant else self.algo

    @property
    def evaluated(self) -> bool:
        return self.status == "evaluated"


@dataclass
class GroupSummary:
    """One row of Table 1: a (task, algorithm) pair over seeds.

    Attributes:
        task: the row's task label (``task`` or ``task (dataset)`` if a task has several datasets).
        label: algorithm label (with the override tag, if any).
        seeds: evaluated seeds; ``expected``: seeds requested (evaluated or not).
        reward_mean, reward_std, cost_mean, cost_std: normalized, over the evaluated seeds.
        safe: mean normalized cost <= 1 (``None`` without results); ``best``: bold in the table.
        cost_limits: the distinct cost limits of its runs.
        reward_seeds, cost_seeds: the per-seed values (for the plot).
    """

    task: str
    label: str
    seeds: int
    expected: int
    reward_mean: float
    reward_std: float
    cost_mean: float
    cost_std: float
    safe: bool | None
    best: bool
    cost_limits: tuple[float, ...]
    reward_seeds: tuple[float, ...]
    cost_seeds: tuple[float, ...]


# ---------------------------------------------------------------- collecting
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _identify(rel: Path, run_json: dict[str, Any] | None) -> tuple[str, str, int, str] | None:
    """``(algo, dataset stem, seed, variant)`` from the layout, else from ``run.json``."""
    parts = rel.parts
    if len(parts) >= 3 and (m := _SEED_DIR.fullmatch(parts[2])):
        return parts[0], parts[1], int(m.group(1)), "/".join(parts[3:])
    if run_json is None:
        return None
    ds = str(run_json.get("dataset", ""))
    stem = "toy" if ds.lower() in ("toy", "toyhazard", "toyhazard-v0") else Path(ds).stem
    return str(run_json.get("algo", "?")), stem, int(run_json.get("config", {}).get("seed", 0)), ""


def collect_runs(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every run below ``root`` (each directory with a ``run.json``) plus the runs ``sweep.json``
    lists that have not started, in the manifest's order, then path order.

    Raises:
        FlrpError: ``root`` does not exist or holds neither a ``sweep.json`` nor a run.
    """
    from flrp.benchmark.suite import MANIFEST_NAME, RunSpec

    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise FlrpError(f"{root}: no such directory")
    manifest = _read_json(base / MANIFEST_NAME) if (base / MANIFEST_NAME).exists() else None
    order: list[str] = [r["dir"] for r in manifest.get("runs", [])] if manifest else []
    dirs = {p.parent.relative_to(base).as_posix() for p in base.rglob("run.json")}
    if not dirs and manifest is None:
        raise FlrpError(f"{root}: not a sweep directory (no {MANIFEST_NAME} and no run.json below it)")
    ordered = [d for d in order if d] + sorted(dirs - set(order))
    records: list[RunRecord] = []
    for rel in ordered:
        run_dir = base / rel
        run_json = _read_json(run_dir / "run.json")
        ident = _identify(Path(rel), run_json)
        if ident is None:
            spec = next((RunSpec.from_dict(r) for r in manifest.get("runs", []) if r["dir"] == rel), None) if manifest else None
            if spec is None:
                continue
            ident = (spec.algo, spec.stem, spec.seed, spec.tag)
        algo, stem, seed, variant = ident
        ev = _read_json(run_dir / "eval.json")
        task = str((ev or {}).get("task") or (run_json or {}).get("task") or "")
        rec = RunRecord(algo=algo, variant=variant, dataset=stem, task=task, seed=seed, dir=rel, status="not started")
        if ev is not None and "norm_reward_mean" in ev:
            rec.status = "evaluated"
            rec.cost_limit = float(ev.get("cost_limit", math.nan))
            rec.episodes = len(ev.get("episodes", []))
            rec.norm_reward = float(ev["norm_reward_mean"])
            rec.norm_cost = float(ev["norm_cost_mean"])
            rec.return_mean = float(ev.get("return_mean", math.nan))
            rec.cost_mean = float(ev.get("cost_mean", math.nan))
            rec.safe = bool(ev.get("safe", is_safe(rec.norm_cost)))
        elif (run_dir / "checkpoint.pt").exists():
            rec.status = "partial"
        elif run_json is not None:
            rec.status = "started"
        records.append(rec)
    # A run with no result yet takes its task from the other runs on the same dataset.
    task_of = {r.dataset: r.task for r in records if r.task}
    for r in records:
        r.task = r.task or task_of.get(r.dataset, "")
    return records


# ---------------------------------------------------------------- summarising
def _task_labels(records: Sequence[RunRecord]) -> dict[tuple[str, str], str]:
    stems: dict[str, set[str]] = {}
    for r in records:
        stems.setdefault(r.task or r.dataset, set()).add(r.dataset)
    out = {}
    for r in records:
        t = r.task or r.dataset
        out[(t, r.dataset)] = t if len(stems[t]) == 1 else f"{t} ({r.dataset})"
    return out


def summarize(records: Sequence[RunRecord]) -> list[GroupSummary]:
    """Group runs by (task, algorithm label): mean ± std over seeds, safe verdict, best safe.

    Groups come in first-appearance order (tasks, then algorithms within a task).
    """
    labels = _task_labels(records)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    task_order: list[str] = []
    for r in records:
        t = labels[(r.task or r.dataset, r.dataset)]
        if t not in task_order:
            task_order.append(t)
        groups.setdefault((t, r.label), []).append(r)
    out: list[GroupSummary] = []
    for (task, label), runs in sorted(groups.items(), key=lambda kv: task_order.index(kv[0][0])):
        done = [r for r in runs if r.evaluated]
        rew = np.array([r.norm_reward for r in done], dtype=np.float64)
        cost = np.array([r.norm_cost for r in done], dtype=np.float64)
        n = len(done)
        out.append(GroupSummary(
            task=task,
            label=label,
            seeds=n,
            expected=len(runs),
            reward_mean=float(rew.mean()) if n else math.nan,
            reward_std=float(rew.std()) if n else math.nan,
            cost_mean=float(cost.mean()) if n else math.nan,
            cost_std=float(cost.std()) if n else math.nan,
            safe=bool(is_safe(float(cost.mean()))) if n else None,
            best=False,
            cost_limits=tuple(sorted({r.cost_limit for r in done})),
            reward_seeds=tuple(float(x) for x in rew),
            cost_seeds=tuple(float(x) for x in cost),
        ))
    for task in task_order:
        safe = [g for g in out if g.task == task and g.safe]
        if safe:
            top = max(g.reward_mean for g in safe)
            for g in safe:
                g.best = g.reward_mean == top
    return out


def _pm(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "/")


def results_markdown(groups: Sequence[GroupSummary], records: Sequence[RunRecord], root: str = "") -> str:
    """The summary as markdown: the tidy Table 1 (one row per task × algorithm), the same numbers
    in the paper's wide layout, and the runs that have no result yet."""
    evaluated = [r for r in records if r.evaluated]
    limits = sorted({r.cost_limit for r in evaluated})
    limit_txt = ", ".join(f"{x:g}" for x in limits) if limits else "—"
    lines = [
        "# Sweep results",
        "",
        f"{len(evaluated)} of {len(records)} runs evaluated{f' in `{root}`' if root else ''}. "
        f"Normalized reward (Eq. 39) and normalized cost (Eq. 40, cost limit {limit_txt}), mean ± std over seeds; "
        "each seed's value is the mean over its evaluation episodes. Safe iff the mean normalized cost is ≤ 1. "
        "**Bold**: the best reward among the safe algorithms of a task.",
        "",
        "| task | algorithm | seeds | normalized reward ↑ | normalized cost ↓ | safe |",
        "|---|---|---|---|---|---|",
    ]
    for g in groups:
        reward = _pm(g.reward_mean, g.reward_std)
        if g.best:
            reward = f"**{reward}**"
        seeds = str(g.seeds) if g.seeds == g.expected else f"{g.seeds}/{g.expected}"
        verdict = "—" if g.safe is None else ("safe" if g.safe else "unsafe")
        lines.append(f"| {_cell(g.task)} | {_cell(g.label)} | {seeds} | {reward} | {_pm(g.cost_mean, g.cost_std)} | {verdict} |")

    tasks = list(dict.fromkeys(g.task for g in groups))
    algos = list(dict.fromkeys(g.label for g in groups))
    by = {(g.task, g.label): g for g in groups}
    lines += ["", "## Table 1 layout", "", "r: normalized reward ↑, c: normalized cost ↓; ✗ marks an unsafe entry (c > 1).", ""]
    lines.append("| task | " + " | ".join(f"{_cell(a)} r ↑ | {_cell(a)} c ↓" for a in algos) + " |")
    lines.append("|---|" + "---|---|" * len(algos))
    for t in tasks:
        row = [_cell(t)]
        for a in algos:
            cell = by.get((t, a))
            if cell is None or cell.seeds == 0:
                row += ["—", "—"]
                continue
            r = f"{cell.reward_mean:.2f}"
            row += [f"**{r}**" if cell.best else r, f"{cell.cost_mean:.2f}" + ("" if cell.safe else " ✗")]
        lines.append("| " + " | ".join(row) + " |")

    missing = [r for r in records if not r.evaluated]
    if missing:
        lines += ["", f"## Runs without results ({len(missing)})", ""]
        lines += [f"- `{r.dir}`: {r.status}" for r in missing[:50]]
        if len(missing) > 50:
            lines.append(f"- … and {len(missing) - 50} more")
        lines.append("")
        lines.append("A failed run's output is in its `train.log`; rerunning the sweep resumes unfinished runs.")
    return "\n".join(lines) + "\n"


_CSV_FIELDS = [f.name for f in fields(RunRecord)]


def write_results_csv(records: Sequence[RunRecord], path: str | os.PathLike[str]) -> Path:
    """The tidy table: one row per evaluated run (columns = :class:`RunRecord` fields)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in records:
        if r.evaluated:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(r).items()})
    write_text(path, buf.getvalue())
    return Path(path)


# ---------------------------------------------------------------- plotting
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def plot_cost_reward(groups: Sequence[GroupSummary], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Normalized cost (x) vs normalized reward (y), one panel per task, one marker per algorithm
    with error bars (std over seeds), faint dots for single seeds; dashed line and shade at the
    limit (normalized cost 1). Written atomically as PNG; returns the final path.

    Raises:
        FlrpError: no group has an evaluated seed.
    """
    import matplotlib

    # Select the backend only when plotting, so importing flrp never changes matplotlib state.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    shown = [g for g in groups if g.seeds > 0]
    if not shown:
        raise FlrpError("no evaluated runs to plot")
    tasks = list(dict.fromkeys(g.task for g in shown))
    algos = list(dict.fromkeys(g.label for g in shown))
    colors = plt.get_cmap("tab10" if len(algos) <= 10 else "tab20")
    style = {a: (_MARKERS[i % len(_MARKERS)], colors(i % colors.N)) for i, a in enumerate(algos)}
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.8 * nrows + 0.5), dpi=120, squeeze=False, layout="constrained")
    try:
        for ax, task in zip(axes.flat, tasks):
            mine = [g for g in shown if g.task == task]
            xs = [x for g in mine for x in (*g.cost_seeds, g.cost_mean + g.cost_std)]
            xmax = max(1.25, 1.08 * max(xs))
            ax.axvspan(1.0, xmax, color="tab:red", alpha=0.06, linewidth=0)
            ax.axvline(1.0, color="black", linestyle="--", linewidth=1.0)
            for g in mine:
                marker, color = style[g.label]
                ax.scatter(g.cost_seeds, g.reward_seeds, marker=marker, s=14, color=color, alpha=0.3, linewidths=0)
                ax.errorbar(g.cost_mean, g.reward_mean, xerr=g.cost_std, yerr=g.reward_std, fmt=marker, color=color,
                            markersize=7, capsize=3, markeredgecolor="black" if g.best else color, markeredgewidth=1.2)
            ax.set_xlim(min(0.0, min(xs) - 0.05), xmax)
            ax.set_title(task)
            ax.set_xlabel("normalized cost (limit 1)")
            ax.set_ylabel("normalized reward")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tasks):]:
            ax.set_visible(False)
        handles = [Line2D([], [], marker=style[a][0], color=style[a][1], linestyle="none", markersize=7, label=a) for a in algos]
        handles.append(Line2D([], [], marker="o", color="white", markeredgecolor="black", markeredgewidth=1.2, linestyle="none", markersize=7, label="best safe"))
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0, label="cost limit"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * ncols + 1), fontsize="small", frameon=False)
        if title:
            fig.suptitle(title)
        target = Path(path)
        with atomic_path(target) as tmp:
            # The temp name ends in ".tmp", so the format must be explicit.
            fig.savefig(tmp, format="png", bbox_inches="tight")  # long legends widen the figure
    finally:
        plt.close(fig)
    return target


# ---------------------------------------------------------------- all together
def write_report(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and (if any run is evaluated) ``results.png`` in ``root``.

    Returns:
        ``{"md": ..., "csv": ..., "png": ...}`` for the files written.

    Raises:
        FlrpError: ``root`` is not a sweep directory.
    """
    base = Path(root).expanduser().resolve()
    records = collect_runs(base)
    groups = summarize(records)
    paths: dict[str, Path] = {}
    paths["md"] = base / "results.md"
    write_text(paths["md"], results_markdown(groups, records, root=str(base)))
    paths["csv"] = write_results_csv(records, base / "results.csv")
    if any(g.seeds for g in groups):
        n = sum(r.evaluated for r in records)
        paths["png"] = plot_cost_reward(groups, base / "results.png", title=f"{base.name}: {n} runs, mean ± std over seeds")
    return paths
