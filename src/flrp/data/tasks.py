"""The one table of benchmark tasks: names, env ids and DSRL's normalisation constants.

Source of every DSRL number below: ``dsrl/infos.py`` of https://github.com/liuzuxin/DSRL at
commit 71064f21976f59c8f7139d00f1294963a1558369 (2025-11-12, "Switch to the huggingface host"),
dicts ``DEFAULT_MAX_EPISODE_STEPS``, ``MIN/MAX_EPISODE_REWARD``, ``MIN/MAX_EPISODE_COST``; the
floats are copied verbatim (generated from the file, not retyped). Env ids come from the same
commit's ``dsrl/offline_*/__init__.py`` (``dsrl_id``) and ``dsrl/offline_*/gym_envs.py``
(``sim_id``: the env each DSRL task wraps):

* bullet: DSRL rebuilds Bullet-Safety-Gym's ``EnvironmentBuilder`` with the same agent/task/world
  as Bullet-Safety-Gym's registered ``Safety{Agent}{Task}-v0`` (Car = "RaceCar" agent). Note that
  registration's own time limit (e.g. 500 for SafetyCarRun-v0) differs from DSRL's, so roll out
  with ``max_episode_steps`` from this table, never the simulator's default.
* safetygym navigation: DSRL's Builder uses task_id ``Safety{Agent}{Task}{Level}-v0``; DSRL's
  gymnasium-API id (``dsrl_id``) adds "Gymnasium", as does safety-gymnasium's own wrapped id.
* safetygym velocity: DSRL subclasses safety-gymnasium's ``safety_velocity/*_v1`` envs, i.e.
  ``Safety{Agent}Velocity-v1``.
* metadrive: DSRL builds a custom ``SafeMetaDriveEnv`` config per task; there is no simulator id,
  so ``sim_id`` is None. (DSRL registers these with old ``gym``, not gymnasium.)

``DEFAULT_REWARD_THRESHOLD`` (velocity tasks only) and ``DENSITY_CFG`` from infos.py are not
carried here: nothing in flrp uses them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from flrp.errors import FlrpError

__all__ = ["SUITES", "TASKS", "TaskSpec", "get_task", "list_tasks", "task_of_file_name"]

SUITES = ("bullet", "safetygym", "metadrive", "toy")
# The episode cost limit kappa of Eq. 40: "we set a uniform cost limit of 10 for all tasks" (the
# paper's Sec. 5, again beside Eq. 40; OSRL's default too). Every cost_limit default reads this.
COST_LIMIT = 10.0


@dataclass(frozen=True)
class TaskSpec:
    """One task: its short name, suite, env ids and DSRL's per-task constants."""

    name: str
    suite: str
    dsrl_id: str
    sim_id: str | None
    max_episode_steps: int
    min_reward: float
    max_reward: float
    min_cost: float
    max_cost: float

    @property
    def aliases(self) -> tuple[str, ...]:
        """Extra accepted spellings (not stored ids): the names DSRL also uses for this task.

        Safety-gymnasium tasks are registered by DSRL twice (``OfflineCarButton1-v0`` in
        safety-gymnasium's registry and ``OfflineCarButton1Gymnasium-v0`` in gymnasium's); dataset
        files are named after ``SafetyCarButton1Gymnasium-v0`` / ``SafeMetaDrive-easysparse-v0``.
        Accepting these lets a user pass whatever name appears in a DSRL file name or script.
        """
        out: list[str] = []
        if self.suite == "safetygym":
            out.append(self.dsrl_id.replace("Gymnasium-", "-"))
            out.append(self.dsrl_id.replace("Offline", "Safety", 1))
        elif self.suite == "metadrive":
            out.append(self.dsrl_id.replace("OfflineMetadrive-", "SafeMetaDrive-", 1))
        return tuple(out)


def _t(name: str, suite: str, dsrl_id: str, sim_id: str | None, steps: int,
       rmin: float, rmax: float, cmin: float, cmax: float) -> TaskSpec:
    return TaskSpec(name, suite, dsrl_id, sim_id, steps, rmin, rmax, cmin, cmax)


# Columns: name, suite, dsrl_id, sim_id, max_episode_steps, min_reward, max_reward, min_cost, max_cost.
_TABLE: tuple[TaskSpec, ...] = (
    # --- Bullet-Safety-Gym (8) ---
    _t("AntRun", "bullet", "OfflineAntRun-v0", "SafetyAntRun-v0", 200, 0.001767391717990563, 955.4818725585938, 0.0, 150.0),
    _t("AntCircle", "bullet", "OfflineAntCircle-v0", "SafetyAntCircle-v0", 500, 0.0177031010389328, 460.7091979980469, 0.0, 200.0),
    _t("BallRun", "bullet", "OfflineBallRun-v0", "SafetyBallRun-v0", 100, 26.339754104614258, 1327.445556640625, 0.0, 80.0),
    _t("BallCircle", "bullet", "OfflineBallCircle-v0", "SafetyBallCircle-v0", 200, 0.38312244415283203, 881.46337890625, 0.0, 80.0),
    _t("CarRun", "bullet", "OfflineCarRun-v0", "SafetyCarRun-v0", 200, 204.28726196289062, 574.6533203125, 0.0, 40.0),
    _t("CarCircle", "bullet", "OfflineCarCircle-v0", "SafetyCarCircle-v0", 300, 3.484419822692871, 534.3060913085938, 0.0, 100.0),
    _t("DroneRun", "bullet", "OfflineDroneRun-v0", "SafetyDroneRun-v0", 200, 10.557029724121094, 682.8330078125, 0.0, 140.0),
    _t("DroneCircle", "bullet", "OfflineDroneCircle-v0", "SafetyDroneCircle-v0", 300, 207.794189453125, 996.38916015625, 0.0, 100.0),
    # --- Safety-Gymnasium navigation (16) ---
    _t("PointCircle1", "safetygym", "OfflinePointCircle1Gymnasium-v0", "SafetyPointCircle1-v0", 500, 20.067626953125, 61.72819519042969, 0.0, 200.0),
    _t("PointCircle2", "safetygym", "OfflinePointCircle2Gymnasium-v0", "SafetyPointCircle2-v0", 500, 20.478347778320312, 54.02184295654297, 0.0, 299.0),
    _t("PointGoal1", "safetygym", "OfflinePointGoal1Gymnasium-v0", "SafetyPointGoal1-v0", 1000, 0.01196012764197707, 30.071114857340543, 0.0, 100.0),
    _t("PointGoal2", "safetygym", "OfflinePointGoal2Gymnasium-v0", "SafetyPointGoal2-v0", 1000, 0.002616959830266108, 27.717709787852737, 0.0, 200.0),
    _t("PointButton1", "safetygym", "OfflinePointButton1Gymnasium-v0", "SafetyPointButton1-v0", 1000, 0.008822109034937853, 41.19301568767707, 0.0, 200.0),
    _t("PointButton2", "safetygym", "OfflinePointButton2Gymnasium-v0", "SafetyPointButton2-v0", 1000, 0.014114166087574098, 42.8985953616709, 0.0, 250.0),
    _t("PointPush1", "safetygym", "OfflinePointPush1Gymnasium-v0", "SafetyPointPush1-v0", 1000, 0.0014001545292344209, 16.518654299293367, 0.0, 150.0),
    _t("PointPush2", "safetygym", "OfflinePointPush2Gymnasium-v0", "SafetyPointPush2-v0", 1000, 0.0012438183001730607, 14.691039145644403, 0.0, 200.0),
    _t("CarCircle1", "safetygym", "OfflineCarCircle1Gymnasium-v0", "SafetyCarCircle1-v0", 500, 8.037073135375977, 24.94155502319336, 0.0, 250.0),
    _t("CarCircle2", "safetygym", "OfflineCarCircle2Gymnasium-v0", "SafetyCarCircle2-v0", 500, 5.113386154174805, 25.950098037719727, 0.0, 398.0),
    _t("CarGoal1", "safetygym", "OfflineCarGoal1Gymnasium-v0", "SafetyCarGoal1-v0", 1000, 0.012232819540852091, 39.907809198384705, 0.0, 120.0),
    _t("CarGoal2", "safetygym", "OfflineCarGoal2Gymnasium-v0", "SafetyCarGoal2-v0", 1000, 0.001032874531954775, 28.902897990056502, 0.0, 200.0),
    _t("CarButton1", "safetygym", "OfflineCarButton1Gymnasium-v0", "SafetyCarButton1-v0", 1000, 0.0028926206826067613, 44.420003345738984, 0.0, 250.0),
    _t("CarButton2", "safetygym", "OfflineCarButton2Gymnasium-v0", "SafetyCarButton2-v0", 1000, 0.001767391717990563, 41.99513815522894, 0.0, 300.0),
    _t("CarPush1", "safetygym", "OfflineCarPush1Gymnasium-v0", "SafetyCarPush1-v0", 1000, 0.013700173533941762, 16.304467598905237, 0.0, 200.0),
    _t("CarPush2", "safetygym", "OfflineCarPush2Gymnasium-v0", "SafetyCarPush2-v0", 1000, 0.00029391133526335267, 15.141648491514314, 0.0, 250.0),
    # --- Safety-Gymnasium velocity (5) ---
    _t("AntVelocity", "safetygym", "OfflineAntVelocityGymnasium-v1", "SafetyAntVelocity-v1", 1000, 6.1519012451171875, 2976.276611328125, 0.0, 250.0),
    _t("HalfCheetahVelocity", "safetygym", "OfflineHalfCheetahVelocityGymnasium-v1", "SafetyHalfCheetahVelocity-v1", 1000, 5.7509765625, 2806.93310546875, 0.0, 250.0),
    _t("HopperVelocity", "safetygym", "OfflineHopperVelocityGymnasium-v1", "SafetyHopperVelocity-v1", 1000, 37.05154800415039, 1911.396728515625, 0.0, 250.0),
    _t("SwimmerVelocity", "safetygym", "OfflineSwimmerVelocityGymnasium-v1", "SafetySwimmerVelocity-v1", 1000, 0.07114458084106445, 238.95831298828125, 0.0, 200.0),
    _t("Walker2dVelocity", "safetygym", "OfflineWalker2dVelocityGymnasium-v1", "SafetyWalker2dVelocity-v1", 1000, 18.668498992919922, 3418.223876953125, 0.0, 300.0),
    # --- Safe MetaDrive (9); DSRL keys these lowercase, e.g. "easysparse" ---
    _t("EasySparse", "metadrive", "OfflineMetadrive-easysparse-v0", None, 1000, 20.094310760498047, 425.8006286621094, 0.00025356505648232996, 82.42418670654297),
    _t("EasyMean", "metadrive", "OfflineMetadrive-easymean-v0", None, 1000, 22.142553329467773, 425.82440185546875, 0.0, 82.38601684570312),
    _t("EasyDense", "metadrive", "OfflineMetadrive-easydense-v0", None, 1000, 19.71139144897461, 425.81732177734375, 0.0, 80.36358642578125),
    _t("MediumSparse", "metadrive", "OfflineMetadrive-mediumsparse-v0", None, 1000, 17.446578979492188, 269.80084228515625, 0.0, 46.46459197998047),
    _t("MediumMean", "metadrive", "OfflineMetadrive-mediummean-v0", None, 1000, 17.032529830932617, 269.8221435546875, 0.0, 46.46154022216797),
    _t("MediumDense", "metadrive", "OfflineMetadrive-mediumdense-v0", None, 1000, 15.102348327636719, 269.7813415527344, 0.0, 46.45858383178711),
    _t("HardSparse", "metadrive", "OfflineMetadrive-hardsparse-v0", None, 1000, 17.247974395751953, 486.80523681640625, 0.0, 85.010009765625),
    _t("HardMean", "metadrive", "OfflineMetadrive-hardmean-v0", None, 1000, 19.387981414794922, 486.9967956542969, 0.00033149970113299787, 84.33995056152344),
    _t("HardDense", "metadrive", "OfflineMetadrive-harddense-v0", None, 1000, 15.386894226074219, 486.63616943359375, 0.0, 84.76679229736328),
    # --- flrp's own toy task (not part of DSRL) ---
    # Constants of the embedded toy dataset (flrp.collect.toy, seed 0, 1000 episodes): min/max
    # episode return and cost, read off the generated file exactly as DSRL's infos.py values are.
    TaskSpec(name="ToyHazard", suite="toy", dsrl_id="ToyHazard-v0", sim_id="flrp/ToyHazard-v0",
             max_episode_steps=100, min_reward=-116.33135087229311, max_reward=101.09532496333122,
             min_cost=0.0, max_cost=87.0),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in _TABLE}


def _build_index() -> dict[str, TaskSpec]:
    index: dict[str, TaskSpec] = {}
    for task in _TABLE:
        for key in (task.name, task.dsrl_id, task.sim_id, *task.aliases):
            if key is None:
                continue
            other = index.setdefault(key.lower(), task)
            # A clash would make lookups silently depend on table order.
            if other is not task:
                raise AssertionError(f"task name clash: {key!r} ({other.name} vs {task.name})")
    return index


_INDEX = _build_index()


def get_task(name: str) -> TaskSpec:
    """Look a task up by short name, DSRL id or simulator id (case-insensitive)."""
    task = _INDEX.get(str(name).strip().lower())
    if task is not None:
        return task
    close = difflib.get_close_matches(str(name).strip().lower(), list(_INDEX), n=5, cutoff=0.6)
    # Suggest short names (what users type) rather than the lowercased index keys.
    suggestions = list(dict.fromkeys(_INDEX[c].name for c in close))[:3]
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; see list_tasks() for valid names"
    raise FlrpError(f"unknown task {name!r}{hint}")


def task_of_file_name(name: str) -> TaskSpec | None:
    """The task of a DSRL-style file name ``<EnvId>-<cap>-<n>.hdf5`` (e.g.
    ``OfflineCarRun-v0-40-1000.hdf5`` -> CarRun), or None."""
    m = re.match(r"^(.*?-v\d+)", Path(name).name)
    if m is None:
        return None
    try:
        return get_task(m.group(1))
    except FlrpError:
        return None


def list_tasks(suite: str | None = None) -> list[TaskSpec]:
    """All tasks in table order, optionally only one suite's."""
    if suite is None:
        return list(_TABLE)
    key = suite.strip().lower()
    if key not in SUITES:
        raise FlrpError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    return [t for t in _TABLE if t.suite == key]
