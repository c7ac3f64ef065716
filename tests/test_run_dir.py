"""The run-directory contract (README "Run directories", flrp.rundir): lock, no silent overwrite,
logs that match the weights, stale temp files cleaned, file-system failures as one line (issue 12)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import flrp.files
from flrp.algos import FLRP, FLRPConfig
from flrp.cli import main
from flrp.errors import FlrpError
from flrp.metrics_log import MetricsLogger
from flrp.rundir import run_lock

FAST = ["--hidden", "16", "--batch-size", "64", "--prior-layers", "2", "--posterior-layers", "1", "--quiet"]
TINY = dict(hidden=16, batch_size=32, prior_layers=2, posterior_layers=1)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--dataset", "toy", "--steps", "6", "--episodes", "0", "--log-every", "1", "--checkpoint-every", "3", "--out", str(out), *FAST, *extra])


def _err(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flrp: error:"), err
    assert re.search(pattern, err), err
    return err


def _steps(run: Path, name: str = "metrics.jsonl") -> list[int]:
    return [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]


# ---------------------------------------------------------------- one writer
def test_second_run_on_a_locked_directory_fails_at_once(tmp_path, capsys, dataset):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom flrp.rundir import run_lock\nwith run_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        assert _train(run) == 2
        _err(capsys, rf"{re.escape(str(run / '.lock'))}: the run directory is in use by pid {holder.pid}")
        assert main(["eval", str(run), "--task", "ToyHazard"]) == 2  # no model yet: one line either way
        capsys.readouterr()
        with pytest.raises(FlrpError, match=r"in use by pid"):
            FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=2, run_dir=run, progress=False)
        assert time.time() - t0 < 30
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the loser wrote nothing
    finally:
        holder.kill()
        holder.wait()
    assert _train(run) == 0  # a dead holder's lock is free again


def test_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path / "r"):
        with run_lock(tmp_path / "r"):
            pass
        assert (tmp_path / "r" / ".lock").read_text().split()[0] == str(os.getpid())


# ---------------------------------------------------------------- nothing overwritten, nothing mixed
def test_finished_model_without_checkpoint_needs_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    (run / "checkpoint.pt").unlink()
    model = (run / "model.pt").read_bytes()
    metrics = (run / "metrics.jsonl").read_bytes()
    assert _train(run, "--steps", "3") == 2
    _err(capsys, r"model\.pt: the run directory holds a trained model and no checkpoint to resume; pass --overwrite")
    assert (run / "model.pt").read_bytes() == model and (run / "metrics.jsonl").read_bytes() == metrics
    assert _train(run, "--no-resume") == 2  # --no-resume alone does not replace it either
    capsys.readouterr()
    assert _train(run, "--steps", "3", "--overwrite") == 0
    assert (run / "model.pt.old-1").read_bytes() == model and (run / "metrics.jsonl.old-1").read_bytes() == metrics
    assert _steps(run) == [1, 2, 3]
    assert json.loads((run / "run.json").read_text())["config"]["steps"] == 3


def test_fresh_start_moves_an_old_log_aside(tmp_path, dataset):
    run = tmp_path / "run"
    # a run killed before its first checkpoint: a log, no checkpoint, no model
    with pytest.raises(KeyboardInterrupt):
        FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=run, log_every=1, checkpoint_every=100, progress=False, callback=_interrupt_at(4))
    assert _steps(run) == [1, 2, 3, 4] and not (run / "checkpoint.pt").exists()
    FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=5, run_dir=run, log_every=1, progress=False)
    assert _steps(run) == [1, 2, 3, 4, 5]  # not appended to the old rows
    assert _steps(run, "metrics.jsonl.old-1") == [1, 2, 3, 4]
    # a second fresh start picks the next free suffix
    (run / "checkpoint.pt").unlink()
    FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=2, run_dir=run, log_every=1, progress=False, overwrite=True)
    assert _steps(run) == [1, 2] and (run / "model.pt.old-2").exists() and _steps(run, "metrics.jsonl.old-2") == [1, 2, 3, 4, 5]


def _interrupt_at(step: int):
    def cb(algo, s, row):
        if s == step:
            raise KeyboardInterrupt

    return cb


def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path, dataset):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=run, log_every=1, checkpoint_every=3, progress=False, callback=_interrupt_at(5))
    assert _steps(run) == [1, 2, 3, 4, 5]
    ref = FLRP(FLRPConfig(**TINY), device="cpu")
    ref.fit(dataset, steps=10, run_dir=tmp_path / "ref", log_every=1, checkpoint_every=3, progress=False)
    FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=run, log_every=1, checkpoint_every=3, progress=False)
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert (run / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    assert (run / "model.pt").read_bytes() == (tmp_path / "ref" / "model.pt").read_bytes()


def test_a_slow_run_checkpoints_by_wall_time_and_resumes_bitwise(tmp_path, dataset, monkeypatch):
    import types

    import flrp.algos.base as base

    clock = [0.0]  # minutes; each step "takes" 4 of them, so the 10-minute trigger fires at step 3
    monkeypatch.setattr(base, "time", types.SimpleNamespace(monotonic=lambda: 60.0 * clock[0]))

    def slow(stop: int):
        def cb(algo, s, row):
            clock[0] += 4.0
            if s == stop:
                raise KeyboardInterrupt
        return cb

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=run, log_every=1, checkpoint_every=100, progress=False, callback=slow(5))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3  # no step multiple of 100 was reached
    with pytest.raises(KeyboardInterrupt):  # the same kill with a 30-minute trigger leaves nothing to resume
        FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=tmp_path / "late", log_every=1, checkpoint_every=100, checkpoint_minutes=30.0, progress=False, callback=slow(5))
    assert not (tmp_path / "late" / "checkpoint.pt").exists()
    FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=run, log_every=1, checkpoint_every=100, progress=False)
    FLRP(FLRPConfig(**TINY), device="cpu").fit(dataset, steps=10, run_dir=tmp_path / "ref", log_every=1, checkpoint_every=100, progress=False)
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert (run / "model.pt").read_bytes() == (tmp_path / "ref" / "model.pt").read_bytes()


def test_checkpoint_minutes_must_be_positive_and_finite(tmp_path, capsys):
    for bad in ("0", "-1", "inf", "nan"):
        assert _train(tmp_path / "run", "--checkpoint-minutes", bad) == 2
        _err(capsys, "--checkpoint-minutes must be")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_a_finished_run_extended_to_more_steps_is_the_longer_run(tmp_path, capsys, preset):
    """``flrp train --steps N`` on a finished run's directory continues it (a checkpoint may change
    only ``steps``): FLRP has no step-dependent schedule, so 6 steps then 4 more give the 10-step
    run's weights and log, bit for bit, with either preset (benchmarks/flrp_budget.py relies on
    this). Going back to fewer steps than the checkpoint has is refused."""
    base = ["train", "--dataset", "toy", "--episodes", "0", "--log-every", "1", "--checkpoint-every", "3", "--preset", preset, *FAST]
    assert main([*base, "--steps", "6", "--out", str(tmp_path / "run")]) == 0
    assert main([*base, "--steps", "10", "--out", str(tmp_path / "run")]) == 0
    assert main([*base, "--steps", "10", "--out", str(tmp_path / "ref")]) == 0
    assert _steps(tmp_path / "run") == list(range(1, 11))
    assert (tmp_path / "run" / "model.pt").read_bytes() == (tmp_path / "ref" / "model.pt").read_bytes()
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    capsys.readouterr()
    assert main([*base, "--steps", "8", "--out", str(tmp_path / "run")]) == 2
    _err(capsys, r"checkpoint\.pt: checkpoint is at step 10, past --steps 8")


def test_a_run_given_another_select_margin_is_the_run_trained_with_it(tmp_path):
    """benchmarks/flrp_reselect.py rewrites a finished run's select_margin and re-evaluates it:
    since training never reads the margin, the result is the run trained with that margin, model
    file and evaluation byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("flrp_reselect", Path(__file__).parents[1] / "benchmarks" / "flrp_reselect.py")
    assert spec is not None and spec.loader is not None
    reselect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reselect)
    base = ["train", "--dataset", "toy", "--preset", "fast", "--steps", "4", "--episodes", "2", *FAST]
    assert main([*base, "--select-margin", "0", "--out", str(tmp_path / "run")]) == 0
    assert main([*base, "--select-margin", "0.6", "--out", str(tmp_path / "ref")]) == 0
    run = tmp_path / "run"
    before = json.loads((run / "eval.json").read_text())
    with pytest.raises(FlrpError, match="finite number >= 0"):
        reselect.reselect(run, float("nan"))
    real = reselect._flrp

    def killed(*args):
        raise FlrpError("eval failed (killed)")

    reselect._flrp = killed  # a reselection killed at its evaluation ...
    try:
        with pytest.raises(FlrpError, match="killed"):
            reselect.reselect(run, 0.6)
    finally:
        reselect._flrp = real
    assert json.loads((run / "config.json").read_text())["config"]["select_margin"] == 0.0  # config.json changes last
    assert json.loads((run / "reselect.json").read_text())["done"] is False
    assert "-> 0.6" in reselect.reselect(run, 0.6)  # ... resumes, keeping the figures from before it
    for name in ("model.pt", "checkpoint.pt", "eval.json"):
        assert (run / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    for name in ("config.json", "run.json"):
        assert json.loads((run / name).read_text()) == json.loads((tmp_path / "ref" / name).read_text()), name
    state = json.loads((run / "reselect.json").read_text())
    assert (state["margin_before"], state["done"], state["before"]["norm_reward_mean"]) == (0.0, True, before["norm_reward_mean"])
    assert "already at margin 0.6" in reselect.reselect(run, 0.6)


def test_a_killed_invocation_still_counts_in_timing(tmp_path, monkeypatch):
    """timing.json (the sweep report's core-min) keeps a training invocation's seconds so far;
    the resumed run adds the killed one's to its own instead of losing them."""
    import flrp.training.run as run_mod

    real, writes, finished_args = run_mod.add_timing, [], []

    def add_then_die(out, phase, wall, cpu, finished=True):
        timing = real(out, phase, wall, cpu, finished)
        writes.append(dict(timing))
        if not finished and len(writes) == 5:  # step 5: after the checkpoint of step 3
            raise KeyboardInterrupt
        return timing

    def add_and_note(out, phase, wall, cpu, finished=True):
        if finished:
            finished_args.append((wall, cpu))
        return real(out, phase, wall, cpu, finished)

    monkeypatch.setattr(run_mod, "TIMING_EVERY_S", 0.0)
    monkeypatch.setattr(run_mod, "add_timing", add_then_die)
    run = tmp_path / "run"
    assert _train(run) != 0
    killed = json.loads((run / "timing.json").read_text())
    assert set(killed) == {"train_unfinished_wall_s", "train_unfinished_cpu_s"} and killed["train_unfinished_cpu_s"] > 0
    monkeypatch.setattr(run_mod, "add_timing", add_and_note)
    assert _train(run) == 0
    done = json.loads((run / "timing.json").read_text())
    assert set(done) == {"train_wall_s", "train_cpu_s"}
    [(wall, cpu)] = finished_args  # the resumed invocation's own seconds, plus the killed one's
    assert done["train_cpu_s"] == pytest.approx(killed["train_unfinished_cpu_s"] + cpu)
    assert done["train_wall_s"] == pytest.approx(killed["train_unfinished_wall_s"] + wall)


def test_garbled_log_line_keeps_later_rows(tmp_path):
    log = MetricsLogger(tmp_path)
    for s in (1, 2, 3, 4):
        log.log(s, {"loss": float(s)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:7] + "\x00garbage"
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "loss"')
    assert [r["step"] for r in log.read()] == [1, 3, 4]
    log.truncate_after(3)
    assert _steps(tmp_path) == [1, 3]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["1,1.0", "3,3.0"]


def test_orphan_temp_files_are_cleaned_when_a_run_starts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    orphans = [run / ".checkpoint.pt.a1b2c3d4.tmp", run / ".model.pt.zz_9yy8x.tmp", run / ".metrics.csv.0123abcd.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    keep = run / "notes.tmp"
    keep.write_text("mine")
    assert _train(run) == 0
    assert not any(p.exists() for p in orphans) and keep.exists()


# ---------------------------------------------------------------- file-system failures
def _enospc(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_training_is_one_line_and_leaves_no_temp_file(tmp_path, capsys, monkeypatch):
    from flrp.collect.toy import toy_dataset_path

    toy_dataset_path()
    run = tmp_path / "run"
    calls = []
    real = flrp.files._write_all

    def full_after_four_writes(fd, data):  # run.json and the logs of steps 1-3 fit; checkpoint 3 does not
        calls.append(1)
        return real(fd, data) if len(calls) <= 4 else _enospc(fd, data)

    monkeypatch.setattr(flrp.files, "_write_all", full_after_four_writes)
    assert _train(run) == 2
    _err(capsys, rf"^flrp: error: {re.escape(str(run / 'checkpoint.pt'))}: cannot write \(No space left on device\); free some space or choose another --out$")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")] and not (run / "checkpoint.pt").exists()


def test_full_disk_while_making_the_toy_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(flrp.files, "_write_all", _enospc)
    assert main(["info", "toy", "--out", str(tmp_path / "s.png")]) == 2
    _err(capsys, r"data/ToyHazard-v0-seed0-1000\.hdf5: cannot write \(No space left on device\)")
    assert list((tmp_path / "data").iterdir()) == []


def test_read_only_run_directory_fails_before_evaluating(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(run) == 0
    eval_json = run / "eval.json"
    # root ignores permission bits, so refuse every create/write under the run directory instead
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)

    import flrp.evaluation.rollout as rollout

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(rollout, "evaluate_model_file", lambda *a, **k: pytest.fail("evaluated a run it cannot write to"))
    assert main(["eval", str(run), "--episodes", "2", "--workers", "1"]) == 2
    _err(capsys, rf"{re.escape(str(run))}\S*: cannot (lock the run directory|write) \(Read-only file system\); the file system is read-only")
    assert not eval_json.exists()


def test_fs_error_messages(tmp_path):
    e = flrp.files.fs_error("/x/y", PermissionError(errno.EACCES, "Permission denied"))
    assert str(e) == "/x/y: cannot write (Permission denied); check its permissions or choose another --out"
    (tmp_path / "garbled.json").write_text("{")
    with pytest.raises(FlrpError, match=r"garbled\.json: not valid JSON \(.*\); fix or delete it"):
        flrp.files.read_json(tmp_path / "garbled.json")


# ---------------------------------------------------------------- fault injection
def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "flrp", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_training(run: Path, since_ns: int, proc: subprocess.Popen) -> None:
    """Until the run writes its log (after a resume's log cut or at its first log row)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            if (run / "metrics.jsonl").stat().st_mtime_ns > since_ns:
                return
        time.sleep(0.01)


def test_killed_at_random_points_many_times_resumes_bitwise_and_leaves_a_clean_directory(tmp_path):
    """SIGKILL a training at random moments (at start-up, between and inside checkpoint writes),
    rerun the same command each time; the final files equal an uninterrupted run's byte for byte."""
    common = ["train", "--dataset", "toy", "--steps", "600", "--checkpoint-every", "20", "--log-every", "10", "--episodes", "0", *FAST]
    ref = _cli([*common, "--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()

    run = tmp_path / "killed"
    rng = random.Random(12)
    kills = 0
    for attempt in range(8):
        started = time.time_ns()
        victim = _cli([*common, "--out", str(run)])
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 3.0))  # somewhere in start-up: before any checkpoint
        else:
            _wait_for_training(run, started, victim)
            time.sleep(rng.uniform(0.0, 0.5))  # a checkpoint is written every ~0.15 s
        if victim.poll() is not None:  # finished before the kill
            assert victim.returncode == 0, victim.stderr.read().decode()
            break
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
    last = _cli([*common, "--out", str(run)])
    assert last.wait(timeout=600) == 0, last.stderr.read().decode()
    assert kills >= 4
    for name in ("model.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "config.json"):
        assert (run / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    # only a run killed before its first checkpoint leaves a log behind, moved aside
    assert {p.name.split(".old-")[0] for p in run.iterdir() if ".old-" in p.name} <= {"metrics.jsonl", "metrics.csv", "run.json"}
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 600
