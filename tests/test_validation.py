"""Every bad argument is one line before any work, the same from the library and the CLI (issue 12)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch

from flrp.algos import FLRP, FLRPConfig
from flrp.algos.base import ALGORITHMS, get_algorithm, resolve_device
from flrp.algos.validation import Range, check_number, range_of
from flrp.cli import main
from flrp.errors import FlrpError

FAST = ["--hidden", "16", "--batch-size", "64", "--prior-layers", "2", "--posterior-layers", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))


def _one_line_error(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flrp: error:"), err
    assert re.search(pattern, err), err
    return err


BAD_TRAIN = [
    (["--batch-size", "-4"], r"--batch-size must be positive, got -4 \(FLRPConfig\.batch_size\)"),
    (["--batch-size", "0"], r"--batch-size must be positive, got 0"),
    (["--hidden", "0"], r"--hidden must be positive, got 0"),
    (["--hidden", "-3"], r"--hidden must be positive, got -3"),
    (["--lr", "nan"], r"--lr must be positive, got nan"),
    (["--lr", "-1"], r"--lr must be positive, got -1"),
    (["--gamma", "2"], r"--gamma must be in \(0, 1\), got 2"),
    (["--expectile-feasibility", "1.5"], r"--expectile-feasibility must be in \(0, 1\), got 1\.5"),
    (["--seed", "-1"], r"--seed must be in \[0, 4294967295\], got -1"),
    (["--latent-dim", "0"], r"--latent-dim must be >= 2, got 0"),
    (["--tau", "0"], r"--tau must be in \(0, 1\], got 0"),
    (["--select-samples", "0"], r"--select-samples must be positive"),
    (["--refine-steps", "-1"], r"--refine-steps must be >= 0"),
    (["--lambda-safety", "-0.5"], r"--lambda-safety must be >= 0"),
    (["--weight-temperature-q", "0"], r"--weight-temperature-q must be positive"),
    (["--critic-warmup-steps", "-2"], r"--critic-warmup-steps must be >= 0"),
    (["--steps", "0"], r"--steps must be positive"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], r"--device cuda.*(no CUDA GPU|CUDA device)"),
    (["--device", "foo"], r"--device foo: unknown device"),
    (["--checkpoint-every", "0"], r"--checkpoint-every must be positive, got 0"),
    (["--log-every", "0"], r"--log-every must be positive, got 0"),
    (["--threads", "0"], r"--threads must be positive"),
    (["--episodes", "-1"], r"--episodes must be >= 0, got -1"),
    (["--workers", "0"], r"--workers must be positive"),
    (["--algo", "cdt", "--num-heads", "0"], r"--num-heads must be positive, got 0 \(CDTConfig\.num_heads\)"),
    (["--algo", "bcq-lag", "--lmbda", "1.5"], r"--lmbda must be in \[0, 1\]"),
]


@pytest.mark.parametrize("extra, pattern", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_argument_is_one_line_before_any_work(extra, pattern, tmp_path, capsys):
    out = tmp_path / "run"
    fast = ["--quiet"] if "--algo" in extra else FAST
    assert main(["train", "--dataset", "toy", "--steps", "5", "--out", str(out), *fast, *extra]) == 2
    _one_line_error(capsys, pattern)
    assert not out.exists()  # nothing was written


def test_flrp_threads_env_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLRP_THREADS", "abc")
    assert main(["train", "--dataset", "toy", "--steps", "5", "--out", str(tmp_path / "r"), *FAST]) == 2
    _one_line_error(capsys, r"FLRP_THREADS must be an integer >= 1, got 'abc'")
    monkeypatch.setenv("FLRP_THREADS", "0")
    assert main(["train", "--dataset", "toy", "--steps", "5", "--out", str(tmp_path / "r"), *FAST]) == 2
    _one_line_error(capsys, r"FLRP_THREADS must be positive, got 0")


def test_out_naming_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep")
    assert main(["train", "--dataset", "toy", "--steps", "5", "--out", str(f), *FAST]) == 2
    _one_line_error(capsys, r"--out .*file: is a file, not a directory")
    assert main(["train", "--dataset", "toy", "--steps", "5", "--out", str(f / "sub"), *FAST]) == 2
    _one_line_error(capsys, r"--out .*file/sub: .*a component of the path is a file")
    assert f.read_text() == "keep"


def test_dataset_task_mismatch_is_reported_before_training(tmp_path, capsys, monkeypatch):
    import flrp.envs.dims
    from flrp.data.tasks import get_task

    # CarRun's widths, without needing its simulator here
    monkeypatch.setattr(flrp.envs.dims, "task_dims", lambda task: (7, 2) if task.name == "CarRun" else (2, 1))
    trained = []
    monkeypatch.setattr(FLRP, "fit", lambda *a, **k: trained.append(1))
    assert main(["train", "--dataset", "toy", "--task", "CarRun", "--steps", "5", "--out", str(tmp_path / "r"), *FAST]) == 2
    _one_line_error(capsys, r"observations of width 2 and actions of width 1, but task CarRun has 7 and 2")
    assert not trained and not (tmp_path / "r").exists()
    assert get_task("CarRun")  # the task itself is known


def test_eval_flags_checked_and_eval_json_kept(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--steps", "4", "--episodes", "2", "--workers", "1", "--out", str(run), *FAST]) == 0
    before = (run / "eval.json").read_bytes()
    capsys.readouterr()
    for argv, pattern in [
        (["--episodes", "0"], r"--episodes must be positive, got 0"),
        (["--episodes", "-3"], r"--episodes must be positive"),
        (["--workers", "0"], r"--workers must be positive"),
        (["--cost-limit", "nan"], r"--cost-limit must be >= 0, got nan"),
        (["--threads", "0"], r"--threads must be positive"),
    ]:
        assert main(["eval", str(run), *argv]) == 2
        _one_line_error(capsys, pattern)
    assert main(["diagnose", str(run), "--samples", "0"]) == 2
    _one_line_error(capsys, r"--samples must be positive")
    assert (run / "eval.json").read_bytes() == before


def test_evaluation_of_zero_episodes_is_refused_by_the_library(tmp_path):
    from flrp.data.tasks import get_task
    from flrp.evaluation.rollout import EvalResult, evaluate, evaluate_model_file

    task = get_task("ToyHazard")
    with pytest.raises(FlrpError, match="positive"):
        evaluate(object(), task, episodes=0)
    with pytest.raises(FlrpError, match="positive"):
        evaluate_model_file(tmp_path / "none.pt", task, episodes=0)
    with pytest.raises(FlrpError, match="at least one episode"):
        EvalResult.from_episodes(task, [], 10.0)


def test_garbled_run_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--steps", "4", "--episodes", "0", "--out", str(run), *FAST]) == 0
    (run / "run.json").write_text('{"task": ')
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    _one_line_error(capsys, r"run\.json: not valid JSON")


# ---------------------------------------------------------------- the library says the same
def test_library_and_cli_reject_with_the_same_line(capsys, tmp_path):
    with pytest.raises(FlrpError) as e:
        FLRPConfig(gamma=2.0)
    assert str(e.value) == "--gamma must be in (0, 1), got 2.0 (FLRPConfig.gamma)"
    assert main(["train", "--dataset", "toy", "--gamma", "2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"flrp: error: {e.value}"


def test_fields_set_after_construction_are_checked_by_the_algorithm():
    cfg = FLRPConfig(hidden=16)
    cfg.batch_size = 0
    with pytest.raises(FlrpError, match="--batch-size must be positive"):
        FLRP(cfg, device="cpu")
    with pytest.raises(FlrpError, match="--expectile-reward must be in"):
        FLRPConfig().replace(expectile_reward=1.0)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(hidden=2.5), r"--hidden must be an integer, got 2\.5"),
        (dict(lr=float("inf")), r"--lr must be positive, got inf"),
        (dict(normalize_obs="yes"), r"--normalize-obs must be a bool"),
        (dict(hj_next_value="nope"), r"--hj-next-value must be one of 'target', 'online', got 'nope'"),
        (dict(latent_dim=1), r"--latent-dim must be >= 2"),
        (dict(h_safe=math.nan), r"--h-safe must be finite"),
        (dict(batch_size=True), r"--batch-size must be an integer, got True"),
    ],
)
def test_config_types_and_ranges(changes, pattern):
    with pytest.raises(FlrpError, match=pattern):
        FLRPConfig(**changes)


def test_optional_fields_take_none_and_numpy_numbers():
    import numpy as np

    cfg = FLRPConfig(latent_dim=None, reward_scale=None, hidden=np.int64(8), lr=np.float32(1e-3))
    assert cfg.latent_dim is None and cfg.hidden == 8


def test_every_algorithms_defaults_and_presets_are_valid():
    get_algorithm("flrp")
    for cls in ALGORITHMS.values():
        cls.Config().validate()
        for name in cls.presets:
            cls.preset_config(name).validate()


def test_subclasses_extend_ranges_by_a_class_dict():
    @dataclasses.dataclass
    class Mine(FLRPConfig):
        field_ranges = {"hidden": Range(8, 64)}

    assert str(range_of(Mine, "hidden")) == "in [8, 64]"
    assert str(range_of(Mine, "latent_dim")) == ">= 2"  # FLRPConfig's own entries still apply
    with pytest.raises(FlrpError, match=r"--hidden must be in \[8, 64\], got 4"):
        Mine(hidden=4)


def test_fit_arguments():
    cfg = FLRPConfig(hidden=16, batch_size=8)
    with pytest.raises(FlrpError, match="--log-every must be positive"):
        FLRP(cfg, device="cpu").fit(None, steps=2, log_every=0)  # checked before the data is touched
    with pytest.raises(FlrpError, match="--checkpoint-every must be positive"):
        FLRP(cfg, device="cpu").fit(None, steps=2, checkpoint_every=-1)
    with pytest.raises(FlrpError, match="--steps must be positive"):
        FLRP(cfg, device="cpu").fit(None, steps=0)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(FlrpError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(FlrpError, match="unsupported device type 'meta'"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(FlrpError, match="no CUDA GPU"):
            FLRP(FLRPConfig(), device="cuda:0")


def test_check_number_messages():
    with pytest.raises(FlrpError, match=r"^--x must be an integer, got '3'$"):
        check_number("--x", "3", Range(0))
    check_number("--x", 0.5, Range(0, 1, lo_open=True), integer=False)
    assert json.dumps(str(Range(0, 1, True, True))) == '"in (0, 1)"'


def test_help_documents_each_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--gamma GAMMA (default: 0.99; in (0, 1))", "--latent-dim LATENT_DIM (default: None; >= 2)",
                     "--batch-size BATCH_SIZE (default: 512; positive)", "(default 500; positive)"):
        assert expected in text, expected


def test_machine_record_reads_model_and_kernel_flags(tmp_path, monkeypatch):
    """run.json's machine record: the first processor's model name and, of its flags, only those
    that select numerical kernels (fma picks glibc's sin/cos variants; avx2/avx512f numpy's and torch's)."""
    import flrp.devices as devices

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 sse4_2 fma ht avx512f\n\n"
                       "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: fpu\n")
    monkeypatch.setattr(devices, "Path", lambda _: cpuinfo)
    info = devices.machine_info(torch.device("cpu"))
    assert info["cpu"] == "Test CPU 9000"
    assert info["cpu_flags"] == "sse4_2 fma avx2 avx512f"  # in a fixed order, whatever /proc/cpuinfo's
    assert info["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability()) and info["device"] == "cpu"
    monkeypatch.setattr(devices, "Path", lambda _: tmp_path / "absent")
    assert devices.machine_info(torch.device("cpu"))["cpu_flags"] == ""  # no /proc/cpuinfo: no flags, no error
