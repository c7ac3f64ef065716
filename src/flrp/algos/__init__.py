"""Algorithms: FLRP and the baselines, all with one interface (see :mod:`flrp.algos.base`)."""

from flrp.algos.base import ALGORITHMS, AlgoConfig, Algorithm, get_algorithm
from flrp.algos.bc import BC, BCConfig
from flrp.algos.flrp import FLRP, FLRPConfig

__all__ = ["ALGORITHMS", "AlgoConfig", "Algorithm", "get_algorithm", "FLRP", "FLRPConfig", "BC", "BCConfig"]
