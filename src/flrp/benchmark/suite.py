"""``flrp sweep``: algorithms × datasets × seeds (× config overrides) as Ray tasks.

A sweep is expanded into :class:`RunSpec` s, each with a deterministic run directory::

    <out>/<algo>/<dataset-stem>/seed<k>[/<override-tag>]

(the tag, e.g. ``refine_steps=3``, appears only when ``--set`` overrides apply to the algorithm).
Each run is one Ray task (``num_cpus=1``, one torch thread) that calls exactly what
``flrp train`` calls, :func:`flrp.cli.main` with the run's argv, so a sweep run and a hand-started
run are the same thing. The scheduling is Ray's (the project rule: sweeps that outgrow one
process run on an existing engine, never a home-made scheduler): ``ray.init`` starts a local
instance with one slot per core by default, or ``--address auto`` joins a running cluster
(then ``--out`` and dataset paths must be on a filesystem every node sees at the same path).

Resuming is free: a run whose ``eval.json`` exists is skipped, and a killed run continues from
its ``checkpoint.pt`` (``flrp train`` resumes by default). ``<out>/sweep.json`` records the
settings (``--steps``, ``--episodes``, the ``flrp train`` flags after ``--``) and every run
requested so far; rerunning in the same directory with other settings is refused, so one report
never mixes budgets. Each run's console output goes to ``<run>/train.log``; the terminal shows
one progress bar over runs and one line per failure. After the runs, the report
(:mod:`flrp.benchmark.report`) is rebuilt: ``results.md``, ``results.csv``, ``results.png``.

Config overrides (``--set refine_steps=1,3,5``, repeatable) form a grid, as in Hydra's
multirun. A key applies to the algorithms whose config has it; the others run once, without it
(so an FLRP ablation and its baselines share one sweep). A key no selected algorithm has is an
error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import itertools
import json
import logging
import os
import re
import shlex
import sys
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from flrp.errors import FlrpError
from flrp.io import write_json

__all__ = [
    "RunSpec",
    "SweepSettings",
    "SweepResult",
    "expand",
    "parse_overrides",
    "parse_seeds",
    "run_status",
    "run_sweep",
    "sweep_main",
    "MANIFEST_NAME",
    "LOG_NAME",
]

MANIFEST_NAME = "sweep.json"
LOG_NAME = "train.log"
TOY_NAMES = ("toy", "toyhazard", "toyhazard-v0")  # the spellings flrp.datasets accepts
# Flags the sweep itself sets for every run; passing them after ``--`` would break the layout.
_OWNED = {"algo": "--algos", "dataset": "--datasets", "out": "--out", "cfg_seed": "--seeds", "steps": "--steps", "episodes": "--episodes", "resume": "(always on)"}
# Environment the driver forwards to every task (workers may be started by another process).
_FORWARD_ENV = ("FLRP_DATA_DIR",)
_INSTALL_HINT = 'flrp sweep needs Ray: pip install "flrp[sweep]"'


# ---------------------------------------------------------------- specs
@dataclass(frozen=True)
class SweepSettings:
    """What every run of a sweep shares (recorded in ``sweep.json``; a rerun must match it).

    Attributes:
        steps: gradient steps per run (``None``: each algorithm's default).
        episodes: evaluation episodes per run (0: no evaluation).
        extra: further ``flrp train`` flags, passed through verbatim after the sweep's own.
    """

    steps: int | None = None
    episodes: int = 20
    extra: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "episodes": self.episodes, "extra": list(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSettings":
        return cls(steps=d.get("steps"), episodes=int(d.get("episodes", 20)), extra=tuple(d.get("extra", ())))

    def describe(self) -> str:
        parts = [f"--steps {self.steps if self.steps is not None else '(default)'}", f"--episodes {self.episodes}"]
        if self.extra:
            parts.append("-- " + shlex.join(self.extra))
        return " ".join(parts)


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep.

    Attributes:
        algo: registry name of the algorithm (``bc-all``, ``flrp``, ...).
        dataset: ``toy`` or an absolute path to a DSRL-format HDF5 file.
        stem: the dataset's directory name in the layout (``toy`` or the file's stem).
        seed: the run's config seed (``--seed``).
        overrides: ``(key, value)`` config overrides in ``--set`` order, values as typed.
    """

    algo: str
    dataset: str
    stem: str
    seed: int
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def tag(self) -> str:
        """Directory name of the overrides (``refine_steps=3,beta=0.5``), ``""`` without any."""
        return ",".join(f"{k}={_path_safe(v)}" for k, v in self.overrides)

    @property
    def label(self) -> str:
        """The algorithm as the report names it: ``flrp`` or ``flrp [refine_steps=3]``."""
        return f"{self.algo} [{self.tag}]" if self.tag else self.algo

    @property
    def rel_dir(self) -> Path:
        """``<algo>/<dataset-stem>/seed<k>[/<override-tag>]``, relative to the sweep directory."""
        rel = Path(self.algo) / self.stem / f"seed{self.seed}"
        return rel / self.tag if self.tag else rel

    def train_argv(self, out: Path, settings: SweepSettings) -> list[str]:
        """The ``flrp train`` argv of this run (one thread, in-process evaluation, no bar)."""
        argv = ["train", "--algo", self.algo, "--dataset", self.dataset, "--out", str(out / self.rel_dir), "--seed", str(self.seed)]
        if settings.steps is not None:
            argv += ["--steps", str(settings.steps)]
        argv += ["--episodes", str(settings.episodes), "--threads", "1", "--workers", "1", "--quiet"]
        for key, value in self.overrides:
            argv += _override_flags(self.algo, key, value)
        return argv + list(settings.extra)  # last: argparse lets later flags win

    def to_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "dataset": self.dataset, "stem": self.stem, "seed": self.seed, "overrides": [list(kv) for kv in self.overrides], "dir": self.rel_dir.as_posix()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(algo=d["algo"], dataset=d["dataset"], stem=d["stem"], seed=int(d["seed"]), overrides=tuple((str(k), str(v)) for k, v in d.get("overrides", ())))


def _path_safe(value: str) -> str:
    return re.sub(r"[/\\\s]+", "_", value)


@functools.lru_cache(maxsize=None)
def _config_types(algo: str) -> dict[str, Any]:
    from flrp.algos.base import get_algorithm

    cfg = get_algorithm(algo).Config
    hints = typing.get_type_hints(cfg)
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg)}


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _override_flags(algo: str, key: str, value: str) -> list[str]:
    if key in ("steps", "preset"):
        return ["--" + key, value]
    flag = "--" + key.replace("_", "-")
    if _config_types(algo).get(key) is bool:
        v = value.lower()
        if v in _TRUE:
            return [flag]
        if v in _FALSE:
            return ["--no-" + key.replace("_", "-")]
        raise FlrpError(f"--set {key}: '{value}' is not a boolean (true/false)")
    return [flag, value]


# ---------------------------------------------------------------- parsing
def _split(tokens: Sequence[str]) -> list[str]:
    return [t.strip() for tok in tokens for t in tok.split(",") if t.strip()]


def parse_seeds(tokens: Sequence[str]) -> list[int]:
    """``["0,1", "4-6"]`` -> ``[0, 1, 4, 5, 6]`` (commas or spaces; ``a-b`` is inclusive).

    Raises:
        FlrpError: on anything but non-negative integers and ranges, or a repeated seed.
    """
    seeds: list[int] = []
    for tok in _split(tokens):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        if not m:
            raise FlrpError(f"--seeds: '{tok}' is not a seed (use e.g. 0,1,2 or 0-4)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise FlrpError(f"--seeds: empty range '{tok}'")
        seeds += range(lo, hi + 1)
    if len(set(seeds)) != len(seeds):
        raise FlrpError(f"--seeds: repeated seed in {','.join(map(str, seeds))}")
    if not seeds:
        raise FlrpError("--seeds: no seed given")
    return seeds


def parse_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """``["refine_steps=1,3,5", "beta=0.5"]`` -> ``{"refine_steps": ["1", "3", "5"], "beta": ["0.5"]}``.

    Keys may be spelled with dashes (``refine-steps``). Values stay strings: ``flrp train``'s own
    parser types and checks them.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise FlrpError(f"--set '{item}': expected KEY=VALUE[,VALUE...], e.g. refine_steps=1,3,5")
        if key == "seed":
            raise FlrpError("--set seed: use --seeds")
        if key in out:
            raise FlrpError(f"--set {key}: given twice (list all values in one --set {key}=a,b)")
        if len(set(vals)) != len(vals):
            raise FlrpError(f"--set {key}: repeated value in {','.join(vals)}")
        out[key] = vals
    return out


def _dataset_entry(arg: str) -> tuple[str, str]:
    """``(dataset argument for flrp train, directory stem)``; paths made absolute."""
    if arg.lower() in TOY_NAMES:
        return "toy", "toy"
    path = Path(arg).expanduser().resolve()
    if not path.is_file():
        raise FlrpError(f"{arg}: no such file")
    return str(path), path.stem


def expand(
    algos: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    overrides: dict[str, list[str]] | None = None,
) -> list[RunSpec]:
    """The sweep's runs: algos × datasets × seeds × (the override grid each algorithm accepts).

    Args:
        algos: algorithm names (any spelling :func:`flrp.algos.base.get_algorithm` accepts).
        datasets: ``toy`` or paths to DSRL-format HDF5 files.
        seeds: config seeds.
        overrides: ``{config key: [values]}``; a key applies only to algorithms whose config has it.

    Returns:
        The runs in that nesting order (algorithm outermost), without duplicates.

    Raises:
        FlrpError: unknown algorithm, missing dataset file, two datasets with one stem, or an
            override key that no selected algorithm's config has.
    """
    from flrp.algos.base import get_algorithm

    overrides = overrides or {}
    names = list(dict.fromkeys(get_algorithm(a).name for a in algos))
    if not names:
        raise FlrpError("--algos: no algorithm given")
    entries = list(dict.fromkeys(_dataset_entry(d) for d in datasets))
    if not entries:
        raise FlrpError("--datasets: no dataset given")
    stems: dict[str, str] = {}
    for ds, stem in entries:
        if stems.setdefault(stem, ds) != ds:
            raise FlrpError(f"--datasets: {stems[stem]} and {ds} share the name '{stem}' (rename one: run directories are <algo>/<dataset-stem>/...)")
    # --set preset=NAME selects a named preset (flrp train --preset) of the algorithms that have one.
    fields_of = {a: set(_config_types(a)) | {"steps"} | ({"preset"} if get_algorithm(a).presets else set()) for a in names}
    for name in overrides.get("preset", []):
        for a in names:
            if "preset" in fields_of[a] and name not in get_algorithm(a).presets:
                raise FlrpError(f"--set preset: '{name}' is not a preset of {a} (presets: {', '.join(sorted(get_algorithm(a).presets))})")
    for key in overrides:
        if not any(key in fields_of[a] for a in names):
            raise FlrpError(f"--set {key}: not a config field of {', '.join(names)} (see flrp train --algo {names[0]} --help)")
    specs: list[RunSpec] = []
    for algo in names:
        keys = [k for k in overrides if k in fields_of[algo]]
        grid = list(itertools.product(*(overrides[k] for k in keys)))
        for (ds, stem), seed in itertools.product(entries, seeds):
            for values in grid:
                specs.append(RunSpec(algo, ds, stem, int(seed), tuple(zip(keys, values))))
    return list(dict.fromkeys(specs))


def _validate_train_argv(specs: Sequence[RunSpec], out: Path, settings: SweepSettings) -> None:
    """Parse each distinct run argv with ``flrp train``'s own parser before anything starts, so a
    typo in ``--set`` or after ``--`` fails in a second, not in every task."""
    from flrp.cli import build_parser

    parsers: dict[str, argparse.ArgumentParser] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for spec in specs:
        if (spec.algo, spec.overrides) in seen:
            continue
        seen.add((spec.algo, spec.overrides))
        parser = parsers.setdefault(spec.algo, build_parser(spec.algo))
        argv = spec.train_argv(out, settings)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(argv)
        except SystemExit:
            msg = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "invalid flags"
            msg = msg.split("error: ", 1)[-1]
            where = f" ({spec.label})" if spec.overrides else ""
            raise FlrpError(f"flrp train --algo {spec.algo}{where} rejects the run's flags: {msg}") from None
        want = {"algo": spec.algo, "dataset": spec.dataset, "out": str(out / spec.rel_dir), "cfg_seed": spec.seed, "resume": True, "episodes": settings.episodes}
        for dest, value in want.items():
            if getattr(ns, dest, value) != value:
                raise FlrpError(f"flags after --: {_OWNED[dest]} sets '{dest}' for every run; do not pass it to flrp train")
        if settings.steps is not None and "steps" not in dict(spec.overrides) and ns.steps != settings.steps:
            raise FlrpError("flags after --: use the sweep's --steps (or --set steps=...), not flrp train's")


# ---------------------------------------------------------------- manifest and status
def _load_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FlrpError(f"{path}: unreadable sweep manifest ({exc})") from None
    if not isinstance(data, dict):
        raise FlrpError(f"{path}: not a sweep manifest")
    return data


def _check_manifest(out: Path, settings: SweepSettings) -> dict[str, Any] | None:
    """The directory's manifest, if any; refuse settings that differ from the recorded ones."""
    old = _load_manifest(out)
    if old is not None:
        recorded = SweepSettings.from_dict(old.get("settings", {}))
        if recorded != settings:
            raise FlrpError(
                f"{out / MANIFEST_NAME}: this directory holds a sweep run with {recorded.describe()}, "
                f"not {settings.describe()}; rerun with those settings or choose another --out"
            )
    return old


def _update_manifest(out: Path, specs: Sequence[RunSpec], settings: SweepSettings) -> None:
    """Record settings and runs (merged with earlier invocations in the same directory)."""
    import flrp

    old = _check_manifest(out, settings)
    runs: dict[str, dict[str, Any]] = {r["dir"]: r for r in old.get("runs", [])} if old else {}
    for spec in specs:
        runs.setdefault(spec.rel_dir.as_posix(), spec.to_dict())
    write_json(out / MANIFEST_NAME, {"flrp_version": flrp.__version__, "settings": settings.to_dict(), "runs": list(runs.values())})


def run_status(run_dir: str | os.PathLike[str], episodes: int = 20) -> str:
    """``"done"`` (``eval.json`` exists, or ``model.pt`` when ``episodes == 0``), ``"partial"``
    (a checkpoint to resume from) or ``"new"``."""
    d = Path(run_dir)
    if (d / "eval.json").exists() or (episodes == 0 and (d / "model.pt").exists()):
        return "done"
    return "partial" if (d / "checkpoint.pt").exists() else "new"


# ---------------------------------------------------------------- the Ray task
def _train_task(argv: list[str], log_path: str, env: dict[str, str]) -> dict[str, Any]:
    """Body of one Ray task: ``flrp train`` in this worker, its output appended to ``train.log``.

    Returns ``{"code", "seconds", "tail"}``; never raises for a failed run (the traceback goes to
    the log), so one broken run cannot stop the sweep.
    """
    import torch

    os.environ.update(env)
    torch.set_num_threads(1)
    from flrp.cli import main

    t0 = time.time()
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename}: flrp {shlex.join(argv)}", flush=True)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            traceback.print_exc()
            code = 1
        fh.flush()
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return {"code": int(code or 0), "seconds": time.time() - t0, "tail": lines[-1] if lines else ""}


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
    progress: bool = True,
    report: bool = True,
) -> SweepResult:
    """Run every spec not yet done as one Ray task, then rebuild the report.

    Args:
        specs: runs from :func:`expand`.
        out: sweep directory (created; runs go to ``out/<spec.rel_dir>``).
        settings: steps, episodes and extra ``flrp train`` flags shared by all runs.
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None`` starts a
            local instance. Ignored if Ray is already initialised (then it is left running).
        num_cpus: slots of a local instance (default: the machine's cores); one run per slot.
        progress: show a progress bar over runs (stderr).
        report: write ``results.{md,csv,png}`` afterwards.

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
    _validate_train_argv(specs, root, settings)
    _check_manifest(root, settings)
    ray = _import_ray(local=address is None)
    todo = [s for s in specs if run_status(root / s.rel_dir, settings.episodes) != "done"]
    result = SweepResult(out=root, total=len(specs), skipped=len(specs) - len(todo))
    started = _init_ray(ray, address, num_cpus) if todo else False
    try:
        # Only now (flags checked, Ray up) does the directory become a sweep directory.
        root.mkdir(parents=True, exist_ok=True)
        _update_manifest(root, specs, settings)
        if todo:
            if address is None and any(s.dataset == "toy" for s in todo):
                from flrp.datasets import toy_dataset_path

                toy_dataset_path()  # generate once here rather than in every worker at once
            _dispatch(ray, todo, root, settings, result, progress)
    finally:
        if started:
            ray.shutdown()
    if report:
        from flrp.benchmark.report import write_report

        result.report = write_report(root)
    return result


def _dispatch(ray: Any, todo: list[RunSpec], root: Path, settings: SweepSettings, result: SweepResult, progress: bool) -> None:
    """Submit one task per run to the initialised Ray, collect results as they finish."""
    from tqdm.auto import tqdm

    bar = tqdm(total=result.total, initial=result.skipped, desc="sweep", unit="run", disable=not progress, dynamic_ncols=True)
    pending: list[Any] = []
    try:
        # Ray retries a task whose worker died (max_retries); the retry resumes from the checkpoint.
        task = ray.remote(num_cpus=1)(_train_task)
        env = {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}
        refs = {task.remote(s.train_argv(root, settings), str(root / s.rel_dir / LOG_NAME), env): s for s in todo}
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
    p.add_argument("--dry-run", action="store_true", help="print the runs and their flrp train commands; start nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flrp sweep report", description="Rebuild results.{md,csv,png} of a sweep directory from its runs' eval.json.")
    p.add_argument("dir", help="sweep directory")
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
            from flrp.benchmark.report import write_report

            ns = _report_parser().parse_args(args[1:])
            print(_report_lines(write_report(ns.dir)))
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
        specs = expand(_split(ns.algos), ns.datasets, parse_seeds(ns.seeds), parse_overrides(ns.overrides))
        settings = SweepSettings(steps=ns.steps, episodes=ns.episodes, extra=tuple(extra))
        out = Path(ns.out).expanduser().resolve()
        _validate_train_argv(specs, out, settings)
        _check_manifest(out, settings)
        if ns.dry_run:
            for s in specs:
                print(f"[{run_status(out / s.rel_dir, settings.episodes)}] flrp {shlex.join(s.train_argv(out, settings))}")
            print(f"flrp: sweep: {len(specs)} runs (dry run, nothing started)")
            return 0
        status = [run_status(out / s.rel_dir, settings.episodes) for s in specs]
        names = {"done": "done", "partial": "to resume", "new": "new"}
        counts = ", ".join(f"{status.count(k)} {v}" for k, v in names.items() if status.count(k))
        where = f"Ray cluster at {ns.address}" if ns.address else f"local Ray, {ns.num_cpus or os.cpu_count() or 1} CPUs"
        print(f"flrp: sweep: {len(specs)} runs ({counts}) -> {out} ({where}; per-run logs in <run>/{LOG_NAME})")
        res = run_sweep(specs, out, settings, address=ns.address, num_cpus=ns.num_cpus, progress=not ns.quiet)
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
