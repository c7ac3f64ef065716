"""Algorithms: FLRP and the baselines, all with one interface (see :mod:`flrp.algos.base`).

Every module in this package that defines an algorithm registers it with ``@register``; importing
the package imports them all, so ``get_algorithm(name)`` and ``flrp train --algo NAME`` see every
algorithm without a hand-kept list.
"""

import importlib
import pkgutil

from flrp.algos.base import ALGORITHMS, AlgoConfig, Algorithm, get_algorithm
from flrp.algos.bc import BC, BCConfig
from flrp.algos.flrp import FLRP, FLRPConfig

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ALGORITHMS", "AlgoConfig", "Algorithm", "get_algorithm", "FLRP", "FLRPConfig", "BC", "BCConfig"]
