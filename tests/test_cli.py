"""The command line as a user meets it: train/eval/info on the toy task, errors, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from flrp.cli import main

FAST = ["--hidden", "16", "--batch-size", "64", "--prior-layers", "2", "--posterior-layers", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))


def test_info_prints_summary_and_writes_scatter(tmp_path, capsys):
    png = tmp_path / "scatter.png"
    assert main(["info", "toy", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "1000" in out and "cost-return scatter" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_then_eval_on_toy(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--dataset", "toy", "--steps", "40", "--episodes", "3", "--workers", "1", "--out", str(run), "--log-every", "20", *FAST])
    assert code == 0
    out = capsys.readouterr().out
    assert "normalized reward" in out and "normalized cost" in out and "IoU" in out
    for name in ("model.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "eval.json", "eval.md", "feasibility.png", "config.json", "run.json"):
        assert (run / name).exists(), name
    report = json.loads((run / "eval.json").read_text())
    assert len(report["episodes"]) == 3 and report["task"] == "ToyHazard"
    assert 0.0 <= report["feasibility"]["iou_support"] <= 1.0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    # re-evaluate the saved run with more episodes
    assert main(["eval", str(run), "--episodes", "4", "--workers", "1"]) == 0
    assert len(json.loads((run / "eval.json").read_text())["episodes"]) == 4


def test_eval_normalizes_cost_by_the_models_own_limit(tmp_path, capsys):
    """A model trained with --cost-limit 5 is scored against 5 by training's evaluation and by a
    later `flrp eval` alike (kappa of Eq. 40); --cost-limit on `flrp eval` overrides it."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--steps", "10", "--episodes", "2", "--workers", "1", "--out", str(run), "--cost-limit", "5", *FAST]) == 0
    trained = json.loads((run / "eval.json").read_text())
    assert trained["cost_limit"] == 5.0
    assert main(["eval", str(run), "--episodes", "2", "--workers", "1"]) == 0
    again = json.loads((run / "eval.json").read_text())
    assert again["cost_limit"] == 5.0 and again["norm_cost_mean"] == trained["norm_cost_mean"]
    assert main(["eval", str(run), "--episodes", "2", "--workers", "1", "--cost-limit", "20"]) == 0
    other = json.loads((run / "eval.json").read_text())
    assert other["cost_limit"] == 20.0 and other["cost_mean"] == trained["cost_mean"]
    assert other["norm_cost_mean"] == pytest.approx(trained["cost_mean"] / 20.0)


def test_baseline_selectable_by_name(tmp_path, capsys):
    run = tmp_path / "bc"
    assert main(["train", "--algo", "bc-safe", "--dataset", "toy", "--steps", "20", "--episodes", "2", "--workers", "1", "--out", str(run), "--hidden", "16", "--quiet"]) == 0
    assert json.loads((run / "run.json").read_text())["algo"] == "bc-safe"


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["train", "--dataset", "missing.hdf5"], r"missing\.hdf5: no such file"),
        (["train", "--dataset", "toy", "--algo", "nope"], r"unknown algorithm 'nope'"),
        (["train", "--dataset", "toy", "--task", "CarRn"], r"unknown task 'CarRn'.*CarRun"),
        (["train", "--dataset", "toy", "--steps", "0"], r"--steps must be positive"),
        (["eval", "does/not/exist.pt"], r"exist\.pt: no such model file"),
    ],
)
def test_bad_input_gives_one_line_error(argv, pattern, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flrp: error:")
    import re

    assert re.search(pattern, err), err


def test_bad_flag_value_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "toy", "--refine-steps", "three"])
    assert e.value.code == 2
    assert "--refine-steps" in capsys.readouterr().err


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flrp", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    env = {**os.environ, "FLRP_DATA_DIR": os.environ["FLRP_DATA_DIR"]}
    common = ["train", "--dataset", "toy", "--steps", "800", "--checkpoint-every", "50", "--episodes", "0", *FAST]
    ref = _cli([*common, "--out", str(tmp_path / "ref")], env)
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    victim = _cli([*common, "--out", str(tmp_path / "killed")], env)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists()
    victim.send_signal(signal.SIGKILL)  # no chance to clean up
    victim.wait()
    step_at_kill = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step_at_kill < 800
    resumed = _cli([*common, "--out", str(tmp_path / "killed")], env)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()

    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=False)["modules"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=False)["modules"]
    for mod in a:
        for k in a[mod]:
            assert torch.equal(a[mod][k], b[mod][k]), (mod, k)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the log has no duplicated or lost-order rows after resume
