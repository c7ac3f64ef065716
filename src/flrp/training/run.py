"""One run: train an algorithm on a dataset into a run directory, then evaluate it on its task.

:func:`train_and_evaluate` is what ``flrp train`` does and what every ``flrp sweep`` task does:
the CLI parses flags into a :class:`TrainJob` (:mod:`flrp.training.flags`), the sweep builds one
per run, and both call this function. Every value is checked before any work, then the data,
then the run directory (:mod:`flrp.rundir`): nothing is written before all pass.
:func:`evaluate_run` is ``flrp eval`` and the evaluation at the end of a training run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from flrp.algos.validation import NON_NEGATIVE, POSITIVE, Range, check_number
from flrp.errors import FlrpError
from flrp.rundir import CHECKPOINT_EVERY, CHECKPOINT_MINUTES

if TYPE_CHECKING:
    from flrp.algos.base import AlgoConfig, Algorithm
    from flrp.data.dataset import OfflineDataset
    from flrp.data.tasks import TaskSpec
    from flrp.evaluation.rollout import EvalResult

__all__ = ["EvalOptions", "RunResult", "TrainJob", "default_run_dir", "evaluate_run", "resolve_model", "run_dataset", "task_config", "train_and_evaluate"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    """How a run is evaluated (DSRL protocol; ``flrp train|eval`` evaluation flags).

    Attributes:
        episodes: evaluation episodes, each with its own seed (0 skips a training run's evaluation).
        seed: seed of the first episode (disjoint from training seeds).
        workers: evaluation processes (``None``: one per core for long evaluations, else 1).
        deterministic: deterministic or stochastic actions (``None``: the algorithm's convention).
        cost_limit: kappa of Eq. 40 (``None``: the model's ``config.cost_limit``).
    """

    episodes: int = 20
    seed: int = 10_000
    workers: int | None = None
    deterministic: bool | None = None
    cost_limit: float | None = None

    def check(self, train: bool) -> None:
        """One line for the first bad value; a training run may skip evaluation (0 episodes)."""
        check_number("--episodes", self.episodes, NON_NEGATIVE if train else POSITIVE, where="" if train else "an evaluation needs episodes")
        if self.workers is not None:
            check_number("--workers", self.workers, POSITIVE)
        check_number("--eval-seed", self.seed, Range(0, 2**32 - 1))
        if self.cost_limit is not None:
            check_number("--cost-limit", self.cost_limit, NON_NEGATIVE, integer=False)


@dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs; ``flrp train``'s flags, typed.

    Attributes:
        algo: registry name of the algorithm.
        dataset: a DSRL-format HDF5 path, or ``toy``.
        config: the algorithm's config (built and checked).
        task: task name for evaluation and normalisation (``None``: inferred from the dataset).
        out: run directory (``None``: ``runs/<algo>-<task>-seed<seed>``).
        preset: the preset the config started from (recorded, and spelled in the command line).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch threads to set before training (``None``: leave the process's setting).
        log_every, checkpoint_every: metrics and checkpoint intervals in steps.
        checkpoint_minutes: also checkpoint at the first step this many wall-clock minutes after the last.
        resume: continue from the run directory's checkpoint if present.
        overwrite: start over in a directory that holds a finished model.
        tensorboard: also log to ``<out>/tb``.
        progress: show training progress (bars on a terminal, periodic lines otherwise).
        evaluation: how to evaluate after training.
        default_steps: ``config.steps`` is the default, not chosen (no ``--steps``, no preset value):
            once the task is known, the algorithm's per-suite default (``suite_steps``) replaces it.
    """

    algo: str
    dataset: str
    config: AlgoConfig
    task: str | None = None
    out: str | None = None
    preset: str | None = None
    device: str = "auto"
    threads: int | None = None
    log_every: int = 500
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_minutes: float = CHECKPOINT_MINUTES
    resume: bool = True
    overwrite: bool = False
    tensorboard: bool = False
    progress: bool = True
    evaluation: EvalOptions = field(default_factory=EvalOptions)
    default_steps: bool = False


@dataclass
class RunResult:
    """What :func:`train_and_evaluate` produced.

    Attributes:
        out: the run directory.
        algo: the trained algorithm (in memory).
        history: the logged metrics rows of this invocation.
        task: the evaluation task, if one is known.
        evaluation: the evaluation result (``None``: skipped).
        report: the contents of ``eval.json`` (``None``: skipped).
    """

    out: Path
    algo: Algorithm
    history: list[dict[str, float]]
    task: TaskSpec | None = None
    evaluation: EvalResult | None = None
    report: dict[str, Any] | None = None


TIMING_NAME = "timing.json"
TIMING_EVERY_S = 30.0  # how often a training invocation records its seconds so far


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children (evaluation
    workers): core-seconds, what a run costs whatever else shares the machine."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _read_timing(path: Path) -> dict[str, float]:
    from flrp.files import read_json

    if not path.exists():
        return {}
    try:
        return {k: float(v) for k, v in read_json(path).items()}
    except (FlrpError, ValueError, TypeError, AttributeError):
        return {}  # an unreadable record is replaced, never fatal to the run


def add_timing(out: Path, phase: str, wall: float, cpu: float, finished: bool = True) -> dict[str, float]:
    """Record one invocation's ``phase`` (``train`` or ``eval``) wall and CPU seconds in
    ``<out>/timing.json``: summed over invocations (a resumed run adds up). While the phase runs,
    ``finished=False`` keeps its seconds so far as ``<phase>_unfinished_*``; the next invocation
    folds a killed one's record into the sums (:func:`fold_unfinished_timing`), so a run killed
    and resumed counts the work it lost. Returns the file's contents."""
    from flrp.files import write_json

    path = out / TIMING_NAME
    timing = _read_timing(path)
    for unit, x in (("wall", wall), ("cpu", cpu)):
        if finished:
            timing[f"{phase}_{unit}_s"] = timing.get(f"{phase}_{unit}_s", 0.0) + x
            timing.pop(f"{phase}_unfinished_{unit}_s", None)
        else:
            timing[f"{phase}_unfinished_{unit}_s"] = x
    write_json(path, timing)
    return timing


def fold_unfinished_timing(out: Path) -> None:
    """Add a killed invocation's ``*_unfinished_*`` seconds (:func:`add_timing`) to the sums."""
    from flrp.files import write_json

    path = out / TIMING_NAME
    timing = _read_timing(path)
    unfinished = [k for k in timing if "_unfinished_" in k]
    if not unfinished:
        return
    for k in unfinished:
        total = k.replace("_unfinished_", "_")
        timing[total] = timing.get(total, 0.0) + timing.pop(k)
    write_json(path, timing)


def default_run_dir(algo: str, stem: str, seed: int) -> Path:
    """``runs/<algo>-<dataset stem or task>-seed<seed>``."""
    return Path("runs") / f"{algo}-{stem}-seed{seed}"


def task_config(job: TrainJob, algo_cls: type[Algorithm], task: TaskSpec | None) -> AlgoConfig:
    """``job.config``, with the algorithm's per-suite steps (``Algorithm.suite_steps``) where the
    job left steps at the default and the task's suite has its own (OSRL's MetaDrive: 200k)."""
    if job.default_steps and task is not None and task.suite in algo_cls.suite_steps:
        return dataclasses.replace(job.config, steps=algo_cls.suite_steps[task.suite])
    return job.config


def train_and_evaluate(job: TrainJob, say: Say = print) -> RunResult:
    """Train ``job.algo`` on ``job.dataset`` into the run directory, then evaluate it.

    Args:
        job: the run (see :class:`TrainJob`).
        say: where the run's one-line messages go (default: stdout).

    Returns:
        The run directory, the trained algorithm and, unless evaluation was skipped (0 episodes,
        or no task known for the dataset), the evaluation and its report.

    Raises:
        FlrpError: any bad value, dataset, task or run directory, before anything is written.
    """
    from flrp.algos.base import check_fit_args
    from flrp.algos.registry import get_algorithm
    from flrp.devices import machine_info, resolve_device
    from flrp.envs.dims import check_task_fits
    from flrp.files import ensure_dir
    from flrp.rundir import run_lock
    from flrp.training.datasets import resolve_dataset
    from flrp.training.flags import set_threads

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    algo_cls = get_algorithm(job.algo)
    if job.threads is not None:
        check_number("--threads", job.threads, POSITIVE)
    if not isinstance(job.config, algo_cls.Config):
        raise FlrpError(f"{algo_cls.name}: expected a {algo_cls.Config.__name__}, got {type(job.config).__name__}")
    job.config.validate()
    device = resolve_device(job.device)
    check_fit_args(job.config.steps, job.log_every, job.checkpoint_every, job.checkpoint_minutes)
    job.evaluation.check(train=True)
    ds, task = resolve_dataset(job.dataset, job.task)
    if task is not None and (job.evaluation.episodes > 0 or job.task is not None):
        check_task_fits(ds.obs_dim, ds.act_dim, task, f"dataset {ds.source}")
    config = task_config(job, algo_cls, task)
    stem = task.name if task else Path(job.dataset).stem
    out = ensure_dir(Path(job.out) if job.out else default_run_dir(algo_cls.name, stem, config.seed), "--out")
    if job.threads is not None:
        set_threads(job.threads)
    with run_lock(out):
        say(f"flrp: training {algo_cls.name} on {ds.source} ({len(ds)} transitions, {ds.num_episodes} episodes) for {config.steps} steps -> {out}")
        fold_unfinished_timing(out)
        algo = algo_cls(config, device=device)

        last_record = time.perf_counter()

        def record_progress(_algo: Algorithm, _step: int, _row: dict[str, float]) -> None:
            nonlocal last_record
            now = time.perf_counter()  # at most every TIMING_EVERY_S: what a kill would leave uncounted
            if now - last_record >= TIMING_EVERY_S:
                last_record = now
                add_timing(out, "train", now - wall0, cpu_seconds() - cpu0, finished=False)

        run_info = {"algo": algo_cls.name, "dataset": recorded_dataset(job.dataset), "dataset_source": ds.source, "task": task.name if task else None, "config": dataclasses.asdict(config),
                    "machine": machine_info(device)}
        history = algo.fit(ds, run_dir=out, log_every=job.log_every, checkpoint_every=job.checkpoint_every, checkpoint_minutes=job.checkpoint_minutes, resume=job.resume, progress=job.progress,
                           tensorboard=job.tensorboard, overwrite=job.overwrite, run_info=run_info, callback=record_progress)
        wall1, cpu1 = time.perf_counter(), cpu_seconds()
        add_timing(out, "train", wall1 - wall0, cpu1 - cpu0)
        result = RunResult(out=out, algo=algo, history=history, task=task)
        if job.evaluation.episodes == 0:
            return result
        if task is None:
            say("flrp: no task known for this dataset (pass --task NAME to evaluate on its simulator); skipping evaluation")
            return result
        options = dataclasses.replace(job.evaluation, cost_limit=config.cost_limit)
        result.evaluation, result.report = evaluate_run(out / "model.pt", task, out, options, algo=algo, dataset=ds, say=say)
        add_timing(out, "eval", time.perf_counter() - wall1, cpu_seconds() - cpu1)
        return result


def resolve_model(target: str | Path, task: str | None = None) -> tuple[Path, TaskSpec, Path]:
    """``(model file, task, run directory)`` of ``flrp eval|diagnose TARGET [--task NAME]``:
    ``TARGET`` is a run directory or a model file; the task defaults to the one in ``run.json``."""
    from flrp.data.tasks import get_task
    from flrp.files import read_json

    path = Path(target)
    model = path / "model.pt" if path.is_dir() else path
    out = path if path.is_dir() else path.parent
    if not model.is_file():
        raise FlrpError(f"{model}: no such model file")
    task_name = task
    run_json = out / "run.json"
    if task_name is None and run_json.exists():
        info = read_json(run_json)
        task_name = info.get("task") if isinstance(info, dict) else None
    if task_name is None:
        raise FlrpError(f"{model}: no task recorded for this model; pass --task NAME")
    return model, get_task(str(task_name)), out


def recorded_dataset(dataset: str) -> str:
    """The dataset as ``run.json`` records it: a file as its absolute path (so ``flrp diagnose``
    finds it from any working directory), the toy task by its name."""
    from flrp.training.datasets import TOY_NAMES

    return dataset if dataset.lower() in TOY_NAMES else str(Path(dataset).expanduser().resolve())


def run_dataset(out: Path, task: TaskSpec, dataset: str | None = None) -> tuple[OfflineDataset | None, str]:
    """The dataset a run was trained on, for ``flrp diagnose``'s data section: ``dataset`` when
    given ('none' = skip), else the one recorded in ``run.json``. Returns ``(dataset or None, note)``;
    a recorded file that no longer exists is skipped with a note, a given one that does not is an error."""
    from flrp.files import read_json
    from flrp.training.datasets import TOY_NAMES, resolve_dataset

    if dataset is not None and dataset.lower() == "none":
        return None, "data section skipped (--dataset none)"
    path = dataset
    if path is None:
        info = read_json(out / "run.json") if (out / "run.json").exists() else None
        path = info.get("dataset") if isinstance(info, dict) else None
        if path is None:
            return None, "data section skipped: no dataset recorded in run.json (pass --dataset FILE)"
        if str(path).lower() not in TOY_NAMES and not Path(str(path)).expanduser().is_file():
            return None, f"data section skipped: the run's dataset {path} is not there (pass --dataset FILE)"
    ds, _ = resolve_dataset(str(path), task.name)
    return ds, f"data section from {path}"


def evaluate_run(
    model: Path,
    task: TaskSpec,
    out: Path,
    options: EvalOptions,
    algo: Algorithm | None = None,
    dataset: OfflineDataset | None = None,
    say: Say = print,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate ``model`` on ``task`` and write ``eval.json``/``eval.md`` to ``out`` (the caller
    holds its lock). On the toy task an algorithm with a feasibility critic is also compared
    with the exact kernel (IoU, ``feasibility.png``). Returns the result and ``eval.json``'s contents."""
    from flrp.evaluation.rollout import evaluate_model_file
    from flrp.files import write_json, write_text

    options.check(train=False)
    res = evaluate_model_file(model, task, episodes=options.episodes, seed=options.seed, cost_limit=options.cost_limit, deterministic=options.deterministic, workers=options.workers)
    report = res.to_dict()
    md = res.markdown()
    if task.suite == "toy":
        iou_md = _toy_feasibility(model, out, algo, dataset, report, say)
        md += iou_md
    write_json(out / "eval.json", report)
    write_text(out / "eval.md", md)
    say("flrp: " + res.line())
    say(f"flrp: results in {out / 'eval.json'} and {out / 'eval.md'}")
    return res, report


def _toy_feasibility(model: Path, out: Path, algo: Algorithm | None, dataset: OfflineDataset | None, report: dict[str, Any], say: Say) -> str:
    """The learned V_h against the toy task's exact kernel (algorithms with a feasibility critic)."""
    from flrp.algos.base import Algorithm
    from flrp.envs.toy_kernel import feasibility_iou, plot_feasibility

    algo = algo or Algorithm.load(model, device="cpu")
    value = getattr(algo, "feasibility_value", None)
    if value is None:
        return ""
    if dataset is None:
        from flrp.training.datasets import resolve_dataset

        dataset, _ = resolve_dataset("toy")
    iou = feasibility_iou(value, dataset)
    plot_feasibility(value, out / "feasibility.png", dataset=dataset, title=f"{algo.name}: learned V_h vs exact kernel")
    report["feasibility"] = iou
    say(f"flrp: HJ feasible set vs exact kernel: IoU {iou['iou_support']:.3f} (data support), {iou['iou_box']:.3f} (whole grid) -> {out / 'feasibility.png'}")
    return f"\nHJ feasibility vs exact kernel: IoU {iou['iou_support']:.3f} on data support, {iou['iou_box']:.3f} on the whole box (feasibility.png)\n"
