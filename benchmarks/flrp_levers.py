"""Measure FLRP's convergence and recovery levers (issue 11): train one variant on one dataset,
then evaluate it with the safety diagnosis (critic recall, refiner effectiveness, time outside)
for each inference setting. Resumable: a finished training is reused, a killed one resumes.

    python benchmarks/flrp_levers.py --dataset datasets/SafetyBallCircle-v0-80-1103.hdf5 \
        --variant paper --steps 30000 --hidden 128 --out runs/levers

Variants are named sets of FLRPConfig overrides (VARIANTS below); each result row (one per
inference setting) is appended to <out>/levers.jsonl and the table <out>/levers.md is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from flrp.algos import Algorithm  # noqa: E402
from flrp.algos.flrp import FLRP, FLRP_PRESETS  # noqa: E402
from flrp.evaluation.diagnose import plot_diagnosis, summarize, trace_episodes  # noqa: E402
from flrp.files import write_json, write_text  # noqa: E402
from flrp.training.datasets import resolve_dataset  # noqa: E402

FAST = {k: v for k, v in FLRP_PRESETS["fast"].items() if k not in ("steps", "hidden")}
VARIANTS: dict[str, dict[str, object]] = {
    "paper": {},
    "tau": {"tau": 0.005, "hj_next_value": "online"},
    "tau+phased": {"tau": 0.005, "hj_next_value": "online", "critic_warmup_steps": 10_000},
    "tau+phased+fisor": {"tau": 0.005, "hj_next_value": "online", "critic_warmup_steps": 10_000, "infeasible_weighting": "fisor"},
    "tau+phased+warm": {"tau": 0.005, "hj_next_value": "online", "critic_warmup_steps": 10_000, "hj_warm_start_steps": 5_000},
    "tau+g0.95": {"tau": 0.005, "hj_next_value": "online", "feasibility_gamma": 0.95},
    "tau+g0.95+fisor+rec": {"tau": 0.005, "hj_next_value": "online", "feasibility_gamma": 0.95, "infeasible_weighting": "fisor", "recovery": "cost"},
    "tau+fisor+rec": {"tau": 0.005, "hj_next_value": "online", "infeasible_weighting": "fisor", "recovery": "cost"},
    "rec+fisor": {"recovery": "cost", "infeasible_weighting": "fisor"},
    "fast": FAST,
    # Reversed expectile of V_h (Table 5: 0.9): how many of the logged actions at a state must be
    # safe before V_h < 0 (with h in {-1, +25}: > 74 % at 0.9, > 44 % at 0.97, > 20 % at 0.99).
    "fast+e0.97": {**FAST, "expectile_feasibility": 0.97},
    "fast+e0.99": {**FAST, "expectile_feasibility": 0.99},
    # The flow imitates only episodes with cost <= 10 (BC-Safe's filter; the critics see all data).
    "fast+safe-episodes": {**FAST, "flow_episode_cost_max": 10.0},
    # The same filter at feasible states only (V_h <= 0): the ways back stay from every episode.
    "fast+safe-episodes-feasible": {**FAST, "flow_episode_cost_max": 10.0, "flow_episode_filter": "feasible-states"},
    # Pairs whose episode's remaining cost is <= 10 (keeps the ways back of switch episodes).
    "fast+cost-to-go": {**FAST, "flow_episode_cost_max": 10.0, "flow_episode_filter": "cost-to-go"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--task", default=None)
    p.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--select", type=int, nargs="+", default=[1, 16], help="inference select_samples settings to evaluate")
    p.add_argument("--out", default="runs/levers")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ds, task = resolve_dataset(a.dataset, a.task)
    assert task is not None
    cfg = FLRP.Config(**{**VARIANTS[a.variant], "hidden": a.hidden, "seed": a.seed, "steps": a.steps})
    run = Path(a.out) / task.name / f"{a.variant}-h{a.hidden}-s{a.steps}-seed{a.seed}"
    t0 = time.time()
    if not (run / "model.pt").exists():
        FLRP(cfg, device="cpu").fit(ds, run_dir=run, progress=False, log_every=500)
    train_s = time.time() - t0
    base = Algorithm.load(run / "model.pt", device="cpu")
    rows = []
    for n in a.select:
        t1 = time.time()
        base.config = base.config.replace(select_samples=n)
        traces = trace_episodes(base, task, [10_000 + i for i in range(a.episodes)], None, 16)
        d = summarize(traces, task, 20, action_bound=float(base.spec.action_bound))
        tag = f"select{n}"
        write_json(run / f"diagnosis-{tag}.json", d.to_dict())
        write_text(run / f"diagnosis-{tag}.md", d.markdown(f"{a.variant} {tag} on {task.name}"))
        plot_diagnosis(traces, d, run / f"diagnosis-{tag}.png", f"{a.variant} {tag} on {task.name}")
        row = {
            "task": task.name, "variant": a.variant, "hidden": a.hidden, "steps": a.steps, "seed": a.seed, "select": n,
            "norm_reward": d.norm_reward, "norm_cost": d.norm_cost, "return": d.return_mean, "cost": d.cost_mean,
            "onsets": d.onsets, "recall_q_k1": d.recall_q[1] if d.horizon >= 1 else None,
            "refiner_eff": d.refiner_effectiveness, "false_alarm": d.false_alarm_rate,
            "excursion_mean": float(sum(d.excursions) / len(d.excursions)) if d.excursions else 0.0,
            "saturated": d.saturated_frac,
            "train_s": round(train_s, 1), "eval_s": round(time.time() - t1, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(a.out)
    with open(out / "levers.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    _table(out)
    return 0


def _table(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "levers.jsonl").read_text().splitlines() if line.strip()]
    md = ["| task | variant | hidden | steps | seed | select | norm. reward | norm. cost | onsets | recall k=1 | refiner eff. | false alarms | excursion | train s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "—" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    for r in rows:
        md.append(f"| {r['task']} | {r['variant']} | {r['hidden']} | {r['steps']} | {r['seed']} | {r['select']} | {f(r['norm_reward'])} | "
                  f"{f(r['norm_cost'])} | {r['onsets']} | {f(r['recall_q_k1'])} | {f(r['refiner_eff'])} | {f(r['false_alarm'])} | {r['excursion_mean']:.1f} | {r['train_s']} |")
    write_text(out / "levers.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
