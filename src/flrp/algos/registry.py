"""The algorithm registry: ``@register`` on each algorithm class, ``get_algorithm(name)`` to find one.

Importing :mod:`flrp.algos` imports every module of the package, so every algorithm is
registered without a hand-kept list (``flrp train --algo NAME``, ``Algorithm.load``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from flrp.errors import FlrpError

if TYPE_CHECKING:
    from flrp.algos.base import Algorithm

__all__ = ["ALGORITHMS", "get_algorithm", "register"]

ALGORITHMS: dict[str, type[Algorithm]] = {}

A = TypeVar("A", bound="type[Algorithm]")


def register(cls: A) -> A:
    """Class decorator: make ``cls`` findable by its ``name``."""
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class called ``name`` (case- and ``_``/``-``-insensitive); one line if unknown."""
    import flrp.algos  # noqa: F401  (registers every algorithm)

    key = name.lower().replace("_", "-")
    if key not in ALGORITHMS:
        raise FlrpError(f"unknown algorithm '{name}' (choose from {', '.join(sorted(ALGORITHMS))})")
    return ALGORITHMS[key]
