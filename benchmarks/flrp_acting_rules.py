"""Re-evaluate a trained FLRP model under other acting rules, without retraining (issue 11):
which candidate of N refined samples is kept, and how wide the base noise u_0 ~ N(0, sigma^2 I)
is drawn. Separates "the policy's samples are unsafe" from "the critics pick badly among them".

    python benchmarks/flrp_acting_rules.py --model RUN/model.pt --dataset FILE.hdf5 \
        --rules one flrp maxqr minqh minqc --sigma 1 0.5 --out results/flrp-levers/acting-rules

Rules over N = --samples candidates (one-sample rules ignore N):
  one    the paper's protocol: a single u_0, refined and decoded
  prior  a single u_0, not refined (T = 0): the prior flow and decoder alone, i.e. the safety-
         weighted generative model as a behaviour-cloning policy, without the refiner or critics
         (with --sigma 0: the prior's mode u_0 = 0)
  mode   the prior's mode (u_0 = 0, not refined) when Q_h <= -margin there, else rule flrp over
         the N refined candidates (the refiner as a fallback only)
  priorsel  rule flrp over the prior's mode and N - 1 unrefined samples (selection without refiner)
  flrp   select_candidates (highest Q_r among Q_h <= 0, else the lowest Q_c / Q_h): the fast preset;
         --margin m counts a candidate feasible only if Q_h <= -m (FLRPConfig.select_margin), --qc-max d
         only if also Q_c <= d (the recovery critic as a second gate)
  maxqr  highest Q_r, feasibility ignored
  minqh  lowest Q_h
  minqc  lowest Q_c (recovery critic; needs a model trained with recovery="cost")
Rows are appended to <out>.jsonl and <out>.md is rebuilt; same evaluation seeds as flrp eval.

    python benchmarks/flrp_acting_rules.py --summary results/flrp-levers/margin

writes one table of every <name>.jsonl in that directory, a column per rule (summary.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from flrp.algos import Algorithm  # noqa: E402
from flrp.algos.flrp import select_candidates  # noqa: E402
from flrp.evaluation.diagnose import summarize, trace_episodes  # noqa: E402
from flrp.files import write_text  # noqa: E402
from flrp.training.datasets import resolve_dataset  # noqa: E402

RULES = ("one", "prior", "mode", "priorsel", "flrp", "maxqr", "minqh", "minqc")


def make_act(algo, rule: str, sigma: float, samples: int, margin: float = 0.0, qc_max: float = float("inf"), tiered: bool = False):  # type: ignore[no-untyped-def]
    """An ``act`` for ``algo`` that draws u_0 ~ N(0, sigma^2 I) and keeps a candidate by ``rule``."""

    def act(obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        n = 1 if rule in ("one", "prior") else samples
        s = obs.repeat(n, 1)
        u0 = sigma * algo._base_noise(s, deterministic)
        if n == 1:
            return algo.decode_base(s, u0, steps=0 if rule == "prior" else None)
        B = obs.shape[0]
        rows = torch.arange(B, device=obs.device)
        if rule == "priorsel":
            u0[:B] = 0.0  # candidate 0: the prior's mode
            a = algo.decode_base(s, u0, steps=0)
            q_h = algo.modules["q_h"](s, a).max(0).values.view(n, B)
            q_r = algo.modules["q_r"](s, a).min(0).values.view(n, B)
            return a.view(n, B, -1)[select_candidates(q_h, q_r, None, margin), rows]
        a, q_h, q_r, q_c = algo.score_candidates(obs, u0)
        if rule == "mode":
            a0 = algo.decode_base(obs, torch.zeros_like(u0[:B]), steps=0)
            ok = algo.modules["q_h"](obs, a0).max(0).values.view(B) <= -margin
            pick = a[select_candidates(q_h, q_r, q_c, margin), rows]
            return torch.where(ok[:, None], a0, pick)
        if rule == "flrp":
            gate = q_h  # candidates over the Q_c gate count as infeasible: Q_h raised above -margin
            if q_c is not None and qc_max != float("inf"):
                gate = torch.where(q_c <= qc_max, q_h, q_h.clamp(min=1e-6))
            idx = select_candidates(gate, q_r, q_c, margin, tiered)
        elif rule == "maxqr":
            idx = q_r.argmax(0)
        elif rule == "minqh":
            idx = q_h.argmin(0)
        else:
            if q_c is None:
                raise SystemExit("flrp_acting_rules: rule minqc needs a model trained with recovery='cost'")
            idx = q_c.argmin(0)
        return a[idx, torch.arange(obs.shape[0], device=obs.device)]

    return act


def summary(folder: Path) -> Path:
    """One markdown table over the folder's .jsonl files: reward / cost per rule."""
    runs = {f.stem: [json.loads(line) for line in f.read_text().splitlines() if line.strip()] for f in sorted(folder.glob("*.jsonl"))}
    label = lambda r: f"{r['rule']} (σ {r['sigma']:g})"  # noqa: E731
    rules = sorted({label(r) for rows in runs.values() for r in rows}, key=lambda x: (len(x), x))
    md = ["normalized reward / normalized cost (**bold**: unsafe, cost > 1) over the evaluation's own episodes; one row per model",
          "", "| model | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for name, rows in runs.items():
        cell = {label(r): r for r in rows}
        md.append(f"| {name} | " + " | ".join(
            (f"{c['norm_reward']:.3f} / " + (f"**{c['norm_cost']:.2f}**" if c["norm_cost"] > 1 else f"{c['norm_cost']:.2f}")) if (c := cell.get(k)) else "—"
            for k in rules) + " |")
    md += _seed_means(runs, rules, label)
    out = folder / "summary.md"
    write_text(out, "\n".join(md) + "\n")
    return out


def _seed_means(runs: dict[str, list[dict]], rules: list[str], label) -> list[str]:  # type: ignore[no-untyped-def]
    """Rows ``<name>-seedK`` grouped by ``<name>``: mean reward / mean cost over the seeds with that
    rule (the seed count in brackets), and ✗ when any one seed is unsafe."""
    groups: dict[str, list[dict[str, dict]]] = {}
    for name, rows in runs.items():
        base, sep, seed = name.rpartition("-seed")
        if sep and seed.isdigit():
            groups.setdefault(base, []).append({label(r): r for r in rows})
    if not groups:
        return []
    md = ["", "Mean over seeds (reward / cost; [n] seeds; ✗: some seed's cost > 1)", "",
          "| model | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for base, seeds in groups.items():
        cells = []
        for k in rules:
            got = [c[k] for c in seeds if k in c]
            if not got:
                cells.append("—")
                continue
            rew = sum(c["norm_reward"] for c in got) / len(got)
            cost = sum(c["norm_cost"] for c in got) / len(got)
            cells.append(f"{rew:.3f} / {cost:.2f} [{len(got)}]" + (" ✗" if any(c["norm_cost"] > 1 for c in got) else ""))
        md.append(f"| {base} | " + " | ".join(cells) + " |")
    return md


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--summary"] and len(argv) == 2:
        print(summary(Path(argv[1])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="the model's dataset (for its task)")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--sigma", type=float, nargs="+", default=[1.0], help="base-noise scales (1 = the paper's N(0, I))")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--margin", type=float, nargs="+", default=None,
                   help="rule flrp: feasible iff Q_h <= -margin (default: the model's own select_margin)")
    p.add_argument("--tiered", action="store_true", help="rule flrp: when none clears the margin, the best Q_r with Q_h <= 0 before the fallback")
    p.add_argument("--qc-max", type=float, nargs="+", default=[float("inf")], help="rule flrp: and Q_c <= this (inf = no gate)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--out", default="results/flrp-levers/acting-rules")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    _, task = resolve_dataset(a.dataset, None)
    assert task is not None
    algo = Algorithm.load(a.model, device="cpu")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    own = float(getattr(algo.config, "select_margin", 0.0))
    variants = [(rule, m, d) for rule in a.rules for m in (a.margin or [own] if rule in ("flrp", "mode", "priorsel") else [own])
                for d in (a.qc_max if rule == "flrp" else [float("inf")])]
    for sigma in a.sigma:
        for rule, margin, qc_max in variants:
            algo.act = make_act(algo, rule, sigma, a.samples, margin, qc_max, a.tiered)
            traces = trace_episodes(algo, task, [10_000 + i for i in range(a.episodes)], False, 16)
            d = summarize(traces, task, 20, action_bound=float(algo.spec.action_bound))
            lengths = sorted(len(t.cost) for t in traces)
            name = rule if rule not in ("flrp", "mode", "priorsel") else f"{rule} margin {margin:g}"
            row = {"task": task.name, "model": a.model, "rule": name + (" tiered" if a.tiered and rule == "flrp" else "")
                   + ("" if qc_max == float("inf") else f" Q_c<={qc_max:g}"),
                   "sigma": sigma, "samples": 1 if rule in ("one", "prior") else a.samples,
                   "episodes": a.episodes, "norm_reward": d.norm_reward, "norm_cost": d.norm_cost, "return": d.return_mean,
                   "false_alarm": d.false_alarm_rate, "len_min": lengths[0], "len_median": lengths[len(lengths) // 2],
                   "max_len": task.max_episode_steps}
            print(json.dumps(row), flush=True)
            with open(out.with_suffix(".jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
    _table(out)
    return 0


def _table(out: Path) -> None:
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines() if line.strip()]
    md = ["| task | model | rule | σ | candidates | episodes | norm. reward | norm. cost | return | episode length min / median (of max) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['task']} | `{r['model']}` | {r['rule']} | {r['sigma']} | {r['samples']} | {r['episodes']} | {r['norm_reward']:.3f} | "
                  f"{r['norm_cost']:.2f} | {r['return']:.1f} | {r['len_min']} / {r['len_median']} ({r['max_len']}) |")
    write_text(out.with_suffix(".md"), "\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
