"""Benchmark layer: sweeps of algorithms × datasets × seeds on Ray, and their reports.

``flrp sweep`` (:func:`flrp.benchmark.suite.sweep_main`) expands and runs a sweep;
:func:`flrp.benchmark.report.write_report` turns its runs' ``eval.json`` files into
``results.md`` / ``results.csv`` / ``results.png``. Ray is imported only when a sweep runs
(``pip install "flrp[sweep]"``).
"""

from flrp.benchmark.report import collect_runs, summarize, write_report
from flrp.benchmark.suite import RunSpec, SweepResult, SweepSettings, expand, run_sweep, sweep_main

__all__ = [
    "RunSpec",
    "SweepSettings",
    "SweepResult",
    "expand",
    "run_sweep",
    "sweep_main",
    "collect_runs",
    "summarize",
    "write_report",
]
