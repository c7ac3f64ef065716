"""One table of `flrp diagnose` figures across runs (issue 11: the diagnostic for every dataset).

    python benchmarks/diagnosis_table.py runs/sweep-fast/flrp/*/seed0/preset=fast --out results/fast-sweep/diagnoses.md

Reads each run directory's ``diagnosis.json`` (runs without one are listed as missing) and writes
a markdown table (one row per run, named by its directory, e.g. ``preset=paper``): critic recall k steps before each violation onset, refiner effectiveness,
whether a feasible candidate existed at flagged steps, false alarms, time outside per excursion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flrp.files import read_json, write_text

K = (1, 5, 10, 20)  # recall columns: steps before the onset


def _f(x: object, digits: int = 2) -> str:
    return "—" if x is None or not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def row(run: Path) -> str:
    g = read_json(run / "diagnosis.json")
    rec = g["recall_q"]
    exc = g["excursions"]
    recall = " | ".join(_f(rec[k]) if k < len(rec) else "—" for k in K)
    return (f"| {g['task']} | {run.name} | {g['episodes']} | {_f(g['norm_reward'], 3)} | {_f(g['norm_cost'])} | {g['onsets']} | {recall} | "
            f"{_f(g['refiner_effectiveness'])} | {_f(g['feasible_available_when_flagged'])} | {_f(g['false_alarm_rate'])} | "
            f"{_f(sum(exc) / len(exc), 1) if exc else '—'} / {max(exc) if exc else '—'} | {_f(g['saturated_frac'])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", required=True, help="markdown file to write")
    a = p.parse_args(argv)
    head = ("| task | run | episodes | norm. reward | norm. cost | onsets | " + " | ".join(f"recall k={k}" for k in K) +
            " | refiner eff. | feasible candidate when flagged | false alarms | excursion mean / max | saturated |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    missing = []
    for run in map(Path, a.runs):
        if (run / "diagnosis.json").exists():
            lines.append(row(run))
        else:
            missing.append(str(run))
    text = "\n".join(lines) + "\n"
    if missing:
        text += "\nNo diagnosis.json (run `flrp diagnose RUN`): " + ", ".join(missing) + "\n"
    write_text(a.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
