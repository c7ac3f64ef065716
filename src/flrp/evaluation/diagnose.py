"""``flrp diagnose RUN``: why is a policy unsafe — a late critic, or a refiner that ignores it?

On the evaluation episodes themselves (same seeds, same acting-noise groups as ``flrp eval``, so
the trajectories are the ones ``eval.json`` scored), every step records V_h(s), Q_h(s, a) of the
action taken, Q_h along one fresh base sample's refinement path, and whether any of N base
samples decodes to an action the critic calls feasible (Q_h <= 0). From these:

* **critic recall at k**: of the violation onsets (the first costly step of each run of costly
  steps), the share whose taken action k steps earlier was flagged (Q_h(s, a) > 0). k = 0 is the
  action that caused the violation. Low recall: the critic is late or blind (a critic problem).
* **false alarms**: the share of steps of violation-free episodes whose taken action is flagged.
* **refiner effectiveness**: of the steps where the unrefined sample is flagged but a feasible
  sample exists, the share where the T refinement steps bring Q_h to <= 0. Low effectiveness with
  high recall: the critic warns and the refiner does not act on it (a policy problem).
* **time outside**: lengths of the runs of consecutive costly steps (excursions).
* **the data** (when the run's dataset is at hand): on a sample of logged pairs, the share the
  critic calls feasible (Q_h(s, a) <= 0) by how costly their episode was, and the share of those
  "feasible" pairs that come from episodes with cost above the limit. Eq. 11 weighs pairs, not
  episodes: when most feasible-looking pairs come from unsafe episodes, the flow imitates unsafe
  behaviour and the refiner has to undo it at every step (a data problem, not a critic one).

On the toy task the flags are also scored against the exact answer: an action is truly unsafe
iff full braking from the next state still hits the hazard (``flrp.envs.toy_kernel``).
Written to ``diagnosis.json``, ``diagnosis.md`` and ``diagnosis.png`` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flrp.data.dataset import OfflineDataset
from flrp.data.tasks import COST_LIMIT, TaskSpec
from flrp.errors import FlrpError
from flrp.evaluation.metrics import normalized_cost, normalized_reward
from flrp.evaluation.rollout import _groups, _run_group
from flrp.files import atomic_path, write_json, write_text

__all__ = ["EpisodeTrace", "Diagnosis", "trace_episodes", "summarize", "diagnose", "plot_diagnosis", "data_flags", "critic_values_on_data"]


@dataclass
class EpisodeTrace:
    """Per-step records of one evaluation episode (arrays of length = episode length)."""

    seed: int
    obs: list[np.ndarray] = field(default_factory=list)
    act: list[np.ndarray] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    v_h: list[float] = field(default_factory=list)
    q_h_taken: list[float] = field(default_factory=list)
    q_h_path: list[np.ndarray] = field(default_factory=list)
    any_feasible_prior: list[bool] = field(default_factory=list)
    any_feasible_refined: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in ("cost", "reward", "v_h", "q_h_taken")}
        out.update({k: np.asarray(getattr(self, k), dtype=bool) for k in ("any_feasible_prior", "any_feasible_refined")})
        out.update({k: np.asarray(getattr(self, k)) for k in ("obs", "act", "q_h_path")})
        return out


class _Recorder:
    """Wraps a policy for :func:`flrp.evaluation.rollout.run_episodes` (its ``episode_runner``
    protocol): acts exactly as evaluation does and records the critics' view of every step."""

    def __init__(self, algo: Any, samples: int) -> None:
        self.algo, self.samples = algo, samples
        self.spec = algo._require_built()
        self.gen = torch.Generator(device=algo.device)
        self.recs: list[EpisodeTrace] = []

    def seeded_noise(self, seed: int) -> Any:
        # the acting noise is evaluation's own; the trace's samples get a stream of their own
        self.gen.manual_seed(int(seed) * 7_919 + 17)
        return self.algo.seeded_noise(seed)

    def episode_runner(self, n: int) -> "_Recorder":
        self.recs = [EpisodeTrace(-1) for _ in range(n)]
        return self

    def act(self, obs: np.ndarray, env_ids: np.ndarray, deterministic: bool) -> np.ndarray:
        algo, spec = self.algo, self.spec
        actions = algo.predict(obs, deterministic=deterministic)  # exactly what evaluation does
        s = torch.as_tensor(spec.normalize_obs(obs.astype(np.float32)), device=algo.device)
        a = torch.as_tensor(np.clip(actions / spec.action_bound, -1, 1).astype(np.float32), device=algo.device)
        with algo.eval_mode():
            tr = {k: v.float().cpu().numpy() for k, v in algo.safety_trace(s, a, self.samples, self.gen).items()}
        for j, i in enumerate(env_ids):
            rec = self.recs[i]
            rec.obs.append(obs[j].copy())
            rec.act.append(actions[j].copy())
            for k in ("v_h", "q_h_taken", "any_feasible_prior", "any_feasible_refined"):
                getattr(rec, k).append(tr[k][j].item())
            rec.q_h_path.append(tr["q_h_path"][j])
        return actions

    def observe(self, env_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None:
        for j, i in enumerate(env_ids):
            self.recs[i].reward.append(float(rewards[j]))
            self.recs[i].cost.append(float(costs[j]))


def trace_episodes(algo: Any, task: TaskSpec, seeds: list[int], deterministic: bool | None = None, samples: int = 16) -> list[EpisodeTrace]:
    """Run the evaluation episodes through evaluation's own loop and groups (each with its own
    acting-noise stream, :func:`flrp.evaluation.rollout._run_group`) and record the critics' view
    of every step."""
    if not hasattr(algo, "safety_trace"):
        raise FlrpError(f"flrp diagnose: algorithm '{algo.name}' has no HJ feasibility critics to diagnose (only flrp)")
    if samples < 1:
        raise FlrpError(f"--samples must be >= 1, got {samples}")
    det = algo.eval_deterministic if deterministic is None else deterministic
    recorder = _Recorder(algo, samples)
    traces: list[EpisodeTrace] = []
    for group in _groups(seeds):
        stats = _run_group(recorder, task, group, det)
        for rec, st in zip(recorder.recs, stats):
            rec.seed = st.seed
        traces.extend(recorder.recs)
    return traces


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every maximal run of True in ``mask``."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(d[::2], d[1::2])]


@dataclass
class Diagnosis:
    """The figures of one diagnosis (plain types; ``to_dict`` is JSON-ready)."""

    episodes: int
    horizon: int
    onsets: int
    recall_q: list[float]  # recall_q[k]: share of onsets whose taken action k steps earlier had Q_h > 0
    recall_v: list[float]  # same with V_h(s) > 0
    false_alarm_rate: float  # share of steps of cost-free episodes with Q_h(s, a) > 0
    flagged_steps: int  # steps whose unrefined sample was flagged while a feasible sample existed
    refiner_effectiveness: float  # share of those that refinement brought to Q_h <= 0
    feasible_available_when_flagged: float  # share of steps with the taken action flagged where some refined sample had Q_h <= 0
    excursions: list[int]  # lengths (steps) of runs of consecutive costly steps
    steps_outside_frac: float
    saturated_frac: float  # share of action components with |a| > 0.995 (tanh slope < 0.01: the refiner's gradient through a_bar starves)
    return_mean: float
    cost_mean: float
    norm_reward: float
    norm_cost: float
    verdict: str
    toy: dict[str, float] | None = None
    data: dict[str, float] | None = None  # data_flags() of the run's dataset, when given

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def markdown(self, title: str) -> str:
        ks = [k for k in (0, 1, 2, 5, 10, 20) if k <= self.horizon]
        exc = np.asarray(self.excursions)
        lines = [
            f"# Safety diagnosis: {title}",
            "",
            f"{self.episodes} episodes, normalized reward {self.norm_reward:.3f}, normalized cost {self.norm_cost:.3f} "
            f"(return {self.return_mean:.1f}, cost {self.cost_mean:.1f}).",
            "",
            f"**Verdict**: {self.verdict}",
            "",
            "| figure | value |",
            "|---|---|",
            f"| violation onsets | {self.onsets} |",
        ]
        lines += [f"| critic recall, Q_h(s,a) > 0 at k = {k} steps before | {_fmt(self.recall_q[k])} |" for k in ks]
        lines += [f"| V_h(s) > 0 at k = {k} | {_fmt(self.recall_v[k])} |" for k in ks]
        lines += [
            f"| false alarms (steps of cost-free episodes with Q_h(s,a) > 0) | {_fmt(self.false_alarm_rate)} |",
            f"| refiner effectiveness ({self.flagged_steps} flagged steps with a feasible sample) | {_fmt(self.refiner_effectiveness)} |",
            f"| a feasible refined sample existed when the taken action was flagged | {_fmt(self.feasible_available_when_flagged)} |",
            f"| excursions (runs of costly steps) | {len(exc)}; length mean {_fmt(exc.mean() if len(exc) else float('nan'), 1)}, max {int(exc.max()) if len(exc) else 0} |",
            f"| share of steps with cost | {_fmt(self.steps_outside_frac)} |",
            f"| saturated action components (abs(a) > 0.995 of the bound) | {_fmt(self.saturated_frac)} |",
        ]
        if self.toy:
            lines += [f"| toy, exact kernel: {k} | {_fmt(v)} |" for k, v in self.toy.items()]
        if self.data:
            lines += [f"| data: {k} | {_fmt(v, 0 if k == 'pairs' else 3)} |" for k, v in self.data.items()]
        return "\n".join(lines) + "\n"


def _fmt(x: float, nd: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def summarize(traces: list[EpisodeTrace], task: TaskSpec, horizon: int = 20, cost_limit: float = COST_LIMIT, action_bound: float | None = None) -> Diagnosis:
    """Aggregate per-step traces into the diagnosis figures (see the module docstring).
    ``action_bound``: the actions' bound for the saturation figure (default: the largest |a| seen)."""
    bound_of = action_bound
    hits_q = np.zeros(horizon + 1)
    hits_v = np.zeros(horizon + 1)
    seen = np.zeros(horizon + 1)
    onsets = 0
    fa_num = fa_den = 0
    flagged = fixed = 0
    taken_flagged = taken_flagged_avail = 0
    excursions: list[int] = []
    total_steps = costly_steps = 0
    rets, costs = [], []
    sat_num = sat_den = 0
    for tr in traces:
        a = tr.arrays()
        c = a["cost"] > 0
        q_flag = a["q_h_taken"] > 0
        v_flag = a["v_h"] > 0
        rets.append(a["reward"].sum())
        costs.append(a["cost"].sum())
        total_steps += len(c)
        costly_steps += int(c.sum())
        for start, end in _runs(c):
            excursions.append(end - start)
            onsets += 1
            for k in range(horizon + 1):
                if start - k >= 0:
                    seen[k] += 1
                    hits_q[k] += q_flag[start - k]
                    hits_v[k] += v_flag[start - k]
        if not c.any():
            fa_num += int(q_flag.sum())
            fa_den += len(q_flag)
        path = a["q_h_path"]
        if len(path):
            need = (path[:, 0] > 0) & a["any_feasible_refined"]
            flagged += int(need.sum())
            fixed += int((need & (path[:, -1] <= 0)).sum())
        if len(a["act"]):
            bound = np.abs(a["act"]).max() if bound_of is None else bound_of
            sat_num += int((np.abs(a["act"]) > 0.995 * bound).sum())
            sat_den += a["act"].size
        taken_flagged += int(q_flag.sum())
        taken_flagged_avail += int((q_flag & a["any_feasible_refined"]).sum())
    div = lambda n, d: float(n / d) if d else float("nan")  # noqa: E731
    recall_q = [div(hits_q[k], seen[k]) for k in range(horizon + 1)]
    recall_v = [div(hits_v[k], seen[k]) for k in range(horizon + 1)]
    eff = div(fixed, flagged)
    ret_m, cost_m = float(np.mean(rets)), float(np.mean(costs))
    diag = Diagnosis(
        episodes=len(traces), horizon=horizon, onsets=onsets, recall_q=recall_q, recall_v=recall_v,
        false_alarm_rate=div(fa_num, fa_den), flagged_steps=flagged, refiner_effectiveness=eff,
        feasible_available_when_flagged=div(taken_flagged_avail, taken_flagged), excursions=excursions,
        steps_outside_frac=div(costly_steps, total_steps), saturated_frac=div(sat_num, sat_den), return_mean=ret_m, cost_mean=cost_m,
        norm_reward=float(np.mean([normalized_reward(r, task) for r in rets])),
        norm_cost=float(np.mean([normalized_cost(c, cost_limit) for c in costs])),
        verdict="",
    )
    diag.verdict = _verdict(diag)
    if task.suite == "toy":
        diag.toy = _toy_agreement(traces)
    return diag


def _verdict(d: Diagnosis) -> str:
    if d.onsets == 0:
        return "no violation in these episodes."
    data_part = []
    share = (d.data or {}).get(UNSAFE_SHARE_KEY, float("nan"))
    if np.isfinite(share) and share > 0.5:
        data_part.append(f"the data: {_fmt(share, 2)} of the logged pairs the critic calls feasible come from episodes above the cost limit, "
                         "so the flow mostly imitates unsafe behaviour (a data problem: Eq. 11 weighs pairs, not episodes)")
    seen = [x for x in d.recall_q[1 : min(d.horizon, 5) + 1] if np.isfinite(x)]
    early = float(np.mean(seen)) if seen else d.recall_q[0]
    parts = []
    if not np.isfinite(early) or early < 0.5:
        parts.append(f"the critic is late: the taken action was flagged 1-5 steps before only {_fmt(early)} of {d.onsets} violations (a critic problem: train the critics longer or faster)")
    else:
        parts.append(f"the critic warned: the taken action was flagged 1-5 steps before {_fmt(early)} of {d.onsets} violations")
        if np.isfinite(d.refiner_effectiveness) and d.refiner_effectiveness < 0.5:
            parts.append(f"the refiner did not act on it: refinement fixed only {_fmt(d.refiner_effectiveness)} of the flagged samples although a feasible sample existed (a policy problem)")
        elif np.isfinite(d.feasible_available_when_flagged) and d.feasible_available_when_flagged < 0.5:
            parts.append(f"at most flagged steps no sampled action was feasible ({_fmt(d.feasible_available_when_flagged)}): the state was already lost")
    exc = np.asarray(d.excursions)
    if len(exc):
        parts.append(f"once outside, the policy stayed {exc.mean():.1f} steps on average (max {exc.max()})")
    return "; ".join(parts + data_part) + "."


UNSAFE_SHARE_KEY = "share of the Q_h <= 0 pairs from episodes above the cost limit"


def data_flags(
    q_h: np.ndarray, v_h: np.ndarray, episode_cost: np.ndarray, cost_limit: float = COST_LIMIT, kept: np.ndarray | None = None
) -> dict[str, float]:
    """What the critics say about logged pairs (online Q_h(s, a), V_h(s) and the cost of each
    pair's episode, same length): shares by episode cost, and how much of what the critic calls
    feasible comes from episodes above ``cost_limit``. ``kept``: the pairs a run's flow filter
    (``flow_episode_cost_max``) lets the flow imitate; the headline share counts only those."""
    q_h, v_h, episode_cost = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (q_h, v_h, episode_cost))
    if not len(q_h) == len(v_h) == len(episode_cost) == (len(q_h) if kept is None else len(kept)):
        raise FlrpError(f"data_flags: q_h, v_h, episode_cost (and kept) differ in length ({len(q_h)}, {len(v_h)}, {len(episode_cost)})")
    free, unsafe = episode_cost == 0, episode_cost > cost_limit
    imitated = np.ones(len(q_h), dtype=bool) if kept is None else np.asarray(kept, dtype=bool).reshape(-1)
    feas = (q_h <= 0) & imitated
    share = lambda m: float(m.mean()) if m.size else float("nan")  # noqa: E731
    extra = {} if kept is None else {"share of pairs the run's flow filter keeps": share(imitated)}
    return {
        "pairs": float(len(q_h)),
        **extra,
        "share of pairs from episodes above the cost limit": share(unsafe),
        "V_h(s) > 0 on states of cost-free episodes": share(v_h[free] > 0),
        "Q_h(s,a) <= 0 on pairs of cost-free episodes": share(q_h[free] <= 0),
        "Q_h(s,a) <= 0 on pairs of episodes above the cost limit": share(q_h[unsafe] <= 0),
        UNSAFE_SHARE_KEY: float((feas & unsafe).sum() / feas.sum()) if feas.any() else float("nan"),
    }


@torch.no_grad()
def critic_values_on_data(algo: Any, ds: OfflineDataset, pairs: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices, Q_h(s, a), V_h(s))`` of up to ``pairs`` logged pairs drawn without replacement
    (generator ``seed``), through the model's own observation normalisation."""
    spec = algo._require_built()
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), min(pairs, len(ds)), replace=False))
    s = torch.as_tensor(spec.normalize_obs(ds.observations[idx].astype(np.float32)), device=algo.device)
    a = torch.as_tensor(np.clip(ds.actions[idx] / spec.action_bound, -1, 1).astype(np.float32), device=algo.device)
    with algo.eval_mode():
        q = algo.modules["q_h"](s, a).max(0).values.float().cpu().numpy()
        v = algo.modules["v_h"](s).float().cpu().numpy()
    return idx, q, v


def _toy_agreement(traces: list[EpisodeTrace]) -> dict[str, float]:
    """Q_h(s, a) > 0 against the exact answer: the next state is outside the viability kernel."""
    from flrp.envs.toy import step_dynamics
    from flrp.envs.toy_kernel import feasible_by_braking

    obs = np.concatenate([t.arrays()["obs"] for t in traces if t.obs])
    act = np.concatenate([t.arrays()["act"] for t in traces if t.obs]).reshape(len(obs), -1)[:, 0]
    flag = np.concatenate([t.arrays()["q_h_taken"] for t in traces if t.obs]) > 0
    vflag = np.concatenate([t.arrays()["v_h"] for t in traces if t.obs]) > 0
    x2, v2, _, _ = step_dynamics(obs[:, 0].astype(np.float64), obs[:, 1].astype(np.float64), act.astype(np.float64))
    truth = ~feasible_by_braking(x2, v2)
    vtruth = ~feasible_by_braking(obs[:, 0], obs[:, 1])
    tp = int((flag & truth).sum())
    # exact time to the unavoidable violation: steps of full braking (optimal, see
    # feasible_by_braking) from the next state until the hazard is hit; recall by that time
    ttv = _braking_time_to_violation(x2, v2)
    out = {}
    for lo, hi, name in ((0, 0, "0 (already in the hazard)"), (1, 5, "1-5"), (6, 20, "6-20"), (21, 10**9, "> 20")):
        sel = truth & (ttv >= lo) & (ttv <= hi)
        if sel.any():
            out[f"Q_h flag recall, doomed actions with exact time to violation {name} steps ({int(sel.sum())})"] = float(flag[sel].mean())
    return {
        "steps": float(len(flag)),
        "truly_unsafe_actions": float(truth.sum()),
        "Q_h flag accuracy": float((flag == truth).mean()),
        "Q_h flag recall": float(tp / truth.sum()) if truth.sum() else float("nan"),
        "Q_h flag precision": float(tp / flag.sum()) if flag.sum() else float("nan"),
        "V_h flag accuracy": float((vflag == vtruth).mean()),
        **out,
    }


def _braking_time_to_violation(x: np.ndarray, v: np.ndarray, horizon: int = 200) -> np.ndarray:
    """Steps of full braking from (x, v) until x > X_HAZARD (0 if already there); horizon + 1 if never."""
    from flrp.envs.toy import X_HAZARD, step_dynamics

    t = np.where(x > X_HAZARD, 0, horizon + 1)
    x, v = x.astype(np.float64), v.astype(np.float64)
    for k in range(1, horizon + 1):
        x, v, _, _ = step_dynamics(x, v, -1.0)
        t = np.where((t > horizon) & (x > X_HAZARD + 1e-9), k, t)
    return t


def plot_diagnosis(traces: list[EpisodeTrace], diag: Diagnosis, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ks = np.arange(diag.horizon + 1)
    ax[0].plot(ks, diag.recall_q, "o-", label="Q_h(s, a taken) > 0")
    ax[0].plot(ks, diag.recall_v, "s--", label="V_h(s) > 0")
    ax[0].axhline(diag.false_alarm_rate, color="grey", ls=":", label="false alarms (Q_h, cost-free episodes)")
    ax[0].set(xlabel="steps before the violation onset (k)", ylabel="share of onsets flagged", ylim=(-0.03, 1.03), title=f"critic recall ({diag.onsets} onsets)")
    ax[0].legend(fontsize=8)
    shown = 0
    for tr in traces:
        a = tr.arrays()
        runs = _runs(a["cost"] > 0)
        if not runs or shown >= 6:
            continue
        t0 = runs[0][0]
        t = np.arange(len(a["cost"])) - t0
        keep = (t >= -3 * diag.horizon) & (t <= 2 * diag.horizon)
        line = ax[1].plot(t[keep], a["q_h_taken"][keep], lw=1)[0]
        ax[1].plot(t[keep], a["v_h"][keep], lw=1, ls="--", color=line.get_color())
        costly = keep & (a["cost"] > 0)
        ax[1].scatter(t[costly], a["q_h_taken"][costly], s=6, color=line.get_color())
        shown += 1
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].axvline(0, color="r", lw=0.5)
    ax[1].set(xlabel="step relative to the first violation", ylabel="Q_h taken (solid), V_h (dashed); dots: costly steps", title="critic along violating episodes")
    exc = np.asarray(diag.excursions)
    if len(exc):
        ax[2].hist(exc, bins=min(30, max(5, len(set(exc.tolist())))))
    ax[2].set(xlabel="steps per excursion (consecutive costly steps)", ylabel="count", title=f"time outside: {len(exc)} excursions")
    import textwrap

    fig.suptitle(title + "\n" + "\n".join(textwrap.wrap(diag.verdict, 190)), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def diagnose(
    model: str | Path,
    task: TaskSpec,
    out: str | Path,
    episodes: int = 20,
    seed: int = 10_000,
    deterministic: bool | None = None,
    samples: int = 16,
    horizon: int = 20,
    cost_limit: float | None = None,
    dataset: OfflineDataset | None = None,
) -> Diagnosis:
    """Diagnose the model file on ``episodes`` evaluation episodes; write diagnosis.{json,md,png} to ``out``.
    With the run's ``dataset`` the diagnosis also says what the critics make of the logged data.
    ``cost_limit``: kappa of Eq. 40 (``None``: the model's ``config.cost_limit``)."""
    from flrp.algos.base import Algorithm
    from flrp.algos.flrp import FLRP

    if episodes < 1:
        raise FlrpError(f"--episodes must be >= 1, got {episodes}")
    if horizon < 0:
        raise FlrpError(f"--horizon must be >= 0, got {horizon}")
    algo = Algorithm.load(model, device="cpu")
    spec = algo._require_built()
    cost_limit = algo.config.cost_limit if cost_limit is None else cost_limit
    if dataset is not None and (dataset.obs_dim, dataset.act_dim) != (spec.obs_dim, spec.act_dim):
        raise FlrpError(f"--dataset {dataset.source}: obs/act dims ({dataset.obs_dim}, {dataset.act_dim}) do not match "
                        f"the model's ({spec.obs_dim}, {spec.act_dim})")
    traces = trace_episodes(algo, task, [seed + i for i in range(episodes)], deterministic, samples)
    diag = summarize(traces, task, horizon, cost_limit, float(spec.action_bound))
    if dataset is not None:
        idx, q, v = critic_values_on_data(algo, dataset)
        keep = algo.flow_keep(dataset) if isinstance(algo, FLRP) else None  # the run's own flow filter (None: off)
        diag.data = data_flags(q, v, dataset.episode_costs()[dataset.episode_index()][idx], cost_limit, None if keep is None else keep[idx])
        diag.verdict = _verdict(diag)
    out = Path(out)
    title = f"{algo.name} on {task.name} ({model})"
    write_json(out / "diagnosis.json", {"model": str(model), "task": task.name, "samples": samples, "deterministic": deterministic, **diag.to_dict()})
    write_text(out / "diagnosis.md", diag.markdown(title))
    plot_diagnosis(traces, diag, out / "diagnosis.png", title)
    return diag

