"""Moved to :mod:`flrp.metrics_log` (a name that does not shadow the standard library's
``logging``); ``MetricsLogger`` stays importable from here."""

from flrp.metrics_log import MetricsLogger

__all__ = ["MetricsLogger"]
