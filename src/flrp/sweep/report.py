"""A sweep's results: every run's ``eval.json`` -> ``results.csv``, ``results.md``, ``results.png``.

* ``results.csv`` is the tidy table: one row per evaluated run (algorithm, override tag, dataset,
  task, seed, cost limit, normalized reward and cost, raw return and cost, safe verdict, run dir).
* ``results.md`` is the summary in the paper's Table 1 style: per task and algorithm, the
  normalized reward (Eq. 39) and normalized cost (Eq. 40) as mean ± std over seeds, where each
  seed contributes its mean over evaluation episodes (the value its ``eval.json`` reports). An
  entry is safe iff its mean normalized cost is <= 1 (:func:`flrp.evaluation.metrics.is_safe`);
  the best reward among the safe entries of each task is bold, and a safe entry one of whose
  seeds is unsafe says so ("safe (1 of 2 seeds unsafe)", † in the wide layout). Std is the population std
  (``ddof=0``, as ``EvalResult`` and OSRL use), 0 for a single seed.
* ``results.png`` plots normalized cost (x, dashed line at the limit 1) against normalized
  reward (y): one marker per algorithm with error bars over seeds, faint dots for single seeds,
  one panel per task.
* Statistics (:func:`interval_statistics`, with the ``rliable`` library's stratified bootstrap;
  in ``results.md``, ``results_stats.csv`` and ``results_stats.png``):

  - per task × algorithm, the mean normalized reward and cost with a 95 % percentile bootstrap
    interval that resamples seeds, then episodes within each resampled seed (rliable's
    ``StratifiedBootstrap`` with seeds as its strata and ``task_bootstrap=True``, i.e. a two-level
    bootstrap). Seeds with unequal episode counts (or an unknown task) fall back to resampling
    the seeds' means;
  - aggregates over the tasks: mean and interquartile mean (IQM) of the per-seed scores, with
    rliable's stratified bootstrap over seeds within each task (Agarwal et al., NeurIPS 2021).
    Only algorithms with results on every task of the sweep enter, each with the number of seeds
    it has on all of them;
  - the probability of improvement of each pair, P(X > Y) for reward and P(X < Y) for cost:
    the Mann-Whitney probability that a seed of X beats a seed of Y on a task, averaged over
    tasks (rliable's ``probability_of_improvement``), with rliable's independent stratified
    bootstrap over both algorithms' seeds.

  The bootstrap draws from numpy's global generator (as rliable does), seeded and restored
  around each call, so a report is reproducible. Without rliable (``pip install "flrp[sweep]"``)
  the report is written without these.

Runs are found from the directory layout ``<algo>/<dataset-stem>/seed<k>[/<override-tag>]`` (with
``run.json`` as a fallback for runs placed elsewhere); ``sweep.json``, if present, supplies the
order of algorithms and tasks and the runs that have no result yet. All files are written
atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from flrp.data.tasks import get_task
from flrp.errors import FlrpError
from flrp.evaluation.metrics import is_safe, normalized_cost, normalized_reward
from flrp.files import atomic_path, write_text
from flrp.training.datasets import TOY_NAMES

__all__ = [
    "RunRecord",
    "GroupSummary",
    "collect_runs",
    "summarize",
    "results_markdown",
    "write_results_csv",
    "plot_cost_reward",
    "Interval",
    "TaskInterval",
    "AggregateScore",
    "Improvement",
    "Statistics",
    "interval_statistics",
    "probability_of_improvement",
    "write_stats_csv",
    "plot_statistics",
    "write_report",
]

# Bootstrap settings of the statistics: replications, interval coverage, seed of the resampling.
BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0

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
        core_min, wall_min: CPU minutes (user + system, evaluation workers included) and wall
            minutes of training plus evaluation, from the run's ``timing.json`` (NaN without one).
        machine: the processor (or GPU), torch and numpy builds the run was last trained on, from
            ``run.json`` (:func:`flrp.devices.machine_info`); ``""`` for a run that predates the record.
        ep_norm_reward, ep_norm_cost: per-episode normalized scores (for the intervals; not in
            ``results.csv``); empty if the task's constants are unknown.
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
    core_min: float = math.nan
    wall_min: float = math.nan
    machine: str = ""
    ep_norm_reward: tuple[float, ...] = ()
    ep_norm_cost: tuple[float, ...] = ()

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
        unsafe_seeds: evaluated seeds whose own normalized cost is > 1 (a safe mean can hide some).
        cost_limits: the distinct cost limits of its runs.
        reward_seeds, cost_seeds: the per-seed values (for the plot).
        core_min: mean CPU minutes per evaluated run (NaN if no run has a ``timing.json``).
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
    core_min: float = math.nan
    unsafe_seeds: int = 0


# ---------------------------------------------------------------- collecting
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _episode_scores(ev: dict[str, Any], cost_limit: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-episode normalized reward and cost of an ``eval.json`` (empty if they cannot be had)."""
    try:
        task = get_task(str(ev["task"]))
        rets = np.array([float(e["ret"]) for e in ev["episodes"]])
        costs = np.array([float(e["cost"]) for e in ev["episodes"]])
        if not len(rets) or not math.isfinite(cost_limit):
            return (), ()
        return tuple(map(float, normalized_reward(rets, task))), tuple(map(float, normalized_cost(costs, cost_limit)))
    except (FlrpError, KeyError, TypeError, ValueError):
        return (), ()


def _identify(rel: Path, run_json: dict[str, Any] | None) -> tuple[str, str, int, str] | None:
    """``(algo, dataset stem, seed, variant)`` from the layout, else from ``run.json``."""
    parts = rel.parts
    if len(parts) >= 3 and (m := _SEED_DIR.fullmatch(parts[2])):
        return parts[0], parts[1], int(m.group(1)), "/".join(parts[3:])
    if run_json is None:
        return None
    ds = str(run_json.get("dataset", ""))
    stem = "toy" if ds.lower() in TOY_NAMES else Path(ds).stem
    return str(run_json.get("algo", "?")), stem, int(run_json.get("config", {}).get("seed", 0)), ""


def _machine_label(info: Any) -> str:
    """One short label of ``run.json``'s machine record (``""`` if it has none)."""
    if not isinstance(info, dict) or not info:
        return ""
    where = str(info.get("gpu") or f"{info.get('cpu', '?')} {info.get('cpu_capability', '')}".strip())
    numpy = f", numpy {info['numpy']}" if "numpy" in info else ""
    return f"{where}, torch {info.get('torch', '?')}{numpy}"


def collect_runs(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every run below ``root`` (each directory with a ``run.json``) plus the runs ``sweep.json``
    lists that have not started, in the manifest's order, then path order.

    Raises:
        FlrpError: ``root`` does not exist or holds neither a ``sweep.json`` nor a run.
    """
    from flrp.sweep.spec import MANIFEST_NAME, RunSpec

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
        rec = RunRecord(algo=algo, variant=variant, dataset=stem, task=task, seed=seed, dir=rel, status="not started",
                        machine=_machine_label((run_json or {}).get("machine")))
        if ev is not None and "norm_reward_mean" in ev:
            rec.status = "evaluated"
            rec.cost_limit = float(ev.get("cost_limit", math.nan))
            rec.episodes = len(ev.get("episodes", []))
            rec.norm_reward = float(ev["norm_reward_mean"])
            rec.norm_cost = float(ev["norm_cost_mean"])
            rec.return_mean = float(ev.get("return_mean", math.nan))
            rec.cost_mean = float(ev.get("cost_mean", math.nan))
            rec.safe = bool(ev.get("safe", is_safe(rec.norm_cost)))
            rec.ep_norm_reward, rec.ep_norm_cost = _episode_scores(ev, rec.cost_limit)
            timing = _read_json(run_dir / "timing.json") or {}
            if "train_cpu_s" in timing and "eval_cpu_s" in timing:
                rec.core_min = (float(timing["train_cpu_s"]) + float(timing["eval_cpu_s"])) / 60
                rec.wall_min = (float(timing.get("train_wall_s", math.nan)) + float(timing.get("eval_wall_s", math.nan))) / 60
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
            core_min=_mean_known([r.core_min for r in done]),
            unsafe_seeds=sum(not is_safe(float(c)) for c in cost),
        ))
    for task in task_order:
        safe = [g for g in out if g.task == task and g.safe]
        if safe:
            top = max(g.reward_mean for g in safe)
            for g in safe:
                g.best = g.reward_mean == top
    return out


def _mean_known(values: Sequence[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def _pm(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "/")


_TABLE1_LEGEND = (
    "Each cell: normalized reward ↑ / normalized cost ↓, mean over seeds; ✗ an unsafe entry (cost > 1), "
    "† safe on average with an unsafe seed, (n/m) n of the m expected seeds; **bold**: the best reward among a task's safe entries."
)


def _seeds_text(g: GroupSummary) -> str:
    """``n`` when all expected seeds are evaluated, else ``n/m``."""
    return str(g.seeds) if g.seeds == g.expected else f"{g.seeds}/{g.expected}"


def _table1_cell(g: GroupSummary | None) -> str:
    """One task × algorithm cell of the paper's layout: ``reward / cost`` with its marks."""
    if g is None or g.seeds == 0:
        return "—"
    reward = f"{g.reward_mean:.2f}"
    text = (f"**{reward}**" if g.best else reward) + f" / {g.cost_mean:.2f}"
    text += " ✗" if not g.safe else " †" if g.unsafe_seeds else ""
    return text + ("" if g.seeds == g.expected else f" ({_seeds_text(g)})")


def results_markdown(groups: Sequence[GroupSummary], records: Sequence[RunRecord], root: str = "", stats: Statistics | None = None, note: str = "") -> str:
    """The summary as markdown: the tidy Table 1 (one row per task × algorithm), the same numbers
    in the paper's layout (tasks × algorithms, one 'reward / cost' cell each), the statistics
    (``stats``, else ``note``), and the runs that have no result yet."""
    evaluated = [r for r in records if r.evaluated]
    limits = sorted({r.cost_limit for r in evaluated})
    limit_txt = ", ".join(f"{x:g}" for x in limits) if limits else "—"
    intro = (
        f"{len(evaluated)} of {len(records)} runs evaluated{f' in `{root}`' if root else ''}. "
        f"Normalized reward (Eq. 39) and normalized cost (Eq. 40, cost limit {limit_txt}), mean ± std over seeds; "
        "each seed's value is the mean over its evaluation episodes. Safe iff the mean normalized cost is ≤ 1. "
        "**Bold**: the best reward among the safe algorithms of a task. "
        "Core-min: CPU minutes per run, training plus evaluation (`timing.json`; — where a run has none)."
    )
    machines = Counter(rec.machine or "not recorded" for rec in evaluated)  # in first-appearance order
    if len(machines) > 1:  # the same seed gives other numbers on another kind of processor
        where = "; ".join(f"{n} on {m}" for m, n in machines.items())
        intro += (f" **The runs do not all record the same machine** ({where}): a seed's numbers differ between kinds of processor"
                  " (and between numpy builds), so read seeds from different machines as different draws.")
    lines = [
        "# Sweep results",
        "",
        intro,
        "",
        "| task | algorithm | seeds | normalized reward ↑ | normalized cost ↓ | safe | core-min |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        reward = _pm(g.reward_mean, g.reward_std)
        if g.best:
            reward = f"**{reward}**"
        verdict = "—" if g.safe is None else ("unsafe" if not g.safe else "safe" if not g.unsafe_seeds else f"safe ({g.unsafe_seeds} of {g.seeds} seeds unsafe)")
        minutes = "—" if math.isnan(g.core_min) else f"{g.core_min:.0f}"
        lines.append(f"| {_cell(g.task)} | {_cell(g.label)} | {_seeds_text(g)} | {reward} | {_pm(g.cost_mean, g.cost_std)} | {verdict} | {minutes} |")

    tasks = list(dict.fromkeys(g.task for g in groups))
    algos = list(dict.fromkeys(g.label for g in groups))
    by = {(g.task, g.label): g for g in groups}
    lines += ["", "## Table 1 layout", "", _TABLE1_LEGEND, ""]
    lines.append("| task | " + " | ".join(_cell(a) for a in algos) + " |")
    lines.append("|---|" + "---|" * len(algos))
    for t in tasks:
        lines.append("| " + " | ".join([_cell(t)] + [_table1_cell(by.get((t, a))) for a in algos]) + " |")

    if stats is not None:
        lines += _stats_markdown(stats)
    elif note:
        lines += ["", note]

    missing = [r for r in records if not r.evaluated]
    if missing:
        lines += ["", f"## Runs without results ({len(missing)})", ""]
        lines += [f"- `{r.dir}`: {r.status}" for r in missing[:50]]
        if len(missing) > 50:
            lines.append(f"- … and {len(missing) - 50} more")
        lines.append("")
        lines.append("A failed run's output is in its `train.log`; rerunning the sweep resumes unfinished runs.")
    return "\n".join(lines) + "\n"


_CSV_FIELDS = [f.name for f in fields(RunRecord) if not f.name.startswith("ep_")]


def write_results_csv(records: Sequence[RunRecord], path: str | os.PathLike[str]) -> Path:
    """The tidy table: one row per evaluated run (columns = :class:`RunRecord` fields)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in records:
        if r.evaluated:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(r).items() if k in _CSV_FIELDS})
    write_text(path, buf.getvalue())
    return Path(path)


# ---------------------------------------------------------------- statistics
@dataclass
class Interval:
    """A point estimate with its 95 % bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass
class TaskInterval:
    """Mean normalized reward and cost of one (task, algorithm) with their intervals.

    ``episodes`` is the episode count of each seed (0 if the seeds' means were resampled)."""

    task: str
    label: str
    seeds: int
    episodes: int
    reward: Interval
    cost: Interval


@dataclass
class AggregateScore:
    """One algorithm over the aggregate's tasks: mean and IQM of its per-seed scores."""

    label: str
    tasks: int
    seeds: int
    safe_tasks: int
    reward_mean: Interval
    reward_iqm: Interval
    cost_mean: Interval
    cost_iqm: Interval


@dataclass
class Improvement:
    """P(reward of X > reward of Y) and P(cost of X < cost of Y) over the aggregate's tasks."""

    x: str
    y: str
    reward: Interval
    cost: Interval


@dataclass
class Statistics:
    """Everything :func:`interval_statistics` computes (see the module docstring)."""

    per_task: list[TaskInterval]
    tasks: list[str]  # the aggregate's tasks
    aggregates: list[AggregateScore]
    improvements: list[Improvement]
    left_out: dict[str, int]  # algorithm -> tasks it has results on, if fewer than all
    reps: int


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """rliable resamples with numpy's global generator: seed it for one call, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _bootstrap(scores: np.ndarray | tuple[np.ndarray, ...], func: Callable[..., np.ndarray], reps: int, task_bootstrap: bool = False) -> list[Interval]:
    """rliable's stratified bootstrap (``get_interval_estimates``, percentile intervals) of
    ``func``: one :class:`Interval` per output of ``func``. ``scores``: (runs, strata, ...) or a
    tuple of such arrays, each resampled independently."""
    from rliable import library as rly

    with _numpy_seed(BOOTSTRAP_SEED):
        point, ci = rly.get_interval_estimates(
            {"x": scores}, func, task_bootstrap=task_bootstrap, reps=reps, confidence_interval_size=CONFIDENCE
        )
    est, bounds = np.atleast_1d(point["x"]), np.asarray(ci["x"]).reshape(2, -1)
    return [Interval(float(e), float(lo), float(hi)) for e, lo, hi in zip(est, bounds[0], bounds[1])]


def _both_means(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 2).mean(0)


def _task_interval(task: str, label: str, runs: Sequence[RunRecord], reps: int) -> TaskInterval:
    """Seeds and the episodes within them resampled (two levels) when every seed has the same
    number of episode scores; else the seeds' means resampled."""
    counts = {len(r.ep_norm_reward) for r in runs}
    if len(counts) == 1 and counts != {0}:
        # (episodes, seeds, metric): seeds are rliable's strata, task_bootstrap resamples them too.
        x = np.stack([np.stack([r.ep_norm_reward, r.ep_norm_cost], -1) for r in runs], axis=1)
        reward, cost = _bootstrap(x, _both_means, reps, task_bootstrap=True)
        episodes = x.shape[0]
    else:
        x = np.array([[[r.norm_reward, r.norm_cost]] for r in runs])  # (seeds, 1, metric)
        reward, cost = _bootstrap(x, _both_means, reps)
        episodes = 0
    return TaskInterval(task, label, len(runs), episodes, reward, cost)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """rliable's ``metrics.probability_of_improvement`` for each trailing column: the
    Mann-Whitney U / (n_x n_y) = P(X > Y) + P(X = Y) / 2 of the runs of each task, averaged over
    tasks. ``scores_*``: (runs, tasks, k) -> (k,). Written with array comparisons because
    rliable's version calls ``scipy.stats.mannwhitneyu`` per task and bootstrap replication
    (~2 ms each); the equality with it is tested."""
    diff = scores_x[:, None] - scores_y[None, :]  # (n_x, n_y, tasks, k)
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(0, 1)).mean(axis=0)


def _aggregates(x: np.ndarray) -> np.ndarray:
    """(seeds, tasks, [reward, cost]) -> mean reward, IQM reward, mean cost, IQM cost: rliable's
    ``aggregate_mean`` (mean of the task means) and ``aggregate_iqm`` (``scipy.stats.trim_mean``
    of all scores, 25 % cut at each end), both metrics in one call (tested equal to rliable's)."""
    from scipy.stats import trim_mean

    mean = x.mean(axis=0).mean(axis=0)
    iqm = trim_mean(x.reshape(-1, 2), 0.25, axis=0)
    return np.array([mean[0], iqm[0], mean[1], iqm[1]])


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    signed = np.array([1.0, -1.0])  # reward: higher is better; cost: lower is better
    return probability_of_improvement(x * signed, y * signed)


def interval_statistics(records: Sequence[RunRecord], groups: Sequence[GroupSummary] | None = None, reps: int = BOOTSTRAP_REPS) -> Statistics:
    """Per-task intervals, aggregates over tasks and probabilities of improvement (module docstring).

    Raises:
        ImportError: rliable is not installed.
    """
    import rliable  # noqa: F401  (fail before any work)

    groups = summarize(records) if groups is None else groups
    labels = _task_labels(records)
    runs: dict[tuple[str, str], list[RunRecord]] = {}
    for r in sorted((r for r in records if r.evaluated), key=lambda r: r.seed):
        runs.setdefault((labels[(r.task or r.dataset, r.dataset)], r.label), []).append(r)
    shown = [g for g in groups if g.seeds > 0]
    per_task = [_task_interval(g.task, g.label, runs[(g.task, g.label)], reps) for g in shown]

    tasks = list(dict.fromkeys(g.task for g in shown))
    algos = list(dict.fromkeys(g.label for g in shown))
    covered = {a: [t for t in tasks if (t, a) in runs] for a in algos}
    included = [a for a in algos if len(covered[a]) == len(tasks)]
    left_out = {a: len(covered[a]) for a in algos if a not in included}
    matrices: dict[str, np.ndarray] = {}
    for a in included:
        n = min(len(runs[(t, a)]) for t in tasks)  # the seeds it has on every task (first n by seed)
        matrices[a] = np.array([[[r.norm_reward, r.norm_cost] for r in runs[(t, a)][:n]] for t in tasks]).transpose(1, 0, 2)
    safe = {(g.task, g.label): bool(g.safe) for g in shown}
    aggregates = []
    for a in included:
        mean_r, iqm_r, mean_c, iqm_c = _bootstrap(matrices[a], _aggregates, reps)
        aggregates.append(AggregateScore(a, len(tasks), matrices[a].shape[0], sum(safe[(t, a)] for t in tasks), mean_r, iqm_r, mean_c, iqm_c))
    improvements = []
    for i, x in enumerate(included):
        for y in included[i + 1 :]:
            reward, cost = _bootstrap((matrices[x], matrices[y]), _improvement, reps)
            improvements.append(Improvement(x, y, reward, cost))
    return Statistics(per_task, tasks, aggregates, improvements, left_out, reps)


def _stats_markdown(stats: Statistics) -> list[str]:
    pct = f"{100 * CONFIDENCE:g} %"
    lines = [
        "",
        f"## {pct} bootstrap confidence intervals",
        "",
        f"Mean [{pct} interval] per task and algorithm. The interval resamples the seeds, then the episodes within each "
        f"resampled seed (rliable's stratified bootstrap, {stats.reps} replications, percentile); "
        "'episodes' 0: only the seeds' means were resampled.",
        "",
        "| task | algorithm | seeds | episodes per seed | normalized reward ↑ | normalized cost ↓ |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {_cell(t.task)} | {_cell(t.label)} | {t.seeds} | {t.episodes} | {t.reward.text()} | {t.cost.text()} |" for t in stats.per_task]
    if stats.aggregates:
        lines += [
            "",
            "## Aggregate over tasks",
            "",
            f"Over the {len(stats.tasks)} task(s) {', '.join(stats.tasks)}: mean and interquartile mean (IQM) of the per-seed "
            f"normalized scores [{pct} interval, rliable's stratified bootstrap over seeds within each task]. "
            "'safe tasks': tasks whose mean normalized cost is ≤ 1.",
            "",
            "| algorithm | seeds | safe tasks | mean reward ↑ | IQM reward ↑ | mean cost ↓ | IQM cost ↓ |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(a.label)} | {a.seeds} | {a.safe_tasks}/{a.tasks} | {a.reward_mean.text()} | {a.reward_iqm.text()} | "
            f"{a.cost_mean.text()} | {a.cost_iqm.text()} |"
            for a in stats.aggregates
        ]
    if stats.left_out:
        lines += ["", "Not in the aggregate (results on fewer tasks): " + ", ".join(f"{_cell(a)} ({k} of {len(stats.tasks)})" for a, k in stats.left_out.items()) + "."]
    if stats.improvements:
        lines += [
            "",
            "## Probability of improvement",
            "",
            "P(X > Y): the probability that a seed of X scores a higher normalized reward than a seed of Y on a task, "
            "averaged over the aggregate's tasks (rliable's definition; 0.5 = no difference); for cost, the probability "
            f"of a lower normalized cost. [{pct} interval, stratified bootstrap over both algorithms' seeds.]",
            "",
            "| X | Y | P(reward X > Y) | P(cost X < Y) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {_cell(p.x)} | {_cell(p.y)} | {p.reward.text()} | {p.cost.text()} |" for p in stats.improvements]
    return lines


def write_stats_csv(stats: Statistics, path: str | os.PathLike[str]) -> Path:
    """The statistics as one tidy table: a row per estimate (``scope`` task, aggregate or
    improvement; ``metric``; estimate and interval bounds)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "task", "algorithm", "versus", "metric", "estimate", "ci_low", "ci_high", "seeds", "episodes_per_seed"])

    def row(scope: str, task: str, algo: str, versus: str, metric: str, iv: Interval, seeds: int | str, episodes: int | str) -> None:
        w.writerow([scope, task, algo, versus, metric, repr(iv.estimate), repr(iv.low), repr(iv.high), seeds, episodes])

    for t in stats.per_task:
        row("task", t.task, t.label, "", "norm_reward_mean", t.reward, t.seeds, t.episodes)
        row("task", t.task, t.label, "", "norm_cost_mean", t.cost, t.seeds, t.episodes)
    tasks = "+".join(stats.tasks)
    for a in stats.aggregates:
        for metric in ("reward_mean", "reward_iqm", "cost_mean", "cost_iqm"):
            row("aggregate", tasks, a.label, "", f"norm_{metric}", getattr(a, metric), a.seeds, "")
    for p in stats.improvements:
        row("improvement", tasks, p.x, p.y, "P(norm_reward X > Y)", p.reward, "", "")
        row("improvement", tasks, p.x, p.y, "P(norm_cost X < Y)", p.cost, "", "")
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


def _interval_panel(ax: Any, names: Sequence[str], intervals: Sequence[Interval], xlabel: str, colors: Sequence[Any], ref: float | None = None,
                    labels: bool = True) -> None:
    """Horizontal bars from low to high with the estimate marked, one row per name (top first);
    ``labels=False`` leaves the names to the panel on the left of the same row."""
    y = np.arange(len(names))[::-1]
    for yi, iv, color in zip(y, intervals, colors):
        ax.plot([iv.low, iv.high], [yi, yi], color=color, linewidth=6, alpha=0.45, solid_capstyle="butt")
        ax.plot([iv.estimate], [yi], marker="|", color="black", markersize=12)
    if ref is not None:
        ax.axvline(ref, color="black", linestyle="--", linewidth=1.0)
    if ref == 0.5:  # a probability
        ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_yticks(y, list(names) if labels else [])
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def _statistics_figure(stats: Statistics, title: str | None = None) -> Any:
    """The figure of :func:`plot_statistics`: one row of panels per set of names (the aggregates'
    reward, their cost, the pairs), the names written once at the left of each row and the figure
    as wide as the longest name needs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not stats.per_task:
        raise FlrpError("no evaluated runs to plot")
    algos = list(dict.fromkeys(t.label for t in stats.per_task))
    cmap = plt.get_cmap("tab10" if len(algos) <= 10 else "tab20")
    color = {a: cmap(i % cmap.N) for i, a in enumerate(algos)}
    panels: list[tuple[list[str], list[Interval], str, list[Any], float | None]] = []
    if stats.aggregates:
        names = [a.label for a in stats.aggregates]
        cols = [color[n] for n in names]
        for metric, xlabel, ref in (("reward_mean", "mean normalized reward", None), ("reward_iqm", "IQM normalized reward", None),
                                    ("cost_mean", "mean normalized cost", 1.0), ("cost_iqm", "IQM normalized cost", 1.0)):
            panels.append((names, [getattr(a, metric) for a in stats.aggregates], xlabel, cols, ref))
    else:
        names = [f"{t.task}: {t.label}" for t in stats.per_task]
        cols = [color[t.label] for t in stats.per_task]
        panels.append((names, [t.reward for t in stats.per_task], "normalized reward", cols, None))
        panels.append((names, [t.cost for t in stats.per_task], "normalized cost", cols, 1.0))
    if stats.improvements:
        pairs = [f"{p.x} vs {p.y}" for p in stats.improvements]
        grey = ["tab:gray"] * len(pairs)
        panels.append((pairs, [p.reward for p in stats.improvements], "P(reward X > Y)", grey, 0.5))
        panels.append((pairs, [p.cost for p in stats.improvements], "P(cost X < Y)", grey, 0.5))
    ncols = 2 if len(panels) <= 2 else 4 if not stats.improvements else 2
    grid = [panels[i:i + ncols] for i in range(0, len(panels), ncols)]  # the panels of a row share their names
    heights = [0.32 * len(row[0][0]) + 1.0 for row in grid]
    label_in = 0.075 * max(len(n) for row in grid for n in row[0][0]) + 0.3  # ~0.075 in per character at 10 pt
    fig, axes = plt.subplots(len(grid), ncols, figsize=(label_in + 3.4 * ncols, sum(heights) + 0.5), dpi=120, squeeze=False,
                             layout="constrained", gridspec_kw={"height_ratios": heights})
    try:
        for r, row in enumerate(grid):
            for c, panel in enumerate(row):
                _interval_panel(axes[r, c], *panel, labels=c == 0)
            for ax in axes[r, len(row):]:
                ax.set_visible(False)
        pct = f"{100 * CONFIDENCE:g} %"
        fig.suptitle(title or f"{pct} bootstrap intervals ({stats.reps} replications)")
    except BaseException:
        plt.close(fig)
        raise
    return fig


def plot_statistics(stats: Statistics, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """The aggregates (mean and IQM of normalized reward and cost, dashed line at the cost limit 1)
    and the probabilities of improvement (dashed line at 0.5) as interval plots; without
    aggregates, the per-task intervals. Written atomically as PNG.

    Raises:
        FlrpError: there is nothing to plot.
    """
    fig = _statistics_figure(stats, title)  # sets the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    try:
        target = Path(path)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return target


# ---------------------------------------------------------------- all together
def write_report(root: str | os.PathLike[str], reps: int = BOOTSTRAP_REPS) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and, if any run is evaluated, ``results.png``,
    ``results_stats.csv`` and ``results_stats.png`` in ``root`` (the last two need rliable).

    Returns:
        ``{"md": ..., "csv": ..., "png": ..., "stats_csv": ..., "stats_png": ...}`` for the files written.

    Raises:
        FlrpError: ``root`` is not a sweep directory.
    """
    base = Path(root).expanduser().resolve()
    records = collect_runs(base)
    groups = summarize(records)
    evaluated = any(g.seeds for g in groups)
    stats, note = None, ""
    if evaluated:
        try:
            stats = interval_statistics(records, groups, reps)
        except ImportError:
            note = 'Confidence intervals, aggregates and probabilities of improvement need rliable: pip install "flrp[sweep]".'
    paths: dict[str, Path] = {}
    paths["md"] = base / "results.md"
    write_text(paths["md"], results_markdown(groups, records, root=os.fspath(root), stats=stats, note=note))  # as given: no machine path in a committed report
    paths["csv"] = write_results_csv(records, base / "results.csv")
    if evaluated:
        n = sum(r.evaluated for r in records)
        paths["png"] = plot_cost_reward(groups, base / "results.png", title=f"{base.name}: {n} runs, mean ± std over seeds")
    if stats is not None:
        paths["stats_csv"] = write_stats_csv(stats, base / "results_stats.csv")
        paths["stats_png"] = plot_statistics(stats, base / "results_stats.png", title=f"{base.name}: {100 * CONFIDENCE:g} % bootstrap intervals")
    return paths
