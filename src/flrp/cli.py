"""``flrp train | eval | diagnose | info | collect | export | sweep | tasks``: parse, then dispatch.

Every algorithm config field is a flag (``--batch-size``, ``--refine-steps``, ...) whose default is
the paper's value (:mod:`flrp.training.flags`, shared with ``flrp sweep``). The work is the
library's: a training run is :func:`flrp.training.train_and_evaluate`, an evaluation
:func:`flrp.training.evaluate_run`. Every value is checked before any work (config ranges in
:mod:`flrp.algos.validation`); user errors print one line (``flrp: error: ...``) and exit 2, never
a traceback. Run directories follow :mod:`flrp.rundir`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from flrp.errors import FlrpError

if TYPE_CHECKING:
    from flrp.training import EvalOptions

__all__ = ["build_parser", "main"]


# ---------------------------------------------------------------- commands
def _config_from_args(config_cls: type, ns: argparse.Namespace, steps: int | None, algo_cls: type | None = None) -> object:
    """The config of parsed ``flrp train`` flags (kept for callers of the CLI's old helper; the
    logic is :func:`flrp.training.flags.config_from_namespace`)."""
    from flrp.training.flags import config_from_namespace, config_overrides

    if algo_cls is None:
        return config_cls(**config_overrides(ns), **({} if steps is None else {"steps": steps}))
    ns = argparse.Namespace(**{**vars(ns), "steps": steps})
    return config_from_namespace(algo_cls, ns)


def cmd_train(ns: argparse.Namespace, algo_cls: type) -> int:
    from flrp.training import job_from_namespace, train_and_evaluate
    from flrp.training.flags import resolve_threads

    ns.threads = resolve_threads(ns.threads)  # --threads defaults to $FLRP_THREADS, else 1
    train_and_evaluate(job_from_namespace(algo_cls, ns))
    return 0


def _eval_options(ns: argparse.Namespace) -> EvalOptions:
    from flrp.training import EvalOptions

    options = EvalOptions(episodes=ns.episodes, seed=ns.eval_seed, workers=ns.workers, deterministic=ns.deterministic, cost_limit=ns.cost_limit)
    options.check(train=False)
    return options


def cmd_eval(ns: argparse.Namespace) -> int:
    from flrp.rundir import run_lock
    from flrp.training import evaluate_run, resolve_model
    from flrp.training.flags import set_threads

    set_threads(ns.threads)
    options = _eval_options(ns)
    model, task, out = resolve_model(ns.model, ns.task)
    with run_lock(out):  # checks the directory is writable before the evaluation runs
        evaluate_run(model, task, out, options)
    return 0


def cmd_diagnose(ns: argparse.Namespace) -> int:
    from flrp.algos.validation import POSITIVE, check_number
    from flrp.evaluation.diagnose import diagnose
    from flrp.rundir import run_lock
    from flrp.training import resolve_model, run_dataset
    from flrp.training.flags import set_threads

    check_number("--samples", ns.samples, POSITIVE)
    check_number("--horizon", ns.horizon, POSITIVE)
    set_threads(ns.threads)
    _eval_options(ns)
    model, task, out = resolve_model(ns.model, ns.task)
    ds, note = run_dataset(out, task, ns.dataset)
    print(f"flrp: {note}")
    with run_lock(out):
        d = diagnose(model, task, out, episodes=ns.episodes, seed=ns.eval_seed, deterministic=ns.deterministic,
                     samples=ns.samples, horizon=ns.horizon, cost_limit=ns.cost_limit, dataset=ds)
    print(f"flrp: {d.episodes} episodes, normalized reward {d.norm_reward:.3f}, normalized cost {d.norm_cost:.3f}, {d.onsets} violation onsets")
    print(f"flrp: {d.verdict}")
    print(f"flrp: figures in {out / 'diagnosis.md'} and {out / 'diagnosis.png'}")
    return 0


def cmd_info(ns: argparse.Namespace) -> int:
    from flrp.data.tasks import COST_LIMIT
    from flrp.plotting.dataset import dataset_summary, plot_cost_return_scatter, summary_markdown
    from flrp.training.datasets import resolve_dataset

    ds, task = resolve_dataset(ns.dataset, ns.task)
    cost_limit = COST_LIMIT if ns.cost_limit is None else ns.cost_limit
    summary = dataset_summary(ds, task, cost_limit=cost_limit)
    print(summary_markdown(summary))
    stem = task.name if task else Path(ns.dataset).stem
    png = Path(ns.out) if ns.out else Path(f"{stem}-cost-return.png")
    # DSRL's return range of the task (toy: none) as dotted lines, to compare with its datasets
    ref = (task.min_reward, task.max_reward) if task is not None and task.suite != "toy" else None
    plot_cost_return_scatter(ds, png, title=f"{stem}: {ds.num_episodes} trajectories", cost_limit=cost_limit, reference=ref)
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


def cmd_export(ns: argparse.Namespace) -> int:
    from flrp.export import export_policy

    path = export_policy(ns.model, ns.format, out=ns.out, safety=ns.safety, kl_samples=ns.kl_samples, seed=ns.seed)
    outputs = "action, q_h, base_kl" if ns.safety else "action"
    print(f"flrp: {path}: {ns.format} policy, deterministic, raw observations -> {outputs}")
    return 0


def cmd_tasks(ns: argparse.Namespace) -> int:
    from flrp.data.tasks import list_tasks

    print("| task | suite | DSRL id | max steps | reward range | max cost |")
    print("|---|---|---|---|---|---|")
    for t in list_tasks(ns.suite):
        print(f"| {t.name} | {t.suite} | {t.dsrl_id} | {t.max_episode_steps} | {t.min_reward:.4g} .. {t.max_reward:.4g} | {t.max_cost:g} |")
    return 0


# ---------------------------------------------------------------- parser
def build_parser(algo: str = "flrp") -> argparse.ArgumentParser:
    from flrp.algos.registry import ALGORITHMS, get_algorithm
    from flrp.collect.collector import BUDGET_NAMES
    from flrp.training.flags import add_eval_arguments, add_train_arguments

    algo_cls = get_algorithm(algo)
    parser = argparse.ArgumentParser(prog="flrp", description="Safe offline RL: FLRP and baselines on DSRL-format data.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (and evaluate) an algorithm on a dataset")
    add_train_arguments(t, algo_cls, ALGORITHMS)

    e = sub.add_parser("eval", help="evaluate a trained model on its simulator")
    e.add_argument("model", help="a run directory or a model.pt file")
    e.add_argument("--task", default=None, help="task name (default: the one recorded in run.json)")
    e.add_argument("--threads", type=int, default=1)
    add_eval_arguments(e, train=False)

    d = sub.add_parser("diagnose", help="why is a policy unsafe? critic recall, refiner effectiveness and time outside on evaluation episodes")
    d.add_argument("model", help="a run directory or a model.pt file (an flrp model)")
    d.add_argument("--task", default=None, help="task name (default: the one recorded in run.json)")
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--samples", type=int, default=16, help="base samples per step to test whether a feasible action existed (default 16)")
    d.add_argument("--horizon", type=int, default=20, help="steps before each violation to score the critic's warning (default 20)")
    d.add_argument("--dataset", default=None, help="the run's dataset, for what the critics make of the logged data (default: the one in run.json; 'none' skips it)")
    add_eval_arguments(d, train=False)  # --episodes 20 by default: the episodes eval.json scored

    i = sub.add_parser("info", help="summarise a dataset and plot its cost-return scatter")
    i.add_argument("dataset", help="path to a DSRL-format .hdf5 file, or 'toy'")
    i.add_argument("--task", default=None)
    i.add_argument("--cost-limit", type=float, default=None, help="episode cost limit for the safe share and the scatter's line (default: the paper's 10)")
    i.add_argument("--out", default=None, help="PNG path (default <task>-cost-return.png)")

    c = sub.add_parser("collect", help="make a DSRL-format dataset on the simulator (PPO behaviour policies; needs flrp[collect])")
    c.add_argument("task", help="task name, e.g. BallRun or CarRun")
    c.add_argument("--out", default="datasets", help="output directory for the .hdf5 file and its data card (default ./datasets)")
    c.add_argument("--seed", type=int, default=0, help="collection seed (default 0); same seed and budget give the same data")
    c.add_argument("--budget", default="small", choices=list(BUDGET_NAMES), help="training/collection budget (default small; the reference datasets use full for the Ball and Car tasks, long for Drone, Ant and velocity tasks)")
    c.add_argument("--cost-cap", action=argparse.BooleanOptionalAction, default=True, help="drop episodes whose cost exceeds DSRL's max cost for the task, as DSRL's files do (default yes)")
    c.add_argument("--work", default=None, help="directory for policies and episode chunks (default <out>/work-<SimId>-seed<seed>-<budget>); rerunning resumes from it")
    c.add_argument("--quiet", action="store_true", help="no progress bars")

    x = sub.add_parser("export", help="write a trained policy as one self-contained TorchScript or ONNX file (deterministic mode)")
    x.add_argument("model", help="a run directory or a model.pt file")
    x.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"], help="torchscript (torch.jit.load) or onnx (any ONNX runtime; needs flrp[export]); default torchscript")
    x.add_argument("--out", default=None, help="output file (default <run>/policy.pt or <run>/policy.onnx)")
    x.add_argument("--safety", action="store_true", help="FLRP: also output Q_h of the chosen action and the base-space KL, to refuse actions the critic flags")
    x.add_argument("--kl-samples", type=int, default=256, help="base samples fixed in the file for the KL estimate (default 256)")
    x.add_argument("--seed", type=int, default=0, help="seed of those base samples (default 0)")

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
        from flrp.sweep.runner import sweep_main

        return sweep_main(argv[1:])
    try:
        from flrp.algos.registry import get_algorithm

        algo_cls = get_algorithm(_algo_from_argv(argv))
        ns = build_parser(algo_cls.name).parse_args(argv)
        if ns.command == "train":
            return cmd_train(ns, algo_cls)
        commands = {"eval": cmd_eval, "info": cmd_info, "diagnose": cmd_diagnose, "collect": cmd_collect, "export": cmd_export, "tasks": cmd_tasks}
        return commands[ns.command](ns)
    except FlrpError as exc:
        print(f"flrp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flrp: interrupted (the last checkpoint is kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
