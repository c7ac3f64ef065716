"""Config dataclasses and training jobs as ``flrp train`` flags, and back: the one place.

* :func:`add_config_flags` gives every field of a config class a flag (``refine_steps`` ->
  ``--refine-steps``; a bool gets ``--x/--no-x``, a ``Literal`` its choices, an optional field
  accepts ``none``); :func:`config_value` types one value as that flag would (``flrp sweep
  --set``), and :func:`config_argv` spells a config as the flags that rebuild it.
* :func:`add_train_arguments` is ``flrp train``'s parser (the CLI and the sweep share it),
  :func:`job_from_namespace` turns its result into a :class:`~flrp.training.run.TrainJob`, and
  :func:`job_argv` spells a job as the ``flrp train`` command that runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import types
import typing
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from flrp.algos.validation import FINITE, POSITIVE, _field_types, check_number, flag_of, range_of
from flrp.errors import FlrpError
from flrp.rundir import CHECKPOINT_EVERY, CHECKPOINT_MINUTES

if TYPE_CHECKING:
    from flrp.algos.base import AlgoConfig, Algorithm
    from flrp.training.run import TrainJob

__all__ = [
    "PRESET",
    "STEPS",
    "add_config_flags",
    "add_eval_arguments",
    "add_train_arguments",
    "config_argv",
    "config_fields",
    "config_from_namespace",
    "config_value",
    "job_argv",
    "job_from_namespace",
    "parse_train_argv",
    "resolve_threads",
    "set_threads",
]

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
# Override keys beyond a config's own fields: --steps is also a top-level flag of flrp train,
# --preset names a preset of the algorithm.
STEPS, PRESET = "steps", "preset"
_DEST = "cfg_"  # argparse destination prefix of a config flag


# ---------------------------------------------------------------- config fields <-> flags
def config_fields(config_cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of a config dataclass, in field order."""
    return dict(_field_types(config_cls))


def _optional_inner(tp: Any) -> Any:
    """``X`` for ``X | None``, else ``None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _converter(tp: Any) -> Callable[[str], Any]:
    """The string -> value conversion of a non-bool, non-Literal field (argparse ``type=``)."""
    inner = _optional_inner(tp)
    if inner is not None:
        def optional(s: str) -> Any:
            return None if s.lower() == "none" else inner(s)

        optional.__name__ = inner.__name__  # argparse names the type in "invalid int value"
        return optional
    return typing.cast(Callable[[str], Any], tp)


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per field of ``config_cls`` but ``steps`` (a top-level flag), defaults suppressed
    (a field not given stays out of the namespace, so presets and defaults apply)."""
    group = parser.add_argument_group(f"{config_cls.__name__} (defaults = paper values)")
    for f in dataclasses.fields(config_cls):
        if f.name == STEPS:
            continue
        tp = config_fields(config_cls)[f.name]
        rng = range_of(config_cls, f.name)  # the allowed range, checked when the config is built
        literal = typing.get_origin(tp) is typing.Literal
        shown = f"; {rng}" if rng != FINITE and tp is not bool and not literal else ""
        meaning = config_cls.help_of(f.name) if hasattr(config_cls, "help_of") else ""
        kwargs: dict[str, Any] = {"dest": _DEST + f.name, "default": argparse.SUPPRESS, "help": f"{meaning + ' ' if meaning else ''}(default: {f.default}{shown})"}
        if tp is bool:
            group.add_argument(flag_of(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if literal:
            choices = typing.get_args(tp)
            kwargs.update(choices=list(choices), type=type(choices[0]))
        else:
            kwargs.update(type=_converter(tp), metavar=f.name.upper())
        group.add_argument(flag_of(f.name), **kwargs)


def config_value(config_cls: type, key: str, text: str) -> Any:
    """``text`` typed as flag ``--key`` of ``config_cls`` would type it (range checks come when
    the config is built); errors read like argparse's (``argument --x: invalid int value: 'y'``)."""
    tp = config_fields(config_cls).get(key)
    if tp is None:
        raise FlrpError(f"{config_cls.__name__} has no field '{key}'")
    flag = flag_of(key)
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise FlrpError(f"argument {flag}: '{text}' is not a boolean (true/false)")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        value: Any = type(choices[0])(text)
        if value not in choices:
            raise FlrpError(f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})")
        return value
    conv = _converter(tp)
    try:
        return conv(text)
    except ValueError:
        raise FlrpError(f"argument {flag}: invalid {getattr(conv, '__name__', 'value')} value: '{text}'") from None


def _spell(value: Any) -> str:
    return "none" if value is None else str(value)


def config_argv(config: AlgoConfig, base: AlgoConfig | None = None) -> list[str]:
    """The flags that turn ``base`` (default: the class defaults) into ``config``, in field order;
    ``steps`` excluded (``flrp train --steps``)."""
    ref = base if base is not None else type(config)()
    argv: list[str] = []
    for name, tp in config_fields(type(config)).items():
        value = getattr(config, name)
        if name == STEPS or value == getattr(ref, name):
            continue
        if tp is bool:
            argv.append(flag_of(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag_of(name), _spell(value)]
    return argv


def config_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (``cfg_*`` destinations)."""
    return {k[len(_DEST) :]: v for k, v in vars(ns).items() if k.startswith(_DEST)}


def build_config(algo_cls: type[Algorithm], overrides: dict[str, Any], preset: str | None = None) -> AlgoConfig:
    """``algo_cls``'s config with ``overrides`` on top of ``preset`` (or of the defaults)."""
    if preset is not None:
        return algo_cls.preset_config(preset, **overrides)
    return algo_cls.Config(**overrides)


def config_from_namespace(algo_cls: type[Algorithm], ns: argparse.Namespace, overrides: dict[str, Any] | None = None) -> AlgoConfig:
    """The config of a parsed ``flrp train`` command line: its config flags and ``--steps`` on top
    of ``--preset`` (or the defaults), then ``overrides`` (typed values; may hold ``steps`` and
    ``preset``)."""
    extra = dict(overrides or {})
    preset = extra.pop(PRESET, getattr(ns, "preset", None))
    cfg = config_overrides(ns)
    if getattr(ns, "steps", None) is not None:
        cfg[STEPS] = ns.steps
    return build_config(algo_cls, {**cfg, **extra}, preset)


# ---------------------------------------------------------------- flrp train
def add_eval_arguments(p: argparse.ArgumentParser, train: bool) -> None:
    """The evaluation flags of ``flrp train`` (``train=True``), ``flrp eval`` and ``flrp diagnose``."""
    g = p.add_argument_group("evaluation (DSRL protocol)")
    g.add_argument("--episodes", type=int, default=20, help="evaluation episodes, each with its own seed (default 20; >= 0, 0 skips evaluation)" if train else "evaluation episodes (default 20; positive)")
    g.add_argument("--eval-seed", type=int, default=10_000, help="seed of the first evaluation episode (default 10000, disjoint from training seeds)")
    g.add_argument("--workers", type=int, default=None, help="evaluation processes (default: one per core, at most one per group of 5 episodes, when the evaluation has at least 4k env steps, 20k on CUDA; else 1)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None, help="deterministic actions (FLRP: u_0 = 0) or stochastic (FLRP: u_0 ~ N(0, I), the paper's protocol); default: the algorithm's own convention")
    if not train:
        g.add_argument("--cost-limit", type=float, default=None, help="cost limit kappa of Eq. 40 (default: the one the model was trained with, the paper's 10 unless set)")


def add_train_arguments(t: argparse.ArgumentParser, algo_cls: type[Algorithm], algo_names: Iterable[str] = ()) -> None:
    """Every flag of ``flrp train --algo NAME``: the run, the evaluation, the algorithm's config."""
    t.add_argument("--dataset", required=True, help="path to a DSRL-format .hdf5 file, or 'toy' (the embedded dataset)")
    t.add_argument("--algo", default="flrp", choices=sorted(algo_names) or None, help="algorithm (default flrp)")
    t.add_argument("--task", default=None, help="task name for evaluation and normalisation (default: inferred from the dataset)")
    per_suite = "".join(f"; {n} on {suite}" for suite, n in sorted(algo_cls.suite_steps.items()))
    t.add_argument("--steps", type=int, default=None, help=f"gradient steps (default {algo_cls.Config.steps}{per_suite})")
    t.add_argument("--out", default=None, help="run directory (default runs/<algo>-<task>-seed<seed>)")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    t.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default 1 per process, or $FLRP_THREADS; positive)")
    t.add_argument("--log-every", type=int, default=500, help="log metrics every N steps (default 500; positive)")
    t.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, help=f"write <out>/checkpoint.pt every N steps (default {CHECKPOINT_EVERY}; positive)")
    t.add_argument("--checkpoint-minutes", type=float, default=CHECKPOINT_MINUTES, help=f"also write it at the first step M wall-clock minutes after the last (default {CHECKPOINT_MINUTES:g}; positive)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="continue from <out>/checkpoint.pt if present (default yes); a fresh start moves the old run's files aside as NAME.old-N")
    t.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a trained model.pt (its files are moved aside as NAME.old-N)")
    t.add_argument("--tensorboard", action="store_true", help="also log to <out>/tb (needs flrp[tensorboard])")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    if algo_cls.presets:
        t.add_argument("--preset", default=None, choices=sorted(algo_cls.presets), help="named settings; flags given explicitly override them (default: the paper's values, = 'paper' where offered)")
    add_eval_arguments(t, train=True)
    add_config_flags(t, algo_cls.Config)


def _train_parser(algo_cls: type[Algorithm]) -> argparse.ArgumentParser:
    from flrp.algos.registry import ALGORITHMS

    p = argparse.ArgumentParser(prog="flrp train", add_help=False)
    add_train_arguments(p, algo_cls, ALGORITHMS)
    return p


def parse_train_argv(algo_cls: type[Algorithm], argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed by ``flrp train --algo NAME``'s parser; a rejection is one FlrpError line
    (argparse's message) instead of an exit."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return _train_parser(algo_cls).parse_args(list(argv))
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise FlrpError((lines[-1] if lines else "invalid flags").split("error: ", 1)[-1]) from None


def job_from_namespace(algo_cls: type[Algorithm], ns: argparse.Namespace, overrides: dict[str, Any] | None = None) -> TrainJob:
    """The job of a parsed ``flrp train`` command line; ``overrides`` (typed config values, and
    ``steps``/``preset``) apply on top of the flags. The config is built (and checked) here."""
    from flrp.training.run import EvalOptions, TrainJob

    config = config_from_namespace(algo_cls, ns, overrides)
    preset = (overrides or {}).get(PRESET, getattr(ns, "preset", None))
    chosen = getattr(ns, "steps", None) is not None or STEPS in (overrides or {}) or (preset is not None and STEPS in algo_cls.presets.get(preset, {}))
    evaluation = EvalOptions(episodes=ns.episodes, seed=ns.eval_seed, workers=ns.workers, deterministic=ns.deterministic)
    return TrainJob(
        algo=algo_cls.name, dataset=str(ns.dataset), config=config, task=ns.task, out=ns.out, preset=preset, device=str(ns.device),
        threads=ns.threads, log_every=ns.log_every, checkpoint_every=ns.checkpoint_every, checkpoint_minutes=ns.checkpoint_minutes, resume=ns.resume, overwrite=ns.overwrite,
        tensorboard=ns.tensorboard, progress=not ns.quiet, evaluation=evaluation, default_steps=not chosen,
    )


def job_argv(job: TrainJob) -> list[str]:
    """The ``flrp train`` command line (without ``flrp``) that runs ``job``."""
    from flrp.algos.registry import get_algorithm
    from flrp.training.run import EvalOptions, TrainJob

    algo_cls = get_algorithm(job.algo)
    argv = ["train", "--algo", job.algo, "--dataset", job.dataset]
    plain = TrainJob(algo=job.algo, dataset=job.dataset, config=job.config)
    for flag, field in (("--task", "task"), ("--out", "out"), ("--device", "device"), ("--threads", "threads"), ("--log-every", "log_every"), ("--checkpoint-every", "checkpoint_every"), ("--checkpoint-minutes", "checkpoint_minutes")):
        value = getattr(job, field)
        if value != getattr(plain, field):
            argv += [flag, str(value)]
    argv += ["--seed", str(job.config.seed)]
    if not job.default_steps:  # a default stays a default: the per-suite steps apply (TrainJob.default_steps)
        argv += ["--steps", str(job.config.steps)]
    if job.preset is not None:
        argv += ["--preset", job.preset]
    for flag, on in (("--no-resume", not job.resume), ("--overwrite", job.overwrite), ("--tensorboard", job.tensorboard), ("--quiet", not job.progress)):
        if on:
            argv.append(flag)
    ev, ev0 = job.evaluation, EvalOptions()
    argv += ["--episodes", str(ev.episodes)]
    if ev.seed != ev0.seed:
        argv += ["--eval-seed", str(ev.seed)]
    if ev.workers is not None:
        argv += ["--workers", str(ev.workers)]
    if ev.deterministic is not None:
        argv.append("--deterministic" if ev.deterministic else "--no-deterministic")
    base = algo_cls.preset_config(job.preset) if job.preset is not None else algo_cls.Config()
    return argv + _without_seed(config_argv(job.config, base))


def _without_seed(argv: list[str]) -> list[str]:
    """``config_argv`` minus ``--seed N`` (job_argv spells the seed always, up front)."""
    if "--seed" in argv:
        i = argv.index("--seed")
        return argv[:i] + argv[i + 2 :]
    return argv


# ---------------------------------------------------------------- --threads
def resolve_threads(n: int | None) -> int:
    """``--threads``: ``n`` if given, else ``$FLRP_THREADS``, else 1; one line unless a positive integer."""
    if n is None:
        env = os.environ.get("FLRP_THREADS", "1")
        try:
            n = int(env)
        except ValueError:
            raise FlrpError(f"FLRP_THREADS must be an integer >= 1, got {env!r}") from None
        check_number("FLRP_THREADS", n, POSITIVE)
    check_number("--threads", n, POSITIVE)
    return n


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads to :func:`resolve_threads` ``(n)``; returns the number set."""
    import torch

    n = resolve_threads(n)
    torch.set_num_threads(n)
    return n
