"""``flrp sweep``: run a sweep's jobs as Ray tasks, then rebuild its report.

Each run (:mod:`flrp.sweep.spec`) is one Ray task (``num_cpus=1``, one torch thread) that calls
exactly what ``flrp train`` calls, :func:`flrp.training.train_and_evaluate` with the run's
:class:`~flrp.training.TrainJob`, so a sweep run and a hand-started run are the same thing (each
run's ``train.log`` starts with the equivalent ``flrp train`` command). The scheduling is Ray's
(the project rule: sweeps that outgrow one process run on an existing engine, never a home-made
scheduler): ``ray.init`` starts a local instance with one slot per core by default, or
``--address auto`` joins a running cluster (then ``--out`` and dataset paths must be on a
filesystem every node sees at the same path).

Resuming is free: a run whose ``eval.json`` exists is skipped, and a killed run continues from
its ``checkpoint.pt`` (runs resume by default). Each run's console output goes to
``<run>/train.log``; the terminal shows progress over runs and one line per failure. After the
runs, the report (:mod:`flrp.sweep.report`) is rebuilt: ``results.md``, ``results.csv``,
``results.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from flrp.errors import FlrpError
from flrp.sweep.spec import (
    LOG_NAME,
    RunSpec,
    SweepSettings,
    expand,
    parse_overrides,
    parse_seeds,
    prepare_jobs,
    run_status,
    split_list,
    update_manifest,
)
from flrp.training import TrainJob, job_argv

__all__ = ["SweepResult", "run_sweep", "sweep_main"]

# Environment the driver forwards to every task (workers may be started by another process).
_FORWARD_ENV = ("FLRP_DATA_DIR",)
_INSTALL_HINT = 'flrp sweep needs Ray: pip install "flrp[sweep]"'


# ---------------------------------------------------------------- the Ray task
def _train_task(job: TrainJob, log_path: str, env: dict[str, str]) -> dict[str, Any]:
    """Body of one Ray task: :func:`flrp.training.train_and_evaluate` in this worker, its output
    appended to ``train.log`` after the equivalent ``flrp train`` command line.

    Returns ``{"code", "seconds", "tail"}`` (code 0 done, 2 a user error printed as one line, 1
    a crash whose traceback goes to the log); never raises for a failed run, so one broken run
    cannot stop the sweep.
    """
    os.environ.update(env)
    from flrp.training import train_and_evaluate

    t0 = time.time()
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename}: flrp {shlex.join(job_argv(job))}", flush=True)
        code = 0
        try:
            train_and_evaluate(job)
        except FlrpError as exc:
            print(f"flrp: error: {exc}")
            code = 2
        except Exception:
            traceback.print_exc()
            code = 1
        fh.flush()
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return {"code": code, "seconds": time.time() - t0, "tail": lines[-1] if lines else ""}


# ---------------------------------------------------------------- driver
@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes:
        out: the sweep directory.
        total: runs in this sweep.
        skipped: runs already done before it started.
        completed: runs finished now.
        failed: ``(run, message)`` for each run that failed now.
        report: the report files written afterwards (empty if none).
    """

    out: Path
    total: int
    skipped: int = 0
    completed: int = 0
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _import_ray(local: bool = True) -> Any:
    if local and "ray" not in sys.modules:
        # A local instance stays on loopback: on Linux Ray otherwise binds its ports to the
        # machine's network address. Ray reads this switch once, at import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise FlrpError(_INSTALL_HINT) from None
    return ray


def _init_ray(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Start or join Ray quietly; ``False`` if the caller had already initialised it."""
    if ray.is_initialized():
        return False
    # No usage reporting (there may be no network), and Ray's own logs stay in its session dir.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            n = num_cpus or os.cpu_count() or 1
            # "local": a fresh instance even if another one runs on this machine; a small object
            # store, since tasks pass only argv and a small dict.
            ray.init(address="local", num_cpus=n, include_dashboard=False, object_store_memory=256 * 2**20, **quiet)
    except Exception as exc:  # ConnectionError, AuthenticationError, ValueError, ...: all setup problems
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"join the Ray cluster at '{address}'" if address else "start a local Ray instance"
        hint = ""
        if address:
            hint = " (start one with `ray start --head`, or drop --address to run locally"
            hint += "; a cluster with token auth needs RAY_AUTH_MODE=token with an explicit address)" if address != "auto" else ")"
        raise FlrpError(f"could not {where}: {first}{hint}") from None
    return True


def run_sweep(
    specs: Sequence[RunSpec],
    out: str | os.PathLike[str],
    settings: SweepSettings | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    gpus_per_run: float = 0.0,
    progress: bool = True,
    report: bool = True,
    jobs: Mapping[RunSpec, TrainJob] | None = None,
) -> SweepResult:
    """Run every spec not yet done as one Ray task, then rebuild the report.

    Args:
        specs: runs from :func:`expand`.
        out: sweep directory (created; runs go to ``out/<spec.rel_dir>``).
        settings: steps, episodes and extra ``flrp train`` flags shared by all runs.
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None`` starts a
            local instance. Ignored if Ray is already initialised (then it is left running).
        num_cpus: slots of a local instance (default: the machine's cores); one run per slot.
        gpus_per_run: GPUs Ray reserves for each run (0: CPU runs; 0.25: four runs share a GPU).
            Ray points each run at its GPU (``CUDA_VISIBLE_DEVICES``) and ``--device auto`` uses it.
        progress: show a progress bar over runs (stderr).
        report: write ``results.{md,csv,png}`` afterwards.
        jobs: the specs' jobs from :func:`prepare_jobs` with the same ``out`` and ``settings``
            (the CLI has built them to check the flags); built here when ``None``.

    Returns:
        Counts and failures. A failed run does not stop the others.

    Raises:
        FlrpError: bad flags for ``flrp train``, settings that differ from the directory's
            recorded sweep, Ray missing or unreachable.
    """
    settings = settings or SweepSettings()
    root = Path(out).expanduser().resolve()
    specs = list(dict.fromkeys(specs))
    if not specs:
        raise FlrpError("the sweep has no runs")
    jobs = prepare_jobs(specs, root, settings) if jobs is None else jobs
    ray = _import_ray(local=address is None)
    todo = [s for s in specs if run_status(root / s.rel_dir, settings.episodes) != "done"]
    result = SweepResult(out=root, total=len(specs), skipped=len(specs) - len(todo))
    started = _init_ray(ray, address, num_cpus) if todo else False
    try:
        # Only now (flags checked, Ray up) does the directory become a sweep directory.
        root.mkdir(parents=True, exist_ok=True)
        update_manifest(root, specs, settings)
        if todo:
            if address is None and any(s.dataset == "toy" for s in todo):
                from flrp.collect.toy import toy_dataset_path

                toy_dataset_path()  # generate once here rather than in every worker at once
            _dispatch(ray, {s: jobs[s] for s in todo}, root, result, progress, gpus_per_run)
    finally:
        if started:
            ray.shutdown()
    if report:
        from flrp.sweep.report import write_report

        result.report = write_report(root)
    return result


def _dispatch(ray: Any, todo: dict[RunSpec, TrainJob], root: Path, result: SweepResult, progress: bool, gpus_per_run: float = 0.0) -> None:
    """Submit one task per run to the initialised Ray, collect results as they finish."""
    from flrp.progress import progress as progress_bar

    bar = progress_bar(result.total, initial=result.skipped, desc="sweep", unit="run", enabled=progress)
    pending: list[Any] = []
    try:
        # Ray retries a task whose worker died (max_retries); the retry resumes from the checkpoint.
        resources: dict[str, float] = {"num_cpus": 1, **({"num_gpus": gpus_per_run} if gpus_per_run > 0 else {})}
        task = ray.remote(**resources)(_train_task)
        env = {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}
        refs = {task.remote(job, str(root / s.rel_dir / LOG_NAME), env): s for s, job in todo.items()}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            spec = refs[ready[0]]
            try:
                out = ray.get(ready[0])
                msg = "" if out["code"] == 0 else f"exit {out['code']}: {out['tail']}"
            except ray.exceptions.RayError as exc:  # worker lost beyond retries, cancelled, ...
                msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if msg:
                result.failed.append((spec, msg))
                bar.write(f"flrp: sweep: run {spec.rel_dir.as_posix()} failed ({msg}); log: {root / spec.rel_dir / LOG_NAME}", file=sys.stderr)
            else:
                result.completed += 1
            bar.update(1)
            bar.set_postfix(failed=len(result.failed), refresh=False)
    except KeyboardInterrupt:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()


# ---------------------------------------------------------------- command line
def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flrp sweep",
        description="Train and evaluate algorithms × datasets × seeds (× --set grids) as Ray tasks, then write results.{md,csv,png}. "
        "Rerunning skips finished runs and resumes killed ones. `flrp sweep report DIR` only rebuilds the report.",
        epilog="Flags after -- go to every `flrp train` run (e.g. -- --hidden 64 --batch-size 256).",
    )
    p.add_argument("--algos", nargs="+", required=True, metavar="ALGO", help="algorithms, space- or comma-separated (e.g. flrp bc-safe cdt)")
    p.add_argument("--datasets", nargs="+", required=True, metavar="DATASET", help="DSRL-format .hdf5 paths, or 'toy'")
    p.add_argument("--seeds", nargs="+", default=["0"], metavar="SEED", help="config seeds: 0 1 2, 0,1,2 or 0-4 (default 0)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per run (default: each algorithm's paper value)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per run (default 20; 0 skips evaluation)")
    p.add_argument("--out", default="runs/sweep", help="sweep directory (default runs/sweep)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V1,V2", help="config override grid, repeatable (e.g. --set refine_steps=1,3,5)")
    p.add_argument("--address", default=None, help="join this Ray cluster ('auto' = the one `ray start` made); default: start a local instance")
    p.add_argument("--num-cpus", type=int, default=None, help="slots of the local Ray instance = runs at once (default: CPU count)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs reserved per run (default 0; e.g. 0.25: four runs share a GPU, each still one CPU)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their flrp train commands; start nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flrp sweep report", description="Rebuild results.{md,csv,png} of a sweep directory from its runs' eval.json.")
    p.add_argument("dir", help="sweep directory")
    p.add_argument(
        "--archive",
        metavar="DEST",
        help="also copy sweep.json and every evaluated run's run/config/eval/timing.json into DEST (merging with what is there; "
        "no models) and write the report over DEST's runs there: a directory to commit, from which `flrp sweep report DEST` "
        "rebuilds the report and into which a lost sweep directory can be restored",
    )
    return p


def _report_lines(paths: dict[str, Path]) -> str:
    return "flrp: sweep report: " + ", ".join(str(p) for p in paths.values())


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``flrp sweep ...`` and ``flrp sweep report DIR``; returns the exit code.

    0: every run succeeded (or the report was written); 1: some run failed; 2: a user error,
    printed as one line; 130: interrupted (rerun the same command to resume).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["report"]:
            from flrp.sweep.report import write_report

            ns = _report_parser().parse_args(args[1:])
            print(_report_lines(write_report(ns.dir)))
            if ns.archive:
                from flrp.sweep.archive import archive_records

                copied = archive_records(ns.dir, ns.archive)
                print(f"flrp: sweep report: {len(copied)} run record(s) archived in {ns.archive}")
                print(_report_lines(write_report(ns.archive)))
            return 0
        extra: list[str] = []
        if "--" in args:
            i = args.index("--")
            args, extra = args[:i], args[i + 1 :]
        ns = _sweep_parser().parse_args(args)
        if ns.steps is not None and ns.steps <= 0:
            raise FlrpError(f"--steps must be positive, got {ns.steps}")
        if ns.episodes < 0:
            raise FlrpError(f"--episodes must be >= 0, got {ns.episodes}")
        if ns.num_cpus is not None and ns.num_cpus < 1:
            raise FlrpError(f"--num-cpus must be >= 1, got {ns.num_cpus}")
        if ns.gpus_per_run < 0 or (ns.gpus_per_run > 1 and not float(ns.gpus_per_run).is_integer()):
            raise FlrpError(f"--gpus-per-run must be a fraction in [0, 1] or a whole number, got {ns.gpus_per_run}")
        specs = expand(split_list(ns.algos), ns.datasets, parse_seeds(ns.seeds), parse_overrides(ns.overrides))
        settings = SweepSettings(steps=ns.steps, episodes=ns.episodes, extra=tuple(extra))
        out = Path(ns.out).expanduser().resolve()
        jobs = prepare_jobs(specs, out, settings)
        if ns.dry_run:
            for s in specs:
                print(f"[{run_status(out / s.rel_dir, settings.episodes)}] flrp {shlex.join(job_argv(jobs[s]))}")
            print(f"flrp: sweep: {len(specs)} runs (dry run, nothing started)")
            return 0
        status = [run_status(out / s.rel_dir, settings.episodes) for s in specs]
        names = {"done": "done", "partial": "to resume", "new": "new"}
        counts = ", ".join(f"{status.count(k)} {v}" for k, v in names.items() if status.count(k))
        where = f"Ray cluster at {ns.address}" if ns.address else f"local Ray, {ns.num_cpus or os.cpu_count() or 1} CPUs"
        print(f"flrp: sweep: {len(specs)} runs ({counts}) -> {out} ({where}; per-run logs in <run>/{LOG_NAME})")
        res = run_sweep(specs, out, settings, address=ns.address, num_cpus=ns.num_cpus, gpus_per_run=ns.gpus_per_run, progress=not ns.quiet, jobs=jobs)
        print(f"flrp: sweep: {res.completed} run(s) finished, {res.skipped} already done, {len(res.failed)} failed")
        if res.report:
            print(_report_lines(res.report))
        return 0 if res.ok else 1
    except FlrpError as exc:
        print(f"flrp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flrp: sweep interrupted (finished runs are kept, killed ones resume from their checkpoints: rerun the same command)", file=sys.stderr)
        return 130
