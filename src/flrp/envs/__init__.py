"""Environments: :func:`make` builds any benchmark task's simulator (imported lazily).

Importing this package imports no simulator: Bullet-Safety-Gym / Safety-Gymnasium are imported
on the first :func:`make` of their suite.
"""

from flrp.envs.make import make

__all__ = ["make"]
