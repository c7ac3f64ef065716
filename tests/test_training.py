"""flrp.training: config dataclasses <-> flrp train flags (one place), and one run as a library call."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

import flrp.algos  # noqa: F401  (registers every algorithm)
from flrp.algos.registry import ALGORITHMS, get_algorithm
from flrp.data.tasks import get_task
from flrp.errors import FlrpError
from flrp.training import EvalOptions, TrainJob, job_argv, job_from_namespace, parse_train_argv, train_and_evaluate
from flrp.training.flags import config_argv, config_fields, config_value
from flrp.training.run import task_config


def _changed(config_cls: type) -> dict[str, typing.Any]:
    """A non-default value for every field of ``config_cls`` whose flag can spell one."""
    out: dict[str, typing.Any] = {}
    base = config_cls()
    for name, tp in config_fields(config_cls).items():
        value = getattr(base, name)
        if tp is bool:
            out[name] = not value
        elif typing.get_origin(tp) is typing.Literal:
            others = [c for c in typing.get_args(tp) if c != value]
            if others:
                out[name] = others[0]
        elif value is None:
            continue  # an optional field's value depends on others (e.g. a latent size)
        elif tp is int or typing.get_args(tp) and int in typing.get_args(tp):
            out[name] = value + 1
    return out


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_job_spelled_as_flags_parses_back_to_itself(name):
    algo_cls = get_algorithm(name)
    changes = _changed(algo_cls.Config)
    try:
        config = algo_cls.Config(**changes)
    except FlrpError:  # some combinations are refused: change the fields one at a time instead
        config = algo_cls.Config(**dict(list(changes.items())[:1]))
    job = TrainJob(algo=algo_cls.name, dataset="toy", config=config, task="ToyHazard", out="runs/x", device="cpu", threads=2, log_every=7,
                   resume=False, progress=False, evaluation=EvalOptions(episodes=3, seed=5, workers=1, deterministic=True))
    argv = job_argv(job)
    assert argv[:3] == ["train", "--algo", algo_cls.name]
    back = job_from_namespace(algo_cls, parse_train_argv(algo_cls, argv[1:]))
    assert back == job


def test_presets_are_spelled_as_the_preset_and_the_fields_that_differ_from_it():
    algo_cls = get_algorithm("flrp")
    preset = next(p for p in sorted(algo_cls.presets) if algo_cls.presets[p])
    config = algo_cls.preset_config(preset, seed=3)
    job = TrainJob(algo="flrp", dataset="toy", config=config, preset=preset)
    argv = job_argv(job)
    assert argv[argv.index("--preset") + 1] == preset and "--seed" in argv
    assert config_argv(config, algo_cls.preset_config(preset)) == ["--seed", "3"]
    assert job_from_namespace(algo_cls, parse_train_argv(algo_cls, argv[1:])) == job


def test_config_values_are_typed_as_their_flags():
    cfg = get_algorithm("flrp").Config
    assert config_value(cfg, "refine_steps", "3") == 3
    assert config_value(cfg, "normalize_obs", "no") is False
    with pytest.raises(FlrpError, match=r"argument --refine-steps: invalid int value: 'three'"):
        config_value(cfg, "refine_steps", "three")
    with pytest.raises(FlrpError, match=r"argument --prior: invalid choice: 'x'"):
        config_value(cfg, "prior", "x")
    with pytest.raises(FlrpError, match="not a boolean"):
        config_value(cfg, "normalize_obs", "maybe")


def test_parse_errors_are_one_line():
    with pytest.raises(FlrpError, match="unrecognized arguments: --nope"):
        parse_train_argv(get_algorithm("bc-all"), ["--dataset", "toy", "--nope"])


def test_train_and_evaluate_is_one_call(tmp_path, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path / "data"))
    lines: list[str] = []
    config = get_algorithm("bc-safe").Config(steps=20, hidden=16)
    job = TrainJob(algo="bc-safe", dataset="toy", config=config, out=str(tmp_path / "run"), progress=False, evaluation=EvalOptions(episodes=2, workers=1))
    res = train_and_evaluate(job, say=lines.append)
    assert res.out == tmp_path / "run" and res.algo.step == 20 and res.task is not None and res.task.name == "ToyHazard"
    assert res.report == json.loads((res.out / "eval.json").read_text())
    assert len(res.evaluation.episodes) == 2
    assert lines[0].startswith("flrp: training bc-safe") and any("normalized reward" in ln for ln in lines)
    assert json.loads((res.out / "run.json").read_text())["config"] == dataclasses.asdict(config)
    with pytest.raises(FlrpError, match="expected a FLRPConfig, got BCSafeConfig"):
        train_and_evaluate(dataclasses.replace(job, algo="flrp"))


@pytest.mark.parametrize("name, meaning", [("flrp", "every network"), ("bcq-lag", "the VAE's: --vae-hidden"), ("fisor", "the diffusion actor's: --actor-hidden"), ("cdt", "unused by CDT")])
def test_hidden_says_what_it_sizes_for_each_algorithm(name, meaning):
    text = " ".join(parse_help(name).split())
    assert f"--hidden HIDDEN {get_algorithm(name).Config.help_of('hidden')} (default: 256; positive)" in text and meaning in text


def parse_help(name: str) -> str:
    import argparse

    from flrp.training.flags import add_train_arguments

    p = argparse.ArgumentParser(prog="flrp train")
    add_train_arguments(p, get_algorithm(name))
    return p.format_help()


@pytest.mark.parametrize("name", ["bc-safe", "bcq-lag", "cpq", "cdt", "flrp"])
def test_steps_left_at_the_default_follow_the_sources_per_suite_value(name):
    """OSRL's MetaDrive configs train 200k steps, its Bullet/Safety-Gymnasium configs 100k: a job
    without --steps gets the suite's value once the task is known; --steps always wins, and the
    command line of a default job stays without --steps (so it parses back to a default job)."""
    algo_cls = get_algorithm(name)
    job = job_from_namespace(algo_cls, parse_train_argv(algo_cls, ["--algo", name, "--dataset", "toy"]))
    assert job.default_steps and "--steps" not in job_argv(job)
    assert job_from_namespace(algo_cls, parse_train_argv(algo_cls, job_argv(job)[1:])) == job
    metadrive, bullet = get_task("EasySparse"), get_task("BallRun")
    osrl = name != "flrp"  # FISOR, LSPC and FLRP have one budget for every suite
    assert task_config(job, algo_cls, metadrive).steps == (200_000 if osrl else algo_cls.Config.steps)
    assert task_config(job, algo_cls, bullet).steps == algo_cls.Config.steps == (100_000 if osrl else 1_000_000)
    assert task_config(job, algo_cls, None) == job.config
    given = job_from_namespace(algo_cls, parse_train_argv(algo_cls, ["--algo", name, "--dataset", "toy", "--steps", "300"]))
    assert not given.default_steps and task_config(given, algo_cls, metadrive).steps == 300
    if algo_cls.presets.get("fast", {}).get("steps"):  # a preset's steps are chosen steps
        fast = job_from_namespace(algo_cls, parse_train_argv(algo_cls, ["--algo", name, "--dataset", "toy", "--preset", "fast"]))
        assert not fast.default_steps and task_config(fast, algo_cls, metadrive).steps == algo_cls.presets["fast"]["steps"]
