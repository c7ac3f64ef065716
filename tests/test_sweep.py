"""``flrp sweep`` on a real local Ray instance: run layout, skip-on-rerun, failures, the report.

One Ray instance (2 CPUs) serves the whole module; under ``--dist loadfile`` the module stays on
one xdist worker, so there is one instance per test session. Ray is an optional extra
(``flrp[sweep]``): without it the module is skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

# Keep the test's Ray instance on loopback (Ray reads this once, at import; see flrp.sweep.runner).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from flrp.devices import machine_info  # noqa: E402
from flrp.errors import FlrpError  # noqa: E402
from flrp.sweep.report import collect_runs, summarize, write_report  # noqa: E402
from flrp.sweep.runner import sweep_main  # noqa: E402
from flrp.sweep.spec import RunSpec, SweepSettings, expand, parse_overrides, parse_seeds  # noqa: E402

ALGOS = ("bc-all", "bc-safe")
SEEDS = (0, 1)
TINY = ["--datasets", "toy", "--steps", "30", "--episodes", "2", "--quiet"]
SWEEP = ["--algos", ",".join(ALGOS), "--seeds", *map(str, SEEDS), *TINY, "--", "--hidden", "16"]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # "local": never attach to some other Ray instance on the machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, object_store_memory=100 * 2**20)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def sweep_dir(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert sweep_main(["--out", str(out), *SWEEP]) == 0
    return out


def _evals(out: Path, algo: str) -> list[dict]:
    return [json.loads((out / algo / "toy" / f"seed{s}" / "eval.json").read_text()) for s in SEEDS]


def _table_rows(md: str) -> list[list[str]]:
    lines = md.splitlines()
    start = lines.index("| task | algorithm | seeds | normalized reward ↑ | normalized cost ↓ | safe | core-min |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


# ---------------------------------------------------------------- the real sweep
def test_every_run_has_its_own_directory_and_result(sweep_dir):
    for algo in ALGOS:
        for seed in SEEDS:
            run = sweep_dir / algo / "toy" / f"seed{seed}"
            for name in ("run.json", "model.pt", "checkpoint.pt", "eval.json", "train.log"):
                assert (run / name).exists(), run / name
            meta = json.loads((run / "run.json").read_text())
            assert meta["algo"] == algo and meta["task"] == "ToyHazard"
            assert meta["config"]["seed"] == seed and meta["config"]["steps"] == 30 and meta["config"]["hidden"] == 16
            assert len(json.loads((run / "eval.json").read_text())["episodes"]) == 2
            assert "flrp train --algo" in (run / "train.log").read_text()  # the run's console output
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert manifest["settings"] == {"steps": 30, "episodes": 2, "extra": ["--hidden", "16"]}
    assert sorted(r["dir"] for r in manifest["runs"]) == sorted(f"{a}/toy/seed{s}" for a in ALGOS for s in SEEDS)
    assert not list(sweep_dir.rglob("*.tmp"))


def test_rerun_skips_finished_runs(sweep_dir, capsys):
    models = sorted(sweep_dir.rglob("model.pt"))
    assert len(models) == 4
    before = {p: p.stat().st_mtime_ns for p in models}
    assert sweep_main(["--out", str(sweep_dir), *SWEEP]) == 0
    assert {p: p.stat().st_mtime_ns for p in models} == before  # no run trained again
    assert "0 run(s) finished, 4 already done, 0 failed" in capsys.readouterr().out


def test_a_finished_run_with_another_config_is_refused(sweep_dir, tmp_path, capsys):
    """A finished run trained with another config than the sweep asks for (a preset changed since,
    a run copied in) would be skipped silently and reported under the new name: refused instead,
    naming the run and the field, before anything starts."""
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(sweep_dir, out)
    cfg_path = out / "bc-safe" / "toy" / "seed1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["lr"] = cfg["config"]["lr"] * 2
    cfg_path.write_text(json.dumps(cfg))
    assert sweep_main(["--out", str(out), *SWEEP[:-3], "--dry-run", *SWEEP[-3:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bc-safe/toy/seed1: this finished run was trained with another config (lr=" in err


def test_a_finished_run_from_before_a_preset_changed_is_refused(tmp_path):
    """An old fast-preset run's config.json lacks fields added since (LATER_FIELDS: read as their
    old value): refused against today's fast preset, which changed one of them, accepted against
    the paper preset, which did not."""
    from dataclasses import asdict

    from flrp.sweep.spec import build_jobs, check_finished_configs

    settings = SweepSettings(steps=30, episodes=2)
    for preset, refused in (("fast", True), ("paper", False)):
        specs = expand(["flrp"], ["toy"], [0], parse_overrides([f"preset={preset}"]))
        jobs = build_jobs(specs, tmp_path, settings)
        run = tmp_path / specs[0].rel_dir
        run.mkdir(parents=True)
        config = json.loads(json.dumps(asdict(jobs[specs[0]].config)))
        del config["select_margin"]  # written before the field existed
        (run / "config.json").write_text(json.dumps({"algo": "flrp", "config": config}))
        (run / "eval.json").write_text("{}")
        if refused:
            with pytest.raises(FlrpError, match=r"select_margin=0.0 there, 0.6 now\); select_margin is read only at inference"):
                check_finished_configs(specs, jobs, tmp_path, settings.episodes)
        else:
            check_finished_configs(specs, jobs, tmp_path, settings.episodes)


def test_report_matches_eval_json(sweep_dir):
    for name in ("results.md", "results.csv", "results.png"):
        assert (sweep_dir / name).exists(), name
    assert (sweep_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _table_rows((sweep_dir / "results.md").read_text())
    assert [r[:3] for r in rows] == [["ToyHazard", a, "2"] for a in ALGOS]
    expected = {}
    for algo in ALGOS:
        ev = _evals(sweep_dir, algo)
        rew = np.array([e["norm_reward_mean"] for e in ev])
        cost = np.array([e["norm_cost_mean"] for e in ev])
        expected[algo] = (rew.mean(), rew.std(), cost.mean(), cost.std(), cost.mean() <= 1.0, int((cost > 1.0).sum()))
    best = max((v[0] for v in expected.values() if v[4]), default=None)
    timing = {a: [json.loads((sweep_dir / a / "toy" / f"seed{s}" / "timing.json").read_text()) for s in SEEDS] for a in ALGOS}
    for _task, algo, _, reward, cost, verdict, minutes in rows:
        r_mean, r_std, c_mean, c_std, safe, unsafe_seeds = expected[algo]
        # CPU seconds of training and evaluation, each positive, summed per run, averaged over seeds
        assert all(t[k] > 0 for t in timing[algo] for k in ("train_cpu_s", "eval_cpu_s", "train_wall_s", "eval_wall_s")), timing[algo]
        assert minutes == f"{np.mean([(t['train_cpu_s'] + t['eval_cpu_s']) / 60 for t in timing[algo]]):.0f}"
        assert verdict == ("unsafe" if not safe else f"safe ({unsafe_seeds} of 2 seeds unsafe)" if unsafe_seeds else "safe")
        assert cost == f"{c_mean:.2f} ± {c_std:.2f}"
        plain = f"{r_mean:.2f} ± {r_std:.2f}"
        assert reward == (f"**{plain}**" if safe and r_mean == best else plain)
    with open(sweep_dir / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert sorted((r["algo"], int(r["seed"])) for r in table) == sorted((a, s) for a in ALGOS for s in SEEDS)
    for r in table:
        ev = json.loads((sweep_dir / r["dir"] / "eval.json").read_text())
        assert math.isclose(float(r["norm_reward"]), ev["norm_reward_mean"]) and math.isclose(float(r["norm_cost"]), ev["norm_cost_mean"])
        assert r["safe"] == str(ev["safe"]) and r["task"] == "ToyHazard"
        t = json.loads((sweep_dir / r["dir"] / "timing.json").read_text())
        assert math.isclose(float(r["core_min"]), (t["train_cpu_s"] + t["eval_cpu_s"]) / 60)
        # the run records the machine it trained on: the same seed rounds differently on another processor
        machine = json.loads((sweep_dir / r["dir"] / "run.json").read_text())["machine"]
        assert machine == machine_info(torch.device("cpu"))
        assert r["machine"] == f"{machine['cpu']} {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, numpy {np.__version__}"
    assert "same machine**" not in (sweep_dir / "results.md").read_text()  # one machine: nothing to warn about


def test_report_subcommand_rebuilds_the_report(sweep_dir, capsys, monkeypatch):
    (sweep_dir / "results.md").unlink()
    monkeypatch.chdir(sweep_dir.parent)
    assert sweep_main(["report", sweep_dir.name]) == 0
    assert (sweep_dir / "results.md").exists() and "results.md" in capsys.readouterr().out
    # the directory is named as the command gave it: no machine's absolute path in a committed report
    md = (sweep_dir / "results.md").read_text()
    assert f"evaluated in `{sweep_dir.name}`" in md and str(sweep_dir.parent) not in md


def test_a_failed_run_does_not_stop_the_others(ray_local, tmp_path, capsys):
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"not an hdf5 file")
    out = tmp_path / "sweep"
    code = sweep_main(["--algos", "bc-safe", "--datasets", "toy", str(broken), "--seeds", "0", *TINY[2:], "--out", str(out), "--", "--hidden", "16"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bc-safe/broken/seed0 failed (exit 2" in err and "train.log" in err
    assert (out / "bc-safe" / "toy" / "seed0" / "eval.json").exists()
    assert "flrp: error:" in (out / "bc-safe" / "broken" / "seed0" / "train.log").read_text()
    md = (out / "results.md").read_text()
    assert "## Runs without results (1)" in md and "`bc-safe/broken/seed0`" in md


# ---------------------------------------------------------------- no Ray needed
def test_expand_layout_and_override_grid(tmp_path):
    specs = expand(["bc-all", "flrp"], ["toy"], [0, 1], parse_overrides(["refine_steps=1,3"]))
    dirs = [s.rel_dir.as_posix() for s in specs]
    # The override applies to FLRP only; BC-All runs once per seed, without a tag.
    assert dirs == ["bc-all/toy/seed0", "bc-all/toy/seed1", "flrp/toy/seed0/refine_steps=1", "flrp/toy/seed0/refine_steps=3", "flrp/toy/seed1/refine_steps=1", "flrp/toy/seed1/refine_steps=3"]
    settings = SweepSettings(steps=5, episodes=0, extra=("--hidden", "8"))
    job = specs[2].job(tmp_path, settings)  # typed: no flrp train argv between the sweep and the run
    assert (job.algo, job.config.refine_steps, job.config.hidden, job.config.steps, job.config.seed) == ("flrp", 1, 8, 5, 0)
    assert job.out == str(tmp_path / "flrp/toy/seed0/refine_steps=1") and job.threads == 1 and not job.progress and job.evaluation.episodes == 0
    argv = specs[2].train_argv(tmp_path, settings)  # the same run by hand, as train.log and --dry-run show it
    assert argv[:3] == ["train", "--algo", "flrp"] and {"--refine-steps", "--hidden", "--out"} <= set(argv)
    assert RunSpec.from_dict(specs[3].to_dict()) == specs[3]
    assert parse_seeds(["0,2", "4-5"]) == [0, 2, 4, 5]
    with pytest.raises(FlrpError, match="not a config field"):
        expand(["bc-all"], ["toy"], [0], {"refine_steps": ["1"]})
    with pytest.raises(FlrpError, match="no such file"):
        expand(["bc-all"], [str(tmp_path / "missing.hdf5")], [0])


def test_set_preset_applies_to_algorithms_with_presets(tmp_path):
    specs = expand(["bc-safe", "flrp"], ["toy"], [0], parse_overrides(["preset=fast,paper"]))
    assert [s.rel_dir.as_posix() for s in specs] == ["bc-safe/toy/seed0", "flrp/toy/seed0/preset=fast", "flrp/toy/seed0/preset=paper"]
    from flrp.algos.flrp import FLRP

    plain = SweepSettings(steps=None, episodes=0)
    job = specs[1].job(tmp_path, plain)
    assert job.preset == "fast" and job.config == FLRP.preset_config("fast", seed=0)
    assert specs[1].train_argv(tmp_path, plain)[-2:] != ["--preset", "paper"] and "--preset" not in specs[0].train_argv(tmp_path, plain)
    with pytest.raises(FlrpError, match="'nope' is not a preset of flrp"):
        expand(["flrp"], ["toy"], [0], {"preset": ["nope"]})
    with pytest.raises(FlrpError, match="not a config field"):
        expand(["bc-safe"], ["toy"], [0], {"preset": ["fast"]})


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--set", "refine_steps=three"], r"rejects the run's flags: argument --refine-steps"),
        (["--", "--out", "elsewhere"], r"--out sets 'out' for every run"),
        (["--", "--no-such-flag"], r"unrecognized arguments: --no-such-flag"),
        (["--set", "nope=1"], r"--set nope: not a config field"),
        (["--seeds", "1-0"], r"--seeds: empty range"),
        (["--set", "gamma=2"], r"flrp train --algo flrp \(gamma=2\) rejects the run's flags: --gamma must be in \(0, 1\)"),
        (["--set", "hidden=16,32", "--", "--hidden", "64"], r"--set hidden and --hidden after -- both set 'hidden'; give it once"),
    ],
)
def test_bad_sweep_input_is_one_line_and_starts_nothing(extra, pattern, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["--algos", "flrp", "--datasets", "toy", "--out", str(out), "--dry-run"]
    if extra[0] == "--":
        argv += extra
    elif "--" in extra:
        i = extra.index("--")
        argv = extra[:i] + argv + extra[i:]
    else:
        argv = extra + argv
    assert sweep_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flrp: error:") and re.search(pattern, err), err
    assert not out.exists()


def test_the_sweep_does_not_import_the_cli():
    import subprocess
    import sys

    code = "import sys, flrp.sweep, flrp.sweep.runner; sys.exit('flrp.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_changed_settings_are_refused(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps({"settings": {"steps": 30, "episodes": 2, "extra": []}, "runs": []}))
    assert sweep_main(["--algos", "bc-all", "--datasets", "toy", "--steps", "31", "--episodes", "2", "--out", str(tmp_path), "--dry-run"]) == 2
    assert "holds a sweep run with --steps 30 --episodes 2" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [("{\"settings\": ", r"sweep\.json: not valid JSON \(.*\); fix or delete it"),
                                           ("[1, 2]", r"sweep\.json: not a sweep manifest \(a JSON object")])
def test_a_garbled_manifest_is_a_one_line_error(tmp_path, capsys, text, message):
    (tmp_path / "sweep.json").write_text(text)
    assert sweep_main(["--algos", "bc-all", "--datasets", "toy", "--steps", "30", "--episodes", "2", "--out", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err) and len(err.splitlines()) == 1, err


def test_manifest_updates_wait_for_each_other(tmp_path):
    """Two sweeps started together on one directory (one per core, other datasets): the second's
    read-merge-write of sweep.json waits for the first's, so neither drops the other's runs."""
    import threading

    from filelock import FileLock

    from flrp.sweep.spec import MANIFEST_LOCK_NAME, update_manifest

    settings = SweepSettings(steps=5, episodes=0)
    first, second, third = expand(["bc-all"], ["toy"], [0, 1, 2])
    update_manifest(tmp_path, [first], settings)
    held = FileLock(tmp_path / MANIFEST_LOCK_NAME)
    held.acquire()  # another sweep mid-update
    try:
        writer = threading.Thread(target=update_manifest, args=(tmp_path, [second], settings), daemon=True)
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # waits instead of writing over the other's manifest
        # ... which the other sweep now writes, with its own run: the waiting one must read it afterwards
        doc = json.loads((tmp_path / "sweep.json").read_text())
        doc["runs"].append(third.to_dict())
        (tmp_path / "sweep.json").write_text(json.dumps(doc))
    finally:
        held.release()
    writer.join(timeout=30)
    assert not writer.is_alive()
    runs = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["dir"] for r in runs] == ["bc-all/toy/seed0", "bc-all/toy/seed2", "bc-all/toy/seed1"]
    held.acquire()
    try:
        with pytest.raises(FlrpError, match=r"\.sweep\.json\.lock: (pid \d+|another process) has held the sweep manifest's lock for 0\.2 s"):
            update_manifest(tmp_path, [second], settings, timeout=0.2)
    finally:
        held.release()
    # a refusal inside the lock (other settings) releases it: the next update does not wait
    with pytest.raises(FlrpError, match="holds a sweep run with"):
        update_manifest(tmp_path, [second], SweepSettings(steps=6, episodes=0))
    update_manifest(tmp_path, [second], settings, timeout=0)


def _fake_run(root: Path, rel: str, algo: str, seed: int, reward: float, cost: float) -> None:
    d = root / rel
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"algo": algo, "dataset": "toy", "task": "ToyHazard", "config": {"seed": seed}}))
    (d / "eval.json").write_text(json.dumps({"task": "ToyHazard", "cost_limit": 10.0, "episodes": [{}] * 3, "norm_reward_mean": reward, "norm_cost_mean": cost, "return_mean": 0.0, "cost_mean": 10 * cost, "safe": cost <= 1}))


def test_table_marks_safe_entries_and_bolds_the_best_safe_reward(tmp_path):
    runs = {  # label: [(reward, cost) per seed]
        "a": [(0.9, 1.5), (0.9, 1.3)],  # best reward, unsafe
        "b": [(0.6, 0.5), (0.8, 1.4)],  # mean cost 0.95: safe although one seed is not; best safe reward 0.7
        "c": [(0.5, 0.0), (0.5, 0.2)],  # safe, lower reward
    }
    for algo, seeds in runs.items():
        for seed, (r, c) in enumerate(seeds):
            _fake_run(tmp_path, f"{algo}/toy/seed{seed}", algo, seed, r, c)
    for seed, cpu in enumerate((90.0, 210.0)):  # only "a" has timing: (1.5 + 3.5) / 2 = 2.5 core-minutes per run
        (tmp_path / f"a/toy/seed{seed}/timing.json").write_text(json.dumps({"train_cpu_s": cpu - 30, "eval_cpu_s": 30.0, "train_wall_s": cpu, "eval_wall_s": 40.0}))
    (tmp_path / "sweep.json").write_text(json.dumps({"settings": {}, "runs": [
        *({"dir": f"{a}/toy/seed{s}", "algo": a, "dataset": "toy", "stem": "toy", "seed": s} for a in runs for s in range(2)),
        {"dir": "c/toy/seed2", "algo": "c", "dataset": "toy", "stem": "toy", "seed": 2},  # requested, never ran
    ]}))
    paths = write_report(tmp_path)
    rows = _table_rows(paths["md"].read_text())
    assert rows == [
        ["ToyHazard", "a", "2", "0.90 ± 0.00", "1.40 ± 0.10", "unsafe", "2"],
        ["ToyHazard", "b", "2", "**0.70 ± 0.10**", "0.95 ± 0.45", "safe (1 of 2 seeds unsafe)", "—"],
        ["ToyHazard", "c", "2/3", "0.50 ± 0.00", "0.10 ± 0.10", "safe", "—"],
    ]
    md = paths["md"].read_text()
    # the paper's layout: one cell per algorithm, reward / cost with its marks; c has 2 of 3 seeds
    assert "| task | a | b | c |" in md
    assert "| ToyHazard | 0.90 / 1.40 ✗ | **0.70** / 0.95 † | 0.50 / 0.10 (2/3) |" in md
    assert "`c/toy/seed2`: not started" in md
    groups = summarize(collect_runs(tmp_path))
    assert [g.best for g in groups] == [False, True, False]
    assert [g.unsafe_seeds for g in groups] == [2, 1, 0]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


class _FakeRay:
    """Just enough of Ray for _dispatch: records the resources each task asks for and runs it inline."""

    class exceptions:  # noqa: N801  (mirrors ray.exceptions)
        RayError = RuntimeError

    def __init__(self) -> None:
        self.resources: list[dict] = []

    def remote(self, **resources):
        self.resources.append(resources)

        def wrap(fn):
            class Task:
                @staticmethod
                def remote(*args):
                    return object()  # a reference

            return Task

        return wrap

    def wait(self, pending, num_returns=1):
        return pending[:1], pending[1:]

    def get(self, ref):
        return {"code": 0, "tail": ""}


@pytest.mark.parametrize("gpus, expected", [(0.0, {"num_cpus": 1}), (0.25, {"num_cpus": 1, "num_gpus": 0.25})])
def test_each_run_reserves_one_cpu_and_the_requested_gpu_share(gpus, expected, tmp_path):
    from flrp.sweep.runner import SweepResult, _dispatch
    from flrp.sweep.spec import SweepSettings, build_jobs, expand

    specs = expand(["bc-all"], ["toy"], [0], {})
    fake = _FakeRay()
    result = SweepResult(out=tmp_path, total=1)
    _dispatch(fake, build_jobs(specs, tmp_path, SweepSettings(steps=3, episodes=0)), tmp_path, result, progress=False, gpus_per_run=gpus)
    assert fake.resources == [expected] and result.completed == 1


@pytest.mark.parametrize("value", ["-1", "1.5"])
def test_a_bad_gpu_share_is_one_line(value, tmp_path, capsys):
    assert sweep_main(["--algos", "bc-all", "--datasets", "toy", "--out", str(tmp_path), "--gpus-per-run", value, "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"flrp: error: --gpus-per-run must be a fraction in [0, 1] or a whole number, got {float(value)}"


def test_archived_records_rebuild_the_report_and_outlive_the_sweep_directory(sweep_dir, tmp_path, capsys):
    import shutil

    from flrp.sweep.spec import run_status

    dest = tmp_path / "results"
    assert sweep_main(["report", str(sweep_dir), "--archive", str(dest)]) == 0
    assert "4 run record(s) archived" in capsys.readouterr().out
    # only the small record files travel: no model, checkpoint or log
    assert sorted({p.name for p in dest.rglob("*") if p.is_file() and p.parent != dest}) == ["config.json", "eval.json", "run.json", "timing.json"]
    for name in ("results.csv", "results_stats.csv"):
        assert (dest / name).read_text() == (sweep_dir / name).read_text(), name
    # the machine is lost: a new sweep directory holds only bc-safe's runs; archiving it merges
    second = tmp_path / "second"
    shutil.copytree(sweep_dir, second)
    shutil.rmtree(second / "bc-all")
    ev = json.loads((second / "bc-safe/toy/seed0/eval.json").read_text())
    ev["norm_reward_mean"] = 0.123
    (second / "bc-safe/toy/seed0/eval.json").write_text(json.dumps(ev))
    info = json.loads((second / "bc-safe/toy/seed0/run.json").read_text())
    here = f"{info['machine']['cpu']} {info['machine']['cpu_capability']}, torch {info['machine']['torch']}, numpy {np.__version__}"
    info["machine"].update(cpu="Other CPU", cpu_capability="AVX512")
    del info["machine"]["numpy"]  # a record from before numpy's version was kept: no numpy in its label
    (second / "bc-safe/toy/seed0/run.json").write_text(json.dumps(info))
    assert sweep_main(["report", str(second), "--archive", str(dest)]) == 0
    with open(dest / "results.csv", newline="") as fh:
        rows = {(r["algo"], r["seed"]): float(r["norm_reward"]) for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted((a, str(s)) for a in ALGOS for s in SEEDS)  # bc-all's runs kept from the first machine
    assert rows[("bc-safe", "0")] == 0.123  # a run in both takes the newer sweep directory's record
    # the report says its runs come from two kinds of processor, and how many from each
    assert f"**The runs do not all record the same machine** (3 on {here}; 1 on Other CPU AVX512, torch {info['machine']['torch']})" in (dest / "results.md").read_text()
    # restored into an empty directory, every archived run counts as done: a rerun trains nothing
    restored = tmp_path / "restored"
    shutil.copytree(dest, restored)
    assert all(run_status(restored / a / "toy" / f"seed{s}") == "done" for a in ALGOS for s in SEEDS)


def test_an_archive_of_another_sweep_is_refused(sweep_dir, tmp_path, capsys):
    dest = tmp_path / "results"
    dest.mkdir()
    (dest / "sweep.json").write_text(json.dumps({"settings": SweepSettings(steps=7, episodes=1).to_dict(), "runs": []}))
    assert sweep_main(["report", str(sweep_dir), "--archive", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"flrp: error: --archive {dest}: its sweep.json records a sweep with") and "\n" not in err
    assert sorted(p.name for p in dest.iterdir()) == ["sweep.json"]
    assert sweep_main(["report", str(sweep_dir), "--archive", str(sweep_dir / "archive")]) == 2
    assert "--archive" in capsys.readouterr().err and not (sweep_dir / "archive").exists()
