"""flrp: safe offline reinforcement learning with Flow-guided Latent Refiner Policies.

Importing the package has no side effects: no global torch flags, no environment
registration, no downloads.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
