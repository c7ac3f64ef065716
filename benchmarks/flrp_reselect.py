"""Give trained FLRP runs another inference-time selection margin, in place, and re-evaluate them
(issue 11: the fast preset's ``select_margin``).

    python benchmarks/flrp_reselect.py runs/sweep-fast/flrp/*/seed*/preset=fast --margin 0.6

``select_margin`` is read only at inference (a test pins that training with any margin gives the
same weights), so a finished run of the preset without it becomes, bit for bit, the run the
preset with it trains: this rewrites ``select_margin`` in the run's ``model.pt``,
``checkpoint.pt``, ``config.json`` and ``run.json`` (each written to a temporary file, then
renamed), then reruns ``flrp eval`` on it (its evaluation's episode count, first seed and cost
limit) and ``flrp diagnose`` where the run had a diagnosis. The previous figures are kept in
``reselect.json``. A run this script already moved to the margin is skipped, and a killed
reselection resumes when the command is rerun.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from flrp.algos import model_file
from flrp.errors import FlrpError
from flrp.files import read_json, write_json

LATER = model_file.LATER_FIELDS["flrp"]["select_margin"]  # what a model file from before the field means


def _set_margin(path: Path, margin: float) -> None:
    """Rewrite select_margin in one model file (written to a temporary file, then renamed)."""
    payload = model_file.read_payload(path)
    if payload["algo"] != "flrp":
        raise FlrpError(f"{path}: an {payload['algo']} model, not flrp")
    payload["config"]["select_margin"] = margin
    model_file.write_payload(path, model_file.seal(payload))


def _set_config_json(path: Path, margin: float) -> None:
    """config.json / run.json: their "config" section's select_margin."""
    if not path.exists():
        return
    doc = read_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
        doc["config"]["select_margin"] = margin
        write_json(path, doc)


def _flrp(*args: str) -> None:
    cmd = [sys.executable, "-m", "flrp", *args]
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise FlrpError(f"{' '.join(args[:2])} failed (exit {res.returncode}: {last}); rerun this command to finish the run")


def _figures(ev: dict[str, Any]) -> dict[str, float]:
    return {k: ev[k] for k in ("norm_reward_mean", "norm_cost_mean") if k in ev}


def reselect(run: Path, margin: float) -> str:
    """Give one finished run another select_margin. ``reselect.json`` is written first (what the
    run had, done = false) and marked done last, so a killed reselection resumes with the
    figures from before it, and config.json changes only once the new evaluation is in."""
    if not math.isfinite(margin) or margin < 0:
        raise FlrpError(f"--margin must be a finite number >= 0, got {margin}")
    state_path = run / "reselect.json"
    state = read_json(state_path) if state_path.exists() else None
    finished = state is not None and bool(state.get("done", "after" in state))  # files before 'done' mark it by 'after'
    if finished and state.get("margin") == margin:
        return f"{run}: already at margin {margin:g}"
    cfg = read_json(run / "config.json") if (run / "config.json").exists() else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        raise FlrpError(f"{run / 'config.json'}: missing or without a 'config' section (not a finished run)")
    if not (run / "eval.json").exists():
        raise FlrpError(f"{run}: no eval.json (an unfinished run: finish it first)")
    if state is None or finished:  # a new reselection: record what the run has now
        ev = read_json(run / "eval.json")
        if not isinstance(ev, dict) or not ev.get("episodes"):
            raise FlrpError(f"{run / 'eval.json'}: no episodes")
        state = {"margin_before": float(cfg["config"].get("select_margin", LATER)), "before": _figures(ev),
                 "episodes": len(ev["episodes"]), "eval_seed": int(ev["episodes"][0]["seed"]), "cost_limit": float(ev["cost_limit"])}
    state.update(margin=margin, done=False)
    state.pop("after", None)
    write_json(state_path, state)
    for name in ("model.pt", "checkpoint.pt"):
        if (run / name).exists():
            _set_margin(run / name, margin)
    same = ["--threads", "1", "--workers", "1", "--episodes", str(state["episodes"]), "--eval-seed", str(state["eval_seed"])]
    _flrp("eval", str(run), *same, "--cost-limit", str(state["cost_limit"]))
    if (run / "diagnosis.json").exists():
        _flrp("diagnose", str(run), *same, "--cost-limit", str(state["cost_limit"]))
    for name in ("config.json", "run.json"):
        _set_config_json(run / name, margin)
    state.update(after=_figures(read_json(run / "eval.json")), done=True)
    write_json(state_path, state)
    return f"{run}: margin {state['margin_before']:g} -> {margin:g}: {state['before']} -> {state['after']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished FLRP run directories")
    p.add_argument("--margin", type=float, required=True, help="the new select_margin (a finite number >= 0)")
    a = p.parse_args(argv)
    for run in a.runs:
        try:
            print(reselect(run, a.margin), flush=True)
        except FlrpError as exc:
            print(f"flrp_reselect: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
