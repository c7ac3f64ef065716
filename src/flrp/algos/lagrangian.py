"""Lagrange multipliers for cost-constrained methods, and the per-step cost-value threshold.

* :func:`qc_threshold` turns an episode cost limit into the bound on a discounted cost value
  used by BCQ-Lag (OSRL ``BCQL.qc_thres``), CPQ (``CPQ.q_thres``) and FISOR (``qc_thres``).
* :class:`PIDLagrangian` is OSRL's ``osrl/common/net.py:LagrangianPIDController`` (Stooke et al.
  2020, "Responsive Safety in RL by PID Lagrangian Methods") as an ``nn.Module`` whose state
  lives in buffers, so it is part of ``state_dict`` and a checkpoint resumes it exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["qc_threshold", "PIDLagrangian"]


def qc_threshold(cost_limit: float, gamma: float, episode_len: int) -> float:
    """``limit * (1 - gamma^L) / (1 - gamma) / L``: the discounted cost value of spending the
    episode budget ``limit`` evenly over ``L`` steps (OSRL BCQL/CPQ; e.g. 10, 0.99, 300 -> 3.170).

    With ``gamma == 1`` this is the limit itself spread per step, times L: the limit.
    """
    if episode_len <= 0:
        raise ValueError(f"episode_len must be positive, got {episode_len}")
    if gamma == 1.0:
        return float(cost_limit)
    return float(cost_limit * (1.0 - gamma**episode_len) / (1.0 - gamma) / episode_len)


class PIDLagrangian(nn.Module):
    """PID-controlled multiplier ``lambda >= 0`` for the constraint ``E[Q_c] <= threshold``.

    Per call with a batch of cost values (OSRL's arithmetic, in its order)::

        error    = mean(Q_c) - threshold
        deriv    = relu(error - error_prev)          # only rising errors push
        integral = relu(integral + error)            # anti-windup: never below zero
        lambda   = relu(KP relu(error) + KI integral + KD deriv)
        error_prev = error

    Buffers ``error_prev``, ``integral`` and ``multiplier`` (the last lambda, for logging) start at
    0 like OSRL's. Everything stays on-device with no host sync.
    """

    error_prev: torch.Tensor
    integral: torch.Tensor
    multiplier: torch.Tensor

    def __init__(self, kp: float, ki: float, kd: float, threshold: float) -> None:
        super().__init__()
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.threshold = float(threshold)
        self.register_buffer("error_prev", torch.zeros(()))
        self.register_buffer("integral", torch.zeros(()))
        self.register_buffer("multiplier", torch.zeros(()))

    @torch.no_grad()
    def update(self, qc: torch.Tensor) -> torch.Tensor:
        """Advance the controller with cost values ``qc`` (any shape); returns the new lambda (0-d)."""
        error = (qc.detach().float() - self.threshold).mean()
        deriv = F.relu(error - self.error_prev)
        self.integral.copy_(F.relu(self.integral + error))
        self.error_prev.copy_(error)
        lam = F.relu(self.kp * F.relu(error) + self.ki * self.integral + self.kd * deriv)
        self.multiplier.copy_(lam)
        return lam.clone()

    def extra_repr(self) -> str:
        return f"kp={self.kp}, ki={self.ki}, kd={self.kd}, threshold={self.threshold:.4g}"
