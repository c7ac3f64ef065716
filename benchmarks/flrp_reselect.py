"""Give trained FLRP runs another inference-time selection margin, in place, and re-evaluate them
(issue 11: the fast preset's ``select_margin``).

    python benchmarks/flrp_reselect.py runs/sweep-fast/flrp/*/seed*/preset=fast --margin 0.6

``select_margin`` is read only at inference (a test pins that training with any margin gives the
same weights), so a finished run of the preset without it becomes, bit for bit, the run the
preset with it trains: this rewrites ``select_margin`` in the run's ``model.pt``,
``checkpoint.pt`` and ``config.json`` (each written to a temporary file, then renamed), then
reruns ``flrp eval`` on it (as many episodes as its evaluation had, the same seeds) and ``flrp diagnose`` where the run
had a diagnosis. The previous figures are kept in ``reselect.json``. A run already at the margin
is skipped, so the command can be rerun after a kill.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from flrp.algos import model_file
from flrp.errors import FlrpError
from flrp.files import read_json, write_json


def _set_margin(path: Path, margin: float) -> float:
    """Rewrite select_margin in one model file; returns the margin it had."""
    payload = model_file.read_payload(path)
    if payload["algo"] != "flrp":
        raise FlrpError(f"{path}: an {payload['algo']} model, not flrp")
    old = float(payload["config"].get("select_margin", model_file.LATER_FIELDS["flrp"]["select_margin"]))
    payload["config"]["select_margin"] = margin
    model_file.write_payload(path, model_file.seal(payload))
    return old


def reselect(run: Path, margin: float) -> str:
    cfg = read_json(run / "config.json")
    old = float(cfg["config"].get("select_margin", 0.0))
    if old == margin and (run / "reselect.json").exists():
        return f"{run}: already at margin {margin:g}"
    if not (run / "eval.json").exists():
        raise FlrpError(f"{run}: no eval.json (an unfinished run: finish it first)")
    before = read_json(run / "eval.json")
    record = {"margin_before": old, "margin": margin, "before": {k: before[k] for k in ("norm_reward_mean", "norm_cost_mean") if k in before}}
    for name in ("model.pt", "checkpoint.pt"):
        if (run / name).exists():
            _set_margin(run / name, margin)
    cfg["config"]["select_margin"] = margin
    write_json(run / "config.json", cfg)
    episodes = str(len(before["episodes"]))  # the run's own evaluation: same count, same seeds (from 10000)
    subprocess.run(["flrp", "eval", str(run), "--threads", "1", "--workers", "1", "--episodes", episodes], check=True, stdout=subprocess.DEVNULL)
    if (run / "diagnosis.json").exists():
        subprocess.run(["flrp", "diagnose", str(run), "--threads", "1", "--workers", "1", "--episodes", episodes], check=True, stdout=subprocess.DEVNULL)
    after = read_json(run / "eval.json")
    record["after"] = {k: after[k] for k in ("norm_reward_mean", "norm_cost_mean") if k in after}
    write_json(run / "reselect.json", record)
    return f"{run}: margin {old:g} -> {margin:g}: {record['before']} -> {record['after']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished FLRP run directories")
    p.add_argument("--margin", type=float, required=True, help="the new select_margin (>= 0)")
    a = p.parse_args(argv)
    if a.margin < 0:
        p.error(f"--margin must be >= 0, got {a.margin}")
    for run in a.runs:
        try:
            print(reselect(run, a.margin), flush=True)
        except FlrpError as exc:
            print(f"flrp_reselect: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
