"""Pure loss and target functions shared by FLRP and the baselines (written once)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "expectile_loss",
    "reversed_expectile_loss",
    "hj_target",
    "iql_q_target",
    "awr_weight",
    "soft_update",
    "hard_update",
]


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """IQL's asymmetric L2, Eq. 21: ``rho_tau(u) = |tau - 1{u < 0}| u^2`` with ``u = Q - V``.

    With tau > 0.5 the fitted V is an upper expectile of Q over dataset actions (optimistic,
    in-sample max). Returns the batch mean.
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.square()).mean()


def reversed_expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Reversed expectile, Eq. 8: ``rho_rev_tau(u) = |tau - 1{u > 0}| u^2`` with ``u = Q_h - V_h``.

    Weight ``1 - tau`` where Q_h > V_h and ``tau`` where Q_h < V_h, so with tau in (0.5, 1)
    V_h is pushed toward the *lower* expectile of Q_h: an in-sample ``min_a Q_h(s, a)``.
    """
    weight = torch.where(diff > 0, 1.0 - tau, tau)
    return (weight * diff.square()).mean()


def hj_target(h: torch.Tensor, next_v: torch.Tensor, terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted HJ backup target, Eq. 7/9: ``(1-gamma) h(s) + gamma max{h(s), V_h^tgt(s')}``.

    At a true terminal the trajectory stops, so the worst future constraint value is h(s) itself
    (FISOR's ``(1 - mask) * h``). Timeouts are not terminals: they bootstrap.
    """
    backup = (1.0 - gamma) * h + gamma * torch.maximum(h, next_v)
    return torch.where(terminal > 0, h, backup)


def iql_q_target(r: torch.Tensor, next_v: torch.Tensor, terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """IQL TD target, Eq. 22: ``r + gamma (1 - terminal) V(s')``."""
    return r + gamma * (1.0 - terminal) * next_v


def awr_weight(adv: torch.Tensor, inv_temperature: float, clip_max: float) -> torch.Tensor:
    """Advantage weight ``exp(inv_temperature * adv)`` clipped to (-inf, clip_max] (Table 5 clips)."""
    return torch.exp(inv_temperature * adv).clamp(max=clip_max)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) target + tau source`` in one fused foreach op."""
    t_params: list[torch.Tensor] = list(target.parameters())
    s_params: list[torch.Tensor] = list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)


@torch.no_grad()
def hard_update(target: nn.Module, source: nn.Module) -> None:
    for t, s in zip(target.parameters(), source.parameters()):
        t.copy_(s)
