"""``flrp train | eval | info | tasks``: thin wrappers over the library.

Every algorithm config field is a flag (``--batch-size``, ``--refine-steps``, ...) whose default is
the paper's value. Every value is checked before any work (config ranges in
:mod:`flrp.algos.validation`, shared with the library); user errors print one line
(``flrp: error: ...``) and exit 2, never a traceback. Run directories follow :mod:`flrp.rundir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from flrp.errors import FlrpError

__all__ = ["main", "build_parser"]


# ---------------------------------------------------------------- config flags
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    from flrp.algos.validation import FINITE, range_of

    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} (defaults = paper values)")
    for f in dataclasses.fields(config_cls):
        if f.name == "steps":
            continue  # --steps is a top-level flag
        tp = hints[f.name]
        default = f.default
        rng = range_of(config_cls, f.name)  # the allowed range, checked when the config is built
        shown = f"; {rng}" if rng != FINITE and tp is not bool and typing.get_origin(tp) is not typing.Literal else ""
        kwargs: dict[str, Any] = {"dest": f"cfg_{f.name}", "default": argparse.SUPPRESS, "help": f"(default: {default}{shown})"}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if origin is typing.Literal:
            kwargs["choices"] = list(args)
            kwargs["type"] = type(args[0])
        elif origin in (typing.Union, types.UnionType) and type(None) in args:
            inner = next(a for a in args if a is not type(None))
            kwargs["type"] = lambda s, inner=inner: None if s.lower() == "none" else inner(s)
        else:
            kwargs["type"] = tp
        group.add_argument(_flag(f.name), **kwargs)


def _config_from_args(config_cls: type, ns: argparse.Namespace, steps: int | None, algo_cls: Any = None) -> Any:
    overrides = {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg_")}
    if steps is not None:
        overrides["steps"] = steps
    preset = getattr(ns, "preset", None)
    if preset is not None and algo_cls is not None:
        return algo_cls.preset_config(preset, **overrides)
    return config_cls(**overrides)


# ---------------------------------------------------------------- commands
def _set_threads(n: int | None) -> None:
    import torch

    from flrp.algos.validation import POSITIVE, check_number

    if n is None:  # flrp train: --threads defaults to $FLRP_THREADS, else 1
        env = os.environ.get("FLRP_THREADS", "1")
        try:
            n = int(env)
        except ValueError:
            raise FlrpError(f"FLRP_THREADS must be an integer >= 1, got {env!r}") from None
        check_number("FLRP_THREADS", n, POSITIVE)
    check_number("--threads", n, POSITIVE)
    torch.set_num_threads(n)


def _check_eval_args(ns: argparse.Namespace, train: bool) -> None:
    """--episodes (>= 1 to evaluate; train also takes 0 = skip), --workers, --eval-seed, --cost-limit."""
    from flrp.algos.validation import NON_NEGATIVE, POSITIVE, Range, check_number

    check_number("--episodes", ns.episodes, NON_NEGATIVE if train else POSITIVE, where="" if train else "an evaluation needs episodes")
    if ns.workers is not None:
        check_number("--workers", ns.workers, POSITIVE)
    check_number("--eval-seed", ns.eval_seed, Range(0, 2**32 - 1))
    if getattr(ns, "cost_limit", None) is not None:
        check_number("--cost-limit", ns.cost_limit, NON_NEGATIVE, integer=False)


def cmd_train(ns: argparse.Namespace, config_cls: type, algo_cls: type) -> int:
    from flrp.algos.base import check_fit_args, resolve_device
    from flrp.datasets import check_task_fits, resolve_dataset
    from flrp.io import ensure_dir
    from flrp.rundir import run_lock

    # Every argument first, then the data, then the run directory: nothing is written before all pass.
    _set_threads(ns.threads)
    config = _config_from_args(config_cls, ns, ns.steps, algo_cls)
    device = resolve_device(ns.device)
    check_fit_args(config.steps, ns.log_every, ns.checkpoint_every)
    _check_eval_args(ns, train=True)
    ds, task = resolve_dataset(ns.dataset, ns.task)
    if task is not None and (ns.episodes > 0 or ns.task is not None):
        check_task_fits(ds.obs_dim, ds.act_dim, task, f"dataset {ds.source}")
    stem = task.name if task else Path(ns.dataset).stem
    out = ensure_dir(Path(ns.out) if ns.out else Path("runs") / f"{algo_cls.name}-{stem}-seed{config.seed}", "--out")
    with run_lock(out):
        print(f"flrp: training {algo_cls.name} on {ds.source} ({len(ds)} transitions, {ds.num_episodes} episodes) for {config.steps} steps -> {out}")
        algo = algo_cls(config, device=device)
        run_info = {"algo": algo_cls.name, "dataset": str(ns.dataset), "dataset_source": ds.source, "task": task.name if task else None, "config": dataclasses.asdict(config)}
        algo.fit(ds, run_dir=out, log_every=ns.log_every, checkpoint_every=ns.checkpoint_every, resume=ns.resume, progress=not ns.quiet,
                 tensorboard=ns.tensorboard, overwrite=ns.overwrite, run_info=run_info)
        if ns.episodes == 0:
            return 0
        ns.cost_limit = config.cost_limit
        if task is None:
            print("flrp: no task known for this dataset (pass --task NAME to evaluate on its simulator); skipping evaluation")
            return 0
        return _evaluate_and_report(out / "model.pt", task, ns, out, algo=algo, dataset=ds)


def _evaluate_and_report(model: Path, task: Any, ns: argparse.Namespace, out: Path, algo: Any = None, dataset: Any = None) -> int:
    """Evaluate ``model`` and write eval.json/eval.md to ``out`` (the caller holds its lock)."""
    from flrp.evaluation.rollout import evaluate_model_file
    from flrp.io import write_json, write_text

    res = evaluate_model_file(model, task, episodes=ns.episodes, seed=ns.eval_seed, cost_limit=ns.cost_limit, deterministic=ns.deterministic, workers=ns.workers)
    report = res.to_dict()
    md = res.markdown()
    if task.suite == "toy":
        from flrp.algos.base import Algorithm
        from flrp.envs.toy_kernel import feasibility_iou, plot_feasibility

        algo = algo or Algorithm.load(model, device="cpu")
        if hasattr(algo, "feasibility_value"):
            iou = feasibility_iou(algo.feasibility_value, dataset)
            plot_feasibility(algo.feasibility_value, out / "feasibility.png", dataset=dataset, title=f"{algo.name}: learned V_h vs exact kernel")
            report["feasibility"] = iou
            md += f"\nHJ feasibility vs exact kernel: IoU {iou['iou_support']:.3f} on data support, {iou['iou_box']:.3f} on the whole box (feasibility.png)\n"
            print(f"flrp: HJ feasible set vs exact kernel: IoU {iou['iou_support']:.3f} (data support), {iou['iou_box']:.3f} (whole grid) -> {out / 'feasibility.png'}")
    write_json(out / "eval.json", report)
    write_text(out / "eval.md", md)
    print("flrp: " + res.line())
    print(f"flrp: results in {out / 'eval.json'} and {out / 'eval.md'}")
    return 0


def _model_and_task(ns: argparse.Namespace) -> tuple[Path, Any, Path]:
    """(model file, task, run directory) of ``flrp eval|diagnose MODEL [--task NAME]``."""
    from flrp.data.tasks import get_task
    from flrp.io import read_json

    _set_threads(ns.threads)
    _check_eval_args(ns, train=False)
    target = Path(ns.model)
    model = target / "model.pt" if target.is_dir() else target
    out = target if target.is_dir() else target.parent
    if not model.is_file():
        raise FlrpError(f"{model}: no such model file")
    task_name = ns.task
    run_json = out / "run.json"
    if task_name is None and run_json.exists():
        info = read_json(run_json)
        task_name = info.get("task") if isinstance(info, dict) else None
    if task_name is None:
        raise FlrpError(f"{model}: no task recorded for this model; pass --task NAME")
    return model, get_task(str(task_name)), out


def cmd_eval(ns: argparse.Namespace) -> int:
    from flrp.rundir import run_lock

    model, task, out = _model_and_task(ns)
    with run_lock(out):  # checks the directory is writable before the evaluation runs
        dataset = None
        if task.suite == "toy":
            from flrp.datasets import resolve_dataset

            dataset, _ = resolve_dataset("toy")
        return _evaluate_and_report(model, task, ns, out, dataset=dataset)


def cmd_diagnose(ns: argparse.Namespace) -> int:
    from flrp.algos.validation import POSITIVE, check_number
    from flrp.evaluation.diagnose import diagnose
    from flrp.rundir import run_lock

    check_number("--samples", ns.samples, POSITIVE)
    check_number("--horizon", ns.horizon, POSITIVE)
    model, task, out = _model_and_task(ns)
    with run_lock(out):
        d = diagnose(model, task, out, episodes=ns.episodes, seed=ns.eval_seed, deterministic=ns.deterministic,
                     samples=ns.samples, horizon=ns.horizon, cost_limit=ns.cost_limit)
    print(f"flrp: {d.episodes} episodes, normalized reward {d.norm_reward:.3f}, normalized cost {d.norm_cost:.3f}, {d.onsets} violation onsets")
    print(f"flrp: {d.verdict}")
    print(f"flrp: figures in {out / 'diagnosis.md'} and {out / 'diagnosis.png'}")
    return 0


def cmd_info(ns: argparse.Namespace) -> int:
    from flrp.datasets import resolve_dataset
    from flrp.plotting.dataset import dataset_summary, plot_cost_return_scatter, summary_markdown

    ds, task = resolve_dataset(ns.dataset, ns.task)
    summary = dataset_summary(ds, task, cost_limit=ns.cost_limit)
    print(summary_markdown(summary))
    stem = task.name if task else Path(ns.dataset).stem
    png = Path(ns.out) if ns.out else Path(f"{stem}-cost-return.png")
    # DSRL's return range of the task (toy: none) as dotted lines, to compare with its datasets
    ref = (task.min_reward, task.max_reward) if task is not None and task.suite != "toy" else None
    plot_cost_return_scatter(ds, png, title=f"{stem}: {ds.num_episodes} trajectories", cost_limit=ns.cost_limit, reference=ref)
    print(f"cost-return scatter: {png}")
    return 0


def cmd_collect(ns: argparse.Namespace) -> int:
    """Train behaviour policies on the simulator and write a DSRL-format dataset + data card."""
    from flrp.collect.collector import collect

    if ns.seed < 0:
        raise FlrpError(f"--seed must be >= 0, got {ns.seed}")
    res = collect(ns.task, ns.out, seed=ns.seed, budget=ns.budget, cost_cap=ns.cost_cap, work_dir=ns.work, progress=not ns.quiet)
    ds = res.card["dataset"]
    print(f"flrp: {res.hdf5}: {ds['episodes']} trajectories, {ds['transitions']} transitions, "
          f"return {ds['return']['min']:.1f} .. {ds['return']['max']:.1f}, cost {ds['cost']['min']:g} .. {ds['cost']['max']:g}, "
          f"{100 * ds['safe_fraction']:.1f}% with cost <= {ds['cost_limit']:g}")
    print(f"flrp: data card {res.card_md} (+ {res.card_json.name}, {res.scatter_png.name}, {res.episodes_csv.name})")
    return 0


def cmd_tasks(ns: argparse.Namespace) -> int:
    from flrp.data.tasks import list_tasks

    print("| task | suite | DSRL id | max steps | reward range | max cost |")
    print("|---|---|---|---|---|---|")
    for t in list_tasks(ns.suite):
        print(f"| {t.name} | {t.suite} | {t.dsrl_id} | {t.max_episode_steps} | {t.min_reward:.4g} .. {t.max_reward:.4g} | {t.max_cost:g} |")
    return 0


# ---------------------------------------------------------------- parser
def _eval_flags(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("evaluation (DSRL protocol)")
    g.add_argument("--episodes", type=int, default=20, help="evaluation episodes, each with its own seed (default 20; >= 0, 0 skips evaluation)" if train else "evaluation episodes (default 20; positive)")
    g.add_argument("--eval-seed", type=int, default=10_000, help="seed of the first evaluation episode (default 10000, disjoint from training seeds)")
    g.add_argument("--workers", type=int, default=None, help="evaluation processes (default: one per core, at most one per group of 5 episodes, when the evaluation has at least 4k env steps, 20k on CUDA; else 1)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None, help="deterministic actions (FLRP: u_0 = 0) or stochastic (FLRP: u_0 ~ N(0, I), the paper's protocol); default: the algorithm's own convention")
    if not train:
        g.add_argument("--cost-limit", type=float, default=10.0, help="cost limit kappa of Eq. 40 (default 10)")


def build_parser(algo: str = "flrp") -> argparse.ArgumentParser:
    from flrp.algos.base import ALGORITHMS, get_algorithm

    algo_cls = get_algorithm(algo)
    parser = argparse.ArgumentParser(prog="flrp", description="Safe offline RL: FLRP and baselines on DSRL-format data.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (and evaluate) an algorithm on a dataset")
    t.add_argument("--dataset", required=True, help="path to a DSRL-format .hdf5 file, or 'toy' (the embedded dataset)")
    t.add_argument("--algo", default="flrp", choices=sorted(ALGORITHMS), help="algorithm (default flrp)")
    t.add_argument("--task", default=None, help="task name for evaluation and normalisation (default: inferred from the dataset)")
    t.add_argument("--steps", type=int, default=None, help=f"gradient steps (default {algo_cls.Config.steps})")
    t.add_argument("--out", default=None, help="run directory (default runs/<algo>-<task>-seed<seed>)")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    t.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default 1 per process, or $FLRP_THREADS; positive)")
    t.add_argument("--log-every", type=int, default=500, help="log metrics every N steps (default 500; positive)")
    t.add_argument("--checkpoint-every", type=int, default=5000, help="write <out>/checkpoint.pt every N steps (default 5000; positive)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="continue from <out>/checkpoint.pt if present (default yes); a fresh start moves the old run's files aside as NAME.old-N")
    t.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a trained model.pt (its files are moved aside as NAME.old-N)")
    t.add_argument("--tensorboard", action="store_true", help="also log to <out>/tb (needs flrp[tensorboard])")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    if algo_cls.presets:
        t.add_argument("--preset", default=None, choices=sorted(algo_cls.presets), help="named settings; flags given explicitly override them (default: the paper's values, = 'paper' where offered)")
    _eval_flags(t, train=True)
    _add_config_flags(t, algo_cls.Config)

    e = sub.add_parser("eval", help="evaluate a trained model on its simulator")
    e.add_argument("model", help="a run directory or a model.pt file")
    e.add_argument("--task", default=None, help="task name (default: the one recorded in run.json)")
    e.add_argument("--threads", type=int, default=1)
    _eval_flags(e, train=False)

    d = sub.add_parser("diagnose", help="why is a policy unsafe? critic recall, refiner effectiveness and time outside on evaluation episodes")
    d.add_argument("model", help="a run directory or a model.pt file (an flrp model)")
    d.add_argument("--task", default=None, help="task name (default: the one recorded in run.json)")
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--samples", type=int, default=16, help="base samples per step to test whether a feasible action existed (default 16)")
    d.add_argument("--horizon", type=int, default=20, help="steps before each violation to score the critic's warning (default 20)")
    _eval_flags(d, train=False)
    d.set_defaults(episodes=10)

    i = sub.add_parser("info", help="summarise a dataset and plot its cost-return scatter")
    i.add_argument("dataset", help="path to a DSRL-format .hdf5 file, or 'toy'")
    i.add_argument("--task", default=None)
    i.add_argument("--cost-limit", type=float, default=10.0)
    i.add_argument("--out", default=None, help="PNG path (default <task>-cost-return.png)")

    from flrp.collect.collector import BUDGET_NAMES

    c = sub.add_parser("collect", help="make a DSRL-format dataset on the simulator (PPO behaviour policies; needs flrp[collect])")
    c.add_argument("task", help="task name, e.g. BallRun or CarRun")
    c.add_argument("--out", default="datasets", help="output directory for the .hdf5 file and its data card (default ./datasets)")
    c.add_argument("--seed", type=int, default=0, help="collection seed (default 0); same seed and budget give the same data")
    c.add_argument("--budget", default="small", choices=list(BUDGET_NAMES), help="training/collection budget (default small; the reference datasets use full for the Ball and Car tasks, long for Drone, Ant and velocity tasks)")
    c.add_argument("--cost-cap", action=argparse.BooleanOptionalAction, default=True, help="drop episodes whose cost exceeds DSRL's max cost for the task, as DSRL's files do (default yes)")
    c.add_argument("--work", default=None, help="directory for policies and episode chunks (default <out>/work-<SimId>-seed<seed>-<budget>); rerunning resumes from it")
    c.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("sweep", help="run algos x datasets x seeds on Ray and write a Table-1 style report (flrp sweep --help)", add_help=False)

    k = sub.add_parser("tasks", help="list the task registry (DSRL constants)")
    k.add_argument("--suite", default=None, choices=["bullet", "safetygym", "metadrive", "toy"])
    return parser


def _algo_from_argv(argv: Sequence[str]) -> str:
    for i, tok in enumerate(argv):
        if tok == "--algo" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--algo="):
            return tok.split("=", 1)[1]
    return "flrp"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:
        # `flrp sweep ...` has its own parser (algos x datasets x seeds on Ray).
        from flrp.benchmark.suite import sweep_main

        return sweep_main(argv[1:])
    try:
        from flrp.algos.base import get_algorithm

        algo_name = _algo_from_argv(argv)
        algo_cls = get_algorithm(algo_name)
        ns = build_parser(algo_cls.name).parse_args(argv)
        if ns.command == "train":
            return cmd_train(ns, algo_cls.Config, algo_cls)
        if ns.command == "eval":
            return cmd_eval(ns)
        if ns.command == "info":
            return cmd_info(ns)
        if ns.command == "diagnose":
            return cmd_diagnose(ns)
        if ns.command == "collect":
            return cmd_collect(ns)
        return cmd_tasks(ns)
    except FlrpError as exc:
        print(f"flrp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flrp: interrupted (the last checkpoint is kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
