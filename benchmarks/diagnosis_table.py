"""One table of `flrp diagnose` figures across runs (issue 11: the diagnostic for every dataset).

    python benchmarks/diagnosis_table.py runs/sweep-fast/flrp/*/seed0/preset=fast --out results/fast-sweep/diagnoses.md
    python benchmarks/diagnosis_table.py PAPER_RUN FAST_RUN ... --out table.md --png figures.png

Reads each run directory's ``diagnosis.json`` (runs without one are listed as missing) and writes
a markdown table (one row per run, named by its directory, e.g. ``preset=paper``): critic recall k steps before each violation onset, refiner effectiveness,
whether a feasible candidate existed at flagged steps, false alarms, time outside per excursion.
``--png`` draws the same figures as grouped bars, one group per task, one bar per run name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flrp.files import atomic_path, read_json, write_text

K = (1, 5, 10, 20)  # recall columns: steps before the onset


def _f(x: object, digits: int = 2) -> str:
    return "—" if x is None or not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def row(name: str, g: dict[str, Any]) -> str:
    rec = g["recall_q"]
    exc = g["excursions"]
    recall = " | ".join(_f(rec[k]) if k < len(rec) else "—" for k in K)
    return (f"| {g['task']} | {name} | {g['episodes']} | {_f(g['norm_reward'], 3)} | {_f(g['norm_cost'])} | {g['onsets']} | {recall} | "
            f"{_f(g['refiner_effectiveness'])} | {_f(g['feasible_available_when_flagged'])} | {_f(g['false_alarm_rate'])} | "
            f"{_f(sum(exc) / len(exc), 1) if exc else '—'} / {max(exc) if exc else '—'} | {_f(g['saturated_frac'])} |")


# (panel title, value from diagnosis.json); None = not defined for that run (e.g. no onset)
PANELS = (
    ("normalized cost (limit 1)", lambda g: g["norm_cost"]),
    ("critic recall, k = 1 step before onset", lambda g: g["recall_q"][1] if len(g["recall_q"]) > 1 else None),
    ("refiner effectiveness", lambda g: g["refiner_effectiveness"]),
    ("feasible candidate when flagged", lambda g: g["feasible_available_when_flagged"]),
    ("false alarms (cost-free episodes)", lambda g: g["false_alarm_rate"]),
    ("steps outside per excursion (mean)", lambda g: sum(g["excursions"]) / len(g["excursions"]) if g["excursions"] else None),
)


def plot(docs: list[tuple[str, dict[str, Any]]], path: str) -> None:
    """Grouped bars: one panel per figure, one group per task, one bar per run name (a missing
    value, e.g. recall where no violation happened, is marked "n/a"; each bar carries its value).
    ``docs``: (run name, its diagnosis.json) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(g["task"] for _, g in docs))
    names = list(dict.fromkeys(n for n, _ in docs))
    width = 0.8 / len(names)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(max(6.0, 0.9 * len(tasks) * len(names) + 2), 2.2 * len(PANELS)), sharex=True, layout="constrained")
    try:
        for ax, (title, get) in zip(axes, PANELS):
            for j, name in enumerate(names):
                for i, task in enumerate(tasks):
                    g = next((g for n, g in docs if n == name and g["task"] == task), None)
                    v = get(g) if g is not None else None
                    x = i - 0.4 + (j + 0.5) * width
                    missing = v is None or v != v
                    if not missing:
                        ax.bar(x, v, width, color=f"C{j}")
                    # the value above each bar: a zero and a figure that is not defined look alike otherwise
                    ax.annotate("n/a" if missing else f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}", (x, 0 if missing else v), xytext=(0, 1), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6, color=f"C{j}", rotation=90 if missing else 0)
            if title.startswith("normalized cost"):
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1.0)
            ax.set_title(title, fontsize=9, loc="left")
            ax.margins(y=0.18)  # room for the value labels
            ax.grid(axis="y", alpha=0.3)
        axes[-1].set_xticks(np.arange(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
        handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{j}") for j in range(len(names))]
        fig.legend(handles, names, loc="outside upper center", ncol=len(names), frameon=False, fontsize=8)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", required=True, help="markdown file to write")
    p.add_argument("--png", default=None, help="also draw the figures as grouped bars to this PNG")
    a = p.parse_args(argv)
    head = ("| task | run | episodes | norm. reward | norm. cost | onsets | " + " | ".join(f"recall k={k}" for k in K) +
            " | refiner eff. | feasible candidate when flagged | false alarms | excursion mean / max | saturated |")
    docs: list[tuple[str, dict[str, Any]]] = []
    missing: list[str] = []
    for run in map(Path, a.runs):  # one look at each run's diagnosis.json
        if (run / "diagnosis.json").exists():
            docs.append((run.name, read_json(run / "diagnosis.json")))
        else:
            missing.append(str(run))
    if a.png:  # refused before anything is written
        keys = [(g["task"], name) for name, g in docs]
        if len(set(keys)) < len(keys):  # the figure has one bar per (task, run name)
            p.error("--png: two runs share a task and a directory name (e.g. two seeds); draw them separately")
        if not docs:
            p.error("--png: no run has a diagnosis.json to draw")
    lines = [head, "|" + "---|" * (head.count("|") - 1)] + [row(name, g) for name, g in docs]
    text = "\n".join(lines) + "\n"
    if missing:
        text += "\nNo diagnosis.json (run `flrp diagnose RUN`): " + ", ".join(missing) + "\n"
    write_text(a.out, text)
    if a.png:
        plot(docs, a.png)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
