"""Import ``safety_gymnasium`` 1.0.0 on Python >= 3.11 without editing site-packages.

Why this exists
---------------
safety-gymnasium 1.0.0 declares dataclass fields whose default is a numpy array, e.g.
``color: np.array = COLOR['goal']`` in ``safety_gymnasium/assets/geoms/*.py``. Since Python 3.11,
:mod:`dataclasses` rejects any *unhashable* default (``ndarray.__hash__`` is ``None``)::

    ValueError: mutable default <class 'numpy.ndarray'> for field color is not allowed:
    use default_factory

so ``import safety_gymnasium`` fails on 3.11 before any environment can be built (on 3.8-3.10 only
``list``/``dict``/``set`` defaults were rejected, so upstream never noticed).

The fix is the one the error message asks for, applied from outside: while ``safety_gymnasium``
is being imported, :func:`dataclasses.dataclass` is temporarily wrapped so that a class-level
numpy-array default is turned into ``field(default_factory=<copy of the array>)`` just before the
real decorator processes the class. Each instance then gets its own copy of the array (on 3.10 all
instances shared one array object; safety-gymnasium only reads these colours, so the result is
the same). Classes without array defaults are untouched, and the wrapper is removed as soon as the
import finishes, so nothing outside the import is affected.

Only the public ``dataclasses.dataclass`` name is replaced (the safety-gymnasium modules bind it
with ``from dataclasses import dataclass`` while they are being imported), not a private helper.
The patch is installed under a lock with a nesting counter, so concurrent or nested uses are
safe, and :func:`import_safety_gymnasium` is idempotent: once the package is in ``sys.modules``
it is returned without patching anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

__all__ = ["array_defaults_as_factories", "import_safety_gymnasium", "convert_array_defaults"]

_LOCK = threading.RLock()
_DEPTH = 0
_ORIGINAL_DATACLASS: Callable[..., Any] | None = None


def _is_ndarray(value: object) -> bool:
    """True for numpy arrays, without importing numpy if nobody has."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def convert_array_defaults(cls: type) -> type:
    """Replace every annotated numpy-array class default of ``cls`` by a ``default_factory``.

    Only names in the class's own ``__annotations__`` whose class-level value is an ndarray are
    changed; each becomes ``dataclasses.field(default_factory=value.copy)``. Returns ``cls``.
    """
    annotations = cls.__dict__.get("__annotations__", {})
    for name in annotations:
        value = cls.__dict__.get(name)
        if value is not None and _is_ndarray(value):
            setattr(cls, name, dataclasses.field(default_factory=value.copy))
    return cls


def _patched_dataclass(cls: type | None = None, /, **kwargs: Any) -> Any:
    """Drop-in for :func:`dataclasses.dataclass` that first converts array defaults."""
    original = _ORIGINAL_DATACLASS
    assert original is not None, "patched dataclass used outside array_defaults_as_factories()"

    def wrap(c: type) -> type:
        return original(convert_array_defaults(c), **kwargs)

    if cls is None:
        return wrap
    return wrap(cls)


@contextlib.contextmanager
def array_defaults_as_factories() -> Iterator[None]:
    """Context manager: inside it, ``@dataclass`` accepts numpy-array field defaults.

    Re-entrant and thread-safe (a lock guards install/removal; nested uses share one patch).
    The original ``dataclasses.dataclass`` is restored on exit, also when the body raises.
    """
    global _DEPTH, _ORIGINAL_DATACLASS
    with _LOCK:
        if _DEPTH == 0:
            _ORIGINAL_DATACLASS = dataclasses.dataclass
            dataclasses.dataclass = _patched_dataclass
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                dataclasses.dataclass = _ORIGINAL_DATACLASS  # type: ignore[assignment]
                _ORIGINAL_DATACLASS = None


def import_safety_gymnasium() -> ModuleType:
    """Import and return ``safety_gymnasium``, applying the Python 3.11 dataclass fix once.

    Raises whatever the import raises (e.g. :class:`ModuleNotFoundError` if it is not installed).
    """
    with _LOCK:  # checked under the lock: another thread may be half-way through the import
        module = sys.modules.get("safety_gymnasium")
        if module is not None:
            return module
        with array_defaults_as_factories():
            return importlib.import_module("safety_gymnasium")
