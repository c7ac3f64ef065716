"""Task table: completeness against DSRL (commit 71064f2), exact constants, lookups, errors."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from flrp.data.tasks import TASKS, TaskSpec, get_task, list_tasks
from flrp.errors import FlrpError


def test_38_dsrl_tasks_with_suite_counts() -> None:
    dsrl = [t for t in TASKS.values() if t.suite != "toy"]
    assert len(dsrl) == 38
    assert Counter(t.suite for t in dsrl) == {"bullet": 8, "safetygym": 21, "metadrive": 9}
    velocity = [t for t in dsrl if t.name.endswith("Velocity")]
    assert sorted(t.name for t in velocity) == [
        "AntVelocity", "HalfCheetahVelocity", "HopperVelocity", "SwimmerVelocity", "Walker2dVelocity"]
    assert all(t.suite == "safetygym" and t.dsrl_id.endswith("Gymnasium-v1") for t in velocity)
    assert len(list_tasks("safetygym")) == 21
    assert len(list_tasks()) == 39  # + ToyHazard
    assert [t.name for t in list_tasks("toy")] == ["ToyHazard"]


def test_keys_and_ids_unique_and_consistent() -> None:
    for name, t in TASKS.items():
        assert name == t.name
        assert t.max_reward > t.min_reward
        assert t.max_cost > t.min_cost >= 0
        assert t.max_episode_steps > 0
    assert len({t.dsrl_id for t in TASKS.values()}) == len(TASKS)


def test_exact_constants_from_dsrl_infos() -> None:
    car_run = get_task("CarRun")
    assert car_run == TaskSpec("CarRun", "bullet", "OfflineCarRun-v0", "SafetyCarRun-v0", 200,
                               204.28726196289062, 574.6533203125, 0.0, 40.0)
    ball_run = get_task("BallRun")
    assert ball_run.max_episode_steps == 100
    assert ball_run.min_reward == 26.339754104614258
    assert ball_run.max_reward == 1327.445556640625
    assert get_task("CarCircle2").max_cost == 398.0
    assert get_task("PointCircle2").max_cost == 299.0
    assert get_task("CarButton1").max_reward == 44.420003345738984
    assert get_task("Walker2dVelocity").min_reward == 18.668498992919922
    # MetaDrive is the only suite with non-zero minimum costs.
    assert get_task("EasySparse").min_cost == 0.00025356505648232996
    assert get_task("HardMean").min_cost == 0.00033149970113299787
    assert get_task("MediumMean").max_cost == 46.46154022216797
    assert {t.max_episode_steps for t in list_tasks("metadrive")} == {1000}
    assert {t.min_cost for t in list_tasks("bullet") + list_tasks("safetygym")} == {0.0}


def test_lookup_by_all_name_forms_case_insensitive() -> None:
    button = get_task("CarButton1")
    assert button.dsrl_id == "OfflineCarButton1Gymnasium-v0"
    assert button.sim_id == "SafetyCarButton1-v0"
    for form in ("CarButton1", "carbutton1", "OfflineCarButton1Gymnasium-v0", "offlinecarbutton1gymnasium-v0",
                 "SafetyCarButton1-v0", "SAFETYCARBUTTON1-V0"):
        assert get_task(form) is button
    # Also the names DSRL's other registry and its dataset files use.
    assert get_task("OfflineCarButton1-v0") is button
    assert get_task("SafetyCarButton1Gymnasium-v0") is button

    ant = get_task("OfflineAntVelocityGymnasium-v1")
    assert ant.name == "AntVelocity" and ant.sim_id == "SafetyAntVelocity-v1"
    assert get_task("safetyantvelocity-v1") is ant

    md = get_task("OfflineMetadrive-easysparse-v0")
    assert md.name == "EasySparse" and md.sim_id is None
    assert get_task("easysparse") is md  # DSRL's own lowercase key
    assert get_task("SafeMetaDrive-easysparse-v0") is md

    # Bullet CarCircle and safety-gymnasium CarCircle1 must not be confused.
    assert get_task("SafetyCarCircle-v0").suite == "bullet"
    assert get_task("SafetyCarCircle1-v0").suite == "safetygym"

    toy = get_task("flrp/ToyHazard-v0")
    assert toy is get_task("toyhazard") is get_task("ToyHazard-v0")


def test_unknown_task_is_one_line_with_suggestion() -> None:
    with pytest.raises(FlrpError) as exc:
        get_task("CarRn")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "'CarRn'" in msg and "CarRun" in msg

    with pytest.raises(FlrpError) as exc:
        get_task("qqqqqqqq")
    assert "\n" not in str(exc.value) and "'qqqqqqqq'" in str(exc.value)


def test_unknown_suite_and_frozen() -> None:
    with pytest.raises(FlrpError):
        list_tasks("mujoco")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("CarRun").max_cost = 1.0  # type: ignore[misc]
