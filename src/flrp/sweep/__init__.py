"""Sweeps of algorithms × datasets × seeds (× config grids) on Ray, and their reports.

* :mod:`flrp.sweep.spec`: what a sweep is (runs, their directories and jobs, ``sweep.json``).
* :mod:`flrp.sweep.runner`: ``flrp sweep`` (:func:`sweep_main`), each run one Ray task calling
  :func:`flrp.training.train_and_evaluate`.
* :mod:`flrp.sweep.report`: :func:`write_report` turns the runs' ``eval.json`` files into
  ``results.md`` / ``results.csv`` / ``results.png``.
* :mod:`flrp.sweep.archive`: :func:`archive_records` copies the runs' small record files into a
  directory to commit (``flrp sweep report DIR --archive DEST``).

Ray is imported only when a sweep runs (``pip install "flrp[sweep]"``). (``flrp.sweep`` was
``flrp.benchmark`` before; ``benchmarks/`` holds the speed scripts.)
"""

from flrp.sweep.report import collect_runs, summarize, write_report
from flrp.sweep.runner import SweepResult, run_sweep, sweep_main
from flrp.sweep.spec import RunSpec, SweepSettings, expand

__all__ = [
    "RunSpec",
    "SweepResult",
    "SweepSettings",
    "collect_runs",
    "expand",
    "run_sweep",
    "summarize",
    "sweep_main",
    "write_report",
]
