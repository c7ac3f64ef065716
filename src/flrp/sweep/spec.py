"""What a sweep is: algorithms × datasets × seeds (× ``--set`` grids) as :class:`RunSpec` s, each
turned into one :class:`~flrp.training.TrainJob`, and the ``sweep.json`` manifest.

Each run has a deterministic run directory::

    <out>/<algo>/<dataset-stem>/seed<k>[/<override-tag>]

(the tag, e.g. ``refine_steps=3``, appears only when ``--set`` overrides apply to the algorithm).
``<out>/sweep.json`` records the settings (``--steps``, ``--episodes``, the ``flrp train`` flags
after ``--``) and every run requested so far; rerunning in the same directory with other settings
is refused, so one report never mixes budgets.

Config overrides (``--set refine_steps=1,3,5``, repeatable) form a grid, as in Hydra's
multirun. A key applies to the algorithms whose config has it; the others run once, without it
(so an FLRP ablation and its baselines share one sweep). A key no selected algorithm has is an
error, and so is a key given both by ``--set`` and as a flag after ``--``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from flrp.algos.registry import get_algorithm
from flrp.algos.validation import flag_of
from flrp.errors import FlrpError
from flrp.files import read_json, write_json
from flrp.training import TrainJob, job_argv, job_from_namespace, parse_train_argv
from flrp.training.datasets import TOY_NAMES
from flrp.training.flags import PRESET, STEPS, config_fields, config_overrides, config_value

__all__ = [
    "LOG_NAME",
    "MANIFEST_LOCK_NAME",
    "MANIFEST_NAME",
    "RunSpec",
    "SweepSettings",
    "build_job",
    "build_jobs",
    "check_manifest",
    "check_finished_configs",
    "expand",
    "parse_overrides",
    "parse_seeds",
    "prepare_jobs",
    "run_status",
    "split_list",
    "update_manifest",
]

MANIFEST_NAME = "sweep.json"
LOG_NAME = "train.log"
# Flags the sweep itself sets for every run; passing them after ``--`` would break the layout.
_OWNED = {"algo": "--algos", "dataset": "--datasets", "out": "--out", "cfg_seed": "--seeds", "steps": "--steps", "episodes": "--episodes", "resume": "(always on)"}


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
        overrides: ``(key, value)`` config overrides in ``--set`` order, values as the user typed them.
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

    def job(self, out: Path, settings: SweepSettings) -> TrainJob:
        """This run as a :class:`~flrp.training.TrainJob` (one thread, in-process evaluation, no
        progress output); see :func:`build_job`."""
        return build_job(self, out, settings)

    def train_argv(self, out: Path, settings: SweepSettings) -> list[str]:
        """The ``flrp train`` command line that runs the same job by hand (logs, ``--dry-run``)."""
        return job_argv(self.job(out, settings))

    def to_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "dataset": self.dataset, "stem": self.stem, "seed": self.seed, "overrides": [list(kv) for kv in self.overrides], "dir": self.rel_dir.as_posix()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(algo=d["algo"], dataset=d["dataset"], stem=d["stem"], seed=int(d["seed"]), overrides=tuple((str(k), str(v)) for k, v in d.get("overrides", ())))


def _path_safe(value: str) -> str:
    return re.sub(r"[/\\\s]+", "_", value)


# ---------------------------------------------------------------- parsing
def split_list(tokens: Sequence[str]) -> list[str]:
    return [t.strip() for tok in tokens for t in tok.split(",") if t.strip()]


def parse_seeds(tokens: Sequence[str]) -> list[int]:
    """``["0,1", "4-6"]`` -> ``[0, 1, 4, 5, 6]`` (commas or spaces; ``a-b`` is inclusive).

    Raises:
        FlrpError: on anything but non-negative integers and ranges, or a repeated seed.
    """
    seeds: list[int] = []
    for tok in split_list(tokens):
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

    Keys may be spelled with dashes (``refine-steps``). Values stay strings here; each run's job
    types them as ``flrp train``'s flags would (:func:`build_job`).
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
    fields_of = {a: set(config_fields(get_algorithm(a).Config)) | {"steps"} | ({"preset"} if get_algorithm(a).presets else set()) for a in names}
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


# ---------------------------------------------------------------- jobs
def _sweep_argv(spec: RunSpec, out: Path, settings: SweepSettings) -> list[str]:
    """The ``flrp train`` flags the sweep sets for ``spec`` (one thread, in-process evaluation, quiet)."""
    argv = ["--algo", spec.algo, "--dataset", spec.dataset, "--out", str(out / spec.rel_dir), "--seed", str(spec.seed)]
    if settings.steps is not None:
        argv += ["--steps", str(settings.steps)]
    return argv + ["--episodes", str(settings.episodes), "--threads", "1", "--workers", "1", "--quiet"]


def build_job(spec: RunSpec, out: Path, settings: SweepSettings) -> TrainJob:
    """The typed job of one run: the sweep's own flags, then the ``flrp train`` flags after ``--``
    (parsed by ``flrp train``'s parser), then the run's ``--set`` values (typed as those flags).

    Raises:
        FlrpError: a flag ``flrp train`` rejects, a value out of range, a flag after ``--`` that
            the sweep owns, or a key given both by ``--set`` and after ``--``.
    """
    algo_cls = get_algorithm(spec.algo)
    where = f" ({spec.tag})" if spec.overrides else ""
    try:
        given = parse_train_argv(algo_cls, ["--dataset", spec.dataset, *settings.extra])  # what the flags after -- set
        ns = parse_train_argv(algo_cls, _sweep_argv(spec, out, settings) + list(settings.extra))
    except FlrpError as exc:
        raise FlrpError(f"flrp train --algo {spec.algo}{where} rejects the run's flags: {exc}") from None
    want = {"algo": spec.algo, "dataset": spec.dataset, "out": str(out / spec.rel_dir), "cfg_seed": spec.seed, "resume": True, "episodes": settings.episodes}
    for dest, value in want.items():
        if getattr(ns, dest, value) != value:
            raise FlrpError(f"flags after --: {_OWNED[dest]} sets '{dest}' for every run; do not pass it to flrp train")
    overrides = dict(spec.overrides)
    if settings.steps is not None and STEPS not in overrides and ns.steps != settings.steps:
        raise FlrpError("flags after --: use the sweep's --steps (or --set steps=...), not flrp train's")
    in_extra = set(config_overrides(given)) | ({PRESET} if getattr(given, PRESET, None) is not None else set()) | ({STEPS} if given.steps is not None else set())
    for key in overrides:
        if key in in_extra:
            raise FlrpError(f"--set {key} and {flag_of(key)} after -- both set '{key}'; give it once")
    try:
        typed = {k: v if k == PRESET else config_value(algo_cls.Config, k, v) for k, v in overrides.items()}
        return job_from_namespace(algo_cls, ns, typed)
    except FlrpError as exc:
        raise FlrpError(f"flrp train --algo {spec.algo}{where} rejects the run's flags: {exc}") from None


def build_jobs(specs: Sequence[RunSpec], out: Path, settings: SweepSettings) -> dict[RunSpec, TrainJob]:
    """Every run's job, built (and so checked) before anything starts: a typo in ``--set`` or
    after ``--`` fails in a second, not in every task."""
    return {spec: build_job(spec, out, settings) for spec in specs}


def prepare_jobs(specs: Sequence[RunSpec], out: Path, settings: SweepSettings) -> dict[RunSpec, TrainJob]:
    """Everything a sweep checks before it starts anything, in one place for ``flrp sweep`` and
    :func:`~flrp.sweep.runner.run_sweep`: each run's job (bad flags fail here), the directory's
    recorded settings (``check_manifest``) and its finished runs' configs (``check_finished_configs``).

    Raises:
        FlrpError: naming the flag, the manifest or the run at fault.
    """
    jobs = build_jobs(specs, out, settings)
    check_manifest(out, settings)
    check_finished_configs(specs, jobs, out, settings.episodes)
    return jobs


# ---------------------------------------------------------------- manifest and status
def _load_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise FlrpError(f"{path}: not a sweep manifest (a JSON object with 'settings' and 'runs'); fix or delete it")
    return data


def check_manifest(out: Path, settings: SweepSettings) -> dict[str, Any] | None:
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


MANIFEST_LOCK_NAME = ".sweep.json.lock"


def update_manifest(out: Path, specs: Sequence[RunSpec], settings: SweepSettings, timeout: float = 120.0) -> None:
    """Record settings and runs (merged with earlier invocations in the same directory).

    The read-merge-write holds ``<out>/.sweep.json.lock``: two ``flrp sweep`` commands started
    together on one directory (say one per core, on different datasets) would otherwise each
    write back the manifest they read, and the later one would drop the other's runs.

    Raises:
        FlrpError: the directory's recorded settings differ (``check_manifest``); another
            process held the lock for ``timeout`` seconds (naming its pid); the lock or the
            manifest cannot be written.
    """
    import flrp
    from flrp.rundir import hold_lock

    lock_path = out / MANIFEST_LOCK_NAME
    busy = f"{{holder}} has held the sweep manifest's lock for {timeout:g} s; wait for it or choose another --out"
    with hold_lock(lock_path, timeout, busy, "cannot lock the sweep manifest"):
        old = check_manifest(out, settings)
        runs: dict[str, dict[str, Any]] = {r["dir"]: r for r in old.get("runs", [])} if old else {}
        for spec in specs:
            runs.setdefault(spec.rel_dir.as_posix(), spec.to_dict())
        write_json(out / MANIFEST_NAME, {"flrp_version": flrp.__version__, "settings": settings.to_dict(), "runs": list(runs.values())})


def check_finished_configs(specs: Sequence[RunSpec], jobs: dict[RunSpec, TrainJob], out: Path, episodes: int = 20) -> None:
    """Refuse a sweep whose finished runs were trained with another config than the one it asks
    for (a preset or a default changed since, or a run directory copied in by hand): rerunning
    would silently keep them, and the report would mix two configs under one name.

    Raises:
        FlrpError: naming the first such run and its differing fields.
    """
    from dataclasses import asdict

    from flrp.algos.model_file import LATER_FIELDS

    for spec in specs:
        run = out / spec.rel_dir
        if run_status(run, episodes) != "done" or not (run / "config.json").exists():
            continue
        doc = read_json(run / "config.json")
        recorded = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(recorded, dict):
            raise FlrpError(f"{run / 'config.json'}: no 'config' section")
        job = jobs[spec]
        want = json.loads(json.dumps(asdict(job.config)))  # tuples -> lists, as config.json has them
        later = LATER_FIELDS.get(spec.algo, {})
        # steps is not compared where it is the algorithm's per-suite default (resolved once the
        # task is known, so the job's value is not the run's)
        diff = [k for k, v in want.items() if not (k == STEPS and job.default_steps) and recorded.get(k, later.get(k, v)) != v]
        if diff:
            fields = ", ".join(f"{k}={recorded.get(k, later.get(k))!r} there, {want[k]!r} now" for k in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            fix = ("select_margin is read only at inference: benchmarks/flrp_reselect.py gives the run the new value"
                   if diff == ["select_margin"] else "delete it to train it again")
            raise FlrpError(f"{run}: this finished run was trained with another config ({fields}{more}); {fix}, or choose another --out")


def run_status(run_dir: str | os.PathLike[str], episodes: int = 20) -> str:
    """``"done"`` (``eval.json`` exists, or ``model.pt`` when ``episodes == 0``), ``"partial"``
    (a checkpoint to resume from) or ``"new"``."""
    d = Path(run_dir)
    if (d / "eval.json").exists() or (episodes == 0 and (d / "model.pt").exists()):
        return "done"
    return "partial" if (d / "checkpoint.pt").exists() else "new"
