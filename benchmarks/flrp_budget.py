"""The smallest budget at which FLRP's fast preset is safe on a dataset (issue 11's fallback bar):
extend one run from budget to budget, evaluate and diagnose it at each, stop at the first safe one.

    python benchmarks/flrp_budget.py --dataset datasets/made/SafetyDroneRun-v0-140-811.hdf5 \\
        --budgets 20000 40000 80000 --start runs/sweep-fast/flrp/SafetyDroneRun-v0-140-811/seed0/preset=fast

Each budget is its own run directory, ``<out>/<stem>-fast-<k>k`` (or ``-<steps>``), made by copying the previous
budget's directory and resuming it with ``flrp train --steps N`` (a checkpoint may change only
``steps``, and FLRP has no step-dependent schedule, so a 20k run extended to 40k *is* the 40k run).
``--start`` reuses an existing run as the first budget (its step must not exceed the first budget). Resumable: finished budgets are reused.
``--report`` only rebuilds ``<results>/budget.md`` (and copies each row's eval.json, diagnosis.md,
timing.json beside it) from every ``<out>/*-fast-*`` directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from flrp.cli import main as flrp  # noqa: E402
from flrp.files import read_json, write_json, write_text  # noqa: E402

# What an evaluation or diagnosis of the previous budget left in its directory: not this budget's.
RESULTS = ("eval.json", "eval.md", "diagnosis.json", "diagnosis.md", "diagnosis.png")
BUDGET_NAME = "budget.json"  # which run this one extends, and whether its timing.json covers every step


def run_dir(out: Path, stem: str, steps: int, seed: int = 0) -> Path:
    return out / f"{stem}-fast-{f'{steps // 1000}k' if steps % 1000 == 0 else steps}{f'-seed{seed}' if seed else ''}"


def timing_complete(d: Path) -> bool:
    """Whether ``d/timing.json`` covers every training step up to its budget: False when a run it
    extends predates timing.json (``budget.json``); a run that extends nothing is complete."""
    return not (d / BUDGET_NAME).exists() or bool(read_json(d / BUDGET_NAME)["timing_complete"])


def extend(previous: Path, dst: Path) -> None:
    """``dst`` as a copy of ``previous`` without its results (copied to a temp name, then renamed)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(previous, tmp, ignore=shutil.ignore_patterns(*RESULTS, "*.lock"))
    timing = tmp / "timing.json"
    if timing.exists():  # the training seconds carry over (this budget's cost includes them), the evaluation's do not
        write_json(timing, {k: v for k, v in read_json(timing).items() if k.startswith("train_")})
    # a run made before runs recorded their cost has no timing.json: then neither has any budget after it
    write_json(tmp / BUDGET_NAME, {"extends": str(previous), "timing_complete": timing.exists() and timing_complete(previous)})
    tmp.rename(dst)


def row(d: Path) -> dict[str, object]:
    e, g = read_json(d / "eval.json"), read_json(d / "diagnosis.json")
    # where the steps before the run it extends were not timed, the cost is unknown, not the extension's
    t = read_json(d / "timing.json") if (d / "timing.json").exists() and timing_complete(d) else {}
    cfg = read_json(d / "config.json")["config"]
    exc = g["excursions"]
    return {
        "run": str(d), "task": e["task"], "steps": cfg["steps"], "seed": cfg["seed"],
        "norm_reward": e["norm_reward_mean"], "norm_cost": e["norm_cost_mean"], "safe": e["norm_cost_mean"] <= 1.0,
        "episodes": len(e["episodes"]), "over_limit": sum(ep["cost"] > e["cost_limit"] for ep in e["episodes"]),
        "diag_episodes": g["episodes"], "onsets": g["onsets"], "recall_q_k1": g["recall_q"][1] if len(g["recall_q"]) > 1 else None,
        "refiner_eff": g["refiner_effectiveness"], "false_alarm": g["false_alarm_rate"],
        "excursion_mean": sum(exc) / len(exc) if exc else 0.0,
        "train_core_min": float(t.get("train_cpu_s", float("nan"))) / 60,
    }


def report(out: Path, results: Path) -> str:
    dirs = [d for d in sorted(out.glob("*-fast-*")) if (d / "eval.json").exists() and (d / "diagnosis.json").exists()]
    rows = sorted((row(d) for d in dirs), key=lambda r: (str(r["task"]), int(r["steps"])))  # type: ignore[call-overload]
    f = lambda x: "—" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    f1 = lambda x: "—" if x != x else f"{x:.1f}"  # noqa: E731
    md = ["Evaluation (`eval.json`): reward, cost, safe, episodes over the cost limit. Diagnosis (`flrp diagnose`, the same "
          "episodes when its count is the evaluation's): violation onsets, critic recall one step before, refiner effectiveness, "
          "false alarms, mean steps outside per excursion. Train core-min: CPU minutes of training up to this budget.", "",
          "| task | steps | seed | norm. reward | norm. cost | safe | over the limit | diagnosis: episodes | onsets | recall k=1 | refiner eff. | false alarms | excursion | train core-min |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['task']} | {r['steps']} | {r['seed']} | {f(r['norm_reward'])} | {f(r['norm_cost'])} | {'safe' if r['safe'] else 'unsafe'} | "
                  f"{r['over_limit']} of {r['episodes']} | {r['diag_episodes']} | {r['onsets']} | {f(r['recall_q_k1'])} | {f(r['refiner_eff'])} | {f(r['false_alarm'])} | {r['excursion_mean']:.1f} | {f1(r['train_core_min'])} |")
    text = "\n".join(md) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    for d in dirs:  # each row's own figures, beside the table
        complete = timing_complete(d)
        for name in ("eval.json", "diagnosis.md", "timing.json", BUDGET_NAME):
            if (d / name).exists() and (name != "timing.json" or complete):  # a partial sum would mislead
                shutil.copyfile(d / name, results / f"{d.name}-{name}")
    write_text(results / "budget.md", text)
    (results / "budget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="DSRL-format .hdf5 file")
    p.add_argument("--budgets", type=int, nargs="+", default=[20_000, 40_000, 80_000], help="training steps, ascending")
    p.add_argument("--start", default=None, help="an existing fast-preset run of this dataset at the first budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--keep-going", action="store_true", help="train every budget, not only up to the first safe one")
    p.add_argument("--out", default="runs/budget")
    p.add_argument("--results", default="results/flrp-budget")
    p.add_argument("--report", action="store_true", help="only rebuild the table")
    a = p.parse_args(argv)
    out, results = Path(a.out), Path(a.results)
    if not a.report:
        if not a.dataset:
            p.error("--dataset is required (or --report)")
        if a.budgets != sorted(a.budgets):
            p.error("--budgets must be ascending")
        if a.episodes < 1:
            p.error("--episodes must be >= 1 (each budget is judged by its evaluation)")
        if a.start and not (Path(a.start) / "checkpoint.pt").is_file():
            p.error(f"--start {a.start}: no checkpoint.pt there (a run directory of flrp train)")
        stem = Path(a.dataset).stem
        previous = Path(a.start) if a.start else None
        for steps in a.budgets:
            d = run_dir(out, stem, steps, a.seed)
            if not d.exists():
                d.parent.mkdir(parents=True, exist_ok=True)
                if previous is not None:
                    extend(previous, d)
            if not (d / "eval.json").exists():
                code = flrp(["train", "--algo", "flrp", "--dataset", a.dataset, "--out", str(d), "--threads", "1", "--seed", str(a.seed),
                             "--steps", str(steps), "--preset", "fast", "--quiet", "--episodes", str(a.episodes), "--workers", "1"])
                if code:
                    return code
            if not (d / "diagnosis.json").exists() and flrp(["diagnose", str(d), "--threads", "1", "--workers", "1", "--episodes", str(a.episodes)]):
                return 1
            previous = d
            if read_json(d / "eval.json")["norm_cost_mean"] <= 1.0 and not a.keep_going:
                break
    print(report(out, results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
