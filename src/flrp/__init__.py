"""flrp: safe offline reinforcement learning with Flow-guided Latent Refiner Policies.

Importing the package has no side effects: no global torch flags, no environment
registration, no downloads. ``flrp.make(task)`` is resolved lazily.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "make"]


def __getattr__(name: str) -> Any:
    if name == "make":
        from flrp.envs import make

        return make
    raise AttributeError(f"module 'flrp' has no attribute {name!r}")
