"""One training run as a library call, shared by ``flrp train`` and every ``flrp sweep`` task.

* :func:`train_and_evaluate` (:mod:`flrp.training.run`): a :class:`TrainJob` (algorithm, config,
  dataset, task, run directory, evaluation options) -> trained model, ``eval.json``, a
  :class:`RunResult`.
* :mod:`flrp.training.flags`: the one place config dataclasses and jobs become ``flrp train``
  flags and back.
"""

from flrp.training.flags import job_argv, job_from_namespace, parse_train_argv
from flrp.training.run import EvalOptions, RunResult, TrainJob, default_run_dir, evaluate_run, resolve_model, run_dataset, train_and_evaluate

__all__ = [
    "EvalOptions",
    "RunResult",
    "TrainJob",
    "default_run_dir",
    "evaluate_run",
    "job_argv",
    "job_from_namespace",
    "parse_train_argv",
    "resolve_model",
    "run_dataset",
    "train_and_evaluate",
]
