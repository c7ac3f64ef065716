"""The sweep report's statistics (issue 14): per-task bootstrap intervals over seeds and episodes,
aggregates across tasks and probabilities of improvement, with rliable. No Ray needed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from flrp.data.tasks import get_task
from flrp.evaluation.metrics import normalized_cost, normalized_reward
from flrp.sweep.report import _aggregates, _statistics_figure, collect_runs, interval_statistics, probability_of_improvement, write_report

rliable = pytest.importorskip("rliable")
from rliable import metrics as rly_metrics  # noqa: E402

REPS = 500



def fake_run(root: Path, algo: str, seed: int, rewards: list[float], costs: list[float], dataset: str = "toy", task: str = "ToyHazard") -> None:
    """A run whose eval.json holds these normalized per-episode scores (cost limit 10)."""
    t = get_task(task)
    rets = [t.min_reward + r * (t.max_reward - t.min_reward) for r in rewards]
    raw_costs = [10.0 * c for c in costs]
    d = root / algo / dataset / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"algo": algo, "dataset": dataset, "task": task, "config": {"seed": seed}}))
    nr, nc = normalized_reward(np.array(rets), t), normalized_cost(np.array(raw_costs), 10.0)
    (d / "eval.json").write_text(json.dumps({
        "task": task, "cost_limit": 10.0,
        "episodes": [{"seed": i, "ret": r, "cost": c, "length": 100} for i, (r, c) in enumerate(zip(rets, raw_costs))],
        "norm_reward_mean": float(nr.mean()), "norm_cost_mean": float(nc.mean()),
        "return_mean": float(np.mean(rets)), "cost_mean": float(np.mean(raw_costs)), "safe": bool(nc.mean() <= 1),
    }))


def test_episode_scores_are_read_and_match_the_run_means(tmp_path):
    fake_run(tmp_path, "a", 0, [0.1, 0.3, 0.8], [0.0, 1.0, 2.0])
    (rec,) = collect_runs(tmp_path)
    np.testing.assert_allclose(rec.ep_norm_reward, [0.1, 0.3, 0.8], atol=1e-12)
    np.testing.assert_allclose(rec.ep_norm_cost, [0.0, 1.0, 2.0], atol=1e-12)
    assert np.mean(rec.ep_norm_reward) == pytest.approx(rec.norm_reward)


def test_task_interval_resamples_seeds_and_episodes(tmp_path):
    """Two levels: seeds that differ give a wide interval even though each seed's episodes agree
    (an episode-only bootstrap would give a point); identical seeds with varied episodes give a
    non-empty interval (a seed-only bootstrap would give a point)."""
    for seed, level in enumerate((0.2, 0.5, 0.8)):
        fake_run(tmp_path, "seeds-differ", seed, [level] * 5, [level] * 5)
        fake_run(tmp_path, "episodes-differ", seed, [0.0, 0.25, 0.5, 0.75, 1.0], [0.5] * 5)
    stats = interval_statistics(collect_runs(tmp_path), reps=REPS)
    by = {t.label: t for t in stats.per_task}
    seeds = by["seeds-differ"]
    assert (seeds.seeds, seeds.episodes) == (3, 5)
    assert seeds.reward.estimate == pytest.approx(0.5)
    assert seeds.reward.low <= 0.3 and seeds.reward.high >= 0.7
    eps = by["episodes-differ"]
    assert eps.reward.estimate == pytest.approx(0.5) and eps.reward.high - eps.reward.low > 0.2
    assert eps.cost.low == pytest.approx(0.5) and eps.cost.high == pytest.approx(0.5)


def test_unequal_episode_counts_fall_back_to_the_seeds_means(tmp_path):
    fake_run(tmp_path, "a", 0, [0.2, 0.2], [0.0, 0.0])
    fake_run(tmp_path, "a", 1, [0.6, 0.6, 0.6], [0.0, 0.0, 0.0])
    (t,) = interval_statistics(collect_runs(tmp_path), reps=REPS).per_task
    assert t.episodes == 0 and t.reward.estimate == pytest.approx(0.4)
    assert t.reward.low == pytest.approx(0.2) and t.reward.high == pytest.approx(0.6)


def test_probability_of_improvement_equals_rliables():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(3, 5)).astype(float)  # ties on purpose
    y = rng.integers(0, 4, size=(4, 5)).astype(float)
    ours = probability_of_improvement(np.stack([x, -x], -1), np.stack([y, -y], -1))
    assert ours[0] == pytest.approx(rly_metrics.probability_of_improvement(x, y))
    assert ours[1] == pytest.approx(rly_metrics.probability_of_improvement(-x, -y))
    same = probability_of_improvement(x[..., None], x[..., None])
    assert same[0] == pytest.approx(0.5)


def two_task_sweep(root: Path) -> None:
    """Algorithms 'good' (higher reward, lower cost on both tasks), 'bad', and 'partial' (one task)."""
    for seed in range(3):
        for dataset in ("toy", "toy2"):
            shift = 0.1 * seed + (0.05 if dataset == "toy2" else 0.0)
            fake_run(root, "good", seed, [0.7 + shift] * 4, [0.2 + shift] * 4, dataset=dataset)
            fake_run(root, "bad", seed, [0.2 + shift] * 4, [1.5 + shift] * 4, dataset=dataset)
        fake_run(root, "partial", seed, [0.9] * 4, [0.0] * 4)


def test_aggregates_and_improvement(tmp_path):
    two_task_sweep(tmp_path)
    records = collect_runs(tmp_path)
    stats = interval_statistics(records, reps=REPS)
    assert stats.tasks == ["ToyHazard (toy)", "ToyHazard (toy2)"] and stats.left_out == {"partial": 1}
    agg = {a.label: a for a in stats.aggregates}
    assert set(agg) == {"good", "bad"} and agg["good"].seeds == 3 and agg["good"].tasks == 2
    good = np.array([r.norm_reward for r in records if r.algo == "good"])
    assert agg["good"].reward_mean.estimate == pytest.approx(good.mean())
    assert agg["good"].reward_iqm.estimate == pytest.approx(sps.trim_mean(good, 0.25))
    scores = np.random.default_rng(1).normal(size=(3, 4, 2))  # the aggregates are rliable's
    np.testing.assert_allclose(_aggregates(scores), [rly_metrics.aggregate_mean(scores[..., 0]), rly_metrics.aggregate_iqm(scores[..., 0]),
                                                         rly_metrics.aggregate_mean(scores[..., 1]), rly_metrics.aggregate_iqm(scores[..., 1])])
    assert agg["good"].reward_mean.low <= good.mean() <= agg["good"].reward_mean.high
    assert (agg["good"].safe_tasks, agg["bad"].safe_tasks) == (2, 0)
    (imp,) = stats.improvements  # pairs in the sweep's order of algorithms (here: path order)
    assert (imp.x, imp.y) == ("bad", "good")
    for p in (imp.reward, imp.cost):  # good beats bad on every seed of every task
        assert (p.estimate, p.low, p.high) == (0.0, 0.0, 0.0)


def test_report_files_and_reproducibility(tmp_path):
    two_task_sweep(tmp_path)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    paths = write_report(tmp_path, reps=200)
    assert np.array_equal(np.random.get_state()[1], before)  # the global generator is left alone
    assert paths["stats_png"].read_bytes()[:4] == b"\x89PNG"
    first = paths["stats_csv"].read_text()
    assert write_report(tmp_path, reps=200)["stats_csv"].read_text() == first  # same numbers on a rerun
    rows = list(csv.DictReader(first.splitlines()))
    assert {r["scope"] for r in rows} == {"task", "aggregate", "improvement"}
    task_rows = [r for r in rows if r["scope"] == "task"]
    assert len(task_rows) == 2 * 5  # 5 (task, algorithm) groups x reward and cost
    md = paths["md"].read_text()
    for heading in ("## 95 % bootstrap confidence intervals", "## Aggregate over tasks", "## Probability of improvement"):
        assert heading in md
    assert "Not in the aggregate (results on fewer tasks): partial (1 of 2)." in md
    good = next(r for r in rows if r["scope"] == "aggregate" and r["algorithm"] == "good" and r["metric"] == "norm_reward_mean")
    assert f"{float(good['estimate']):.2f} [{float(good['ci_low']):.2f}, {float(good['ci_high']):.2f}]" in md
    # The original outputs are still there, results.csv without the per-episode scores.
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert "ep_norm" not in header and "norm_reward" in header
    assert (tmp_path / "results.png").exists()


def test_statistics_figure_panels_and_names_do_not_overlap(tmp_path):
    """Long labels (a sweep's ``algo [key=value,...]``, and the pairs built from them) once took the
    whole width of each panel, squeezing the plots to nothing and writing over the next column."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    for seed in range(2):
        for dataset in ("toy", "toy2"):
            for k, algo in enumerate(("flrp-preset-fast-refine-steps-1", "flrp-preset-fast-refine-steps-5", "flrp-preset-fast-feasibility-cost")):
                fake_run(tmp_path, algo, seed, [0.3 + 0.1 * k + 0.01 * seed] * 3, [0.1 * k] * 3, dataset=dataset)
    fig = _statistics_figure(interval_statistics(collect_runs(tmp_path), reps=100))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 6  # reward, cost, pairs: mean/IQM or reward/cost side by side
        boxes = [ax.get_tightbbox(renderer) for ax in axes]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                inter = Bbox.intersection(boxes[i], boxes[j])
                assert inter is None or inter.width * inter.height < 1.0, (axes[i].get_xlabel(), axes[j].get_xlabel())
        for ax in axes:
            left = ax.get_subplotspec().colspan.start == 0
            names = [t.get_text() for t in ax.get_yticklabels()]
            assert all(names) if left else not any(names)
            assert ax.get_window_extent(renderer).width > 0.25 * fig.bbox.width / 2  # each plot keeps its share
    finally:
        plt.close(fig)


def test_report_without_rliable_says_so(tmp_path, monkeypatch):
    fake_run(tmp_path, "a", 0, [0.5], [0.5])
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable -> ImportError
    paths = write_report(tmp_path, reps=REPS)
    assert "stats_csv" not in paths and 'need rliable: pip install "flrp[sweep]"' in paths["md"].read_text()
