"""Value networks shared by IQL reward critics, HJ feasibility critics and the baselines."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from flrp.nn.mlp import MLP, EnsembleMLP

__all__ = ["QEnsemble", "VNet"]


class QEnsemble(nn.Module):
    """``E`` Q-networks ``(s, a) -> R`` computed in one batched pass; returns (E, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), ensemble: int = 2) -> None:
        super().__init__()
        self.net = EnsembleMLP(ensemble, obs_dim + act_dim, 1, hidden)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([s, a], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def set_output_bias(self, value: float) -> None:
        """Start every member's output near ``value`` (e.g. the fixed point of safe states)."""
        self.net.layers[-1].bias.fill_(value)


class VNet(nn.Module):
    """``s -> R``; returns (B,)."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s).squeeze(-1)

    @torch.no_grad()
    def set_output_bias(self, value: float) -> None:
        last = self.net.net[-1]
        assert isinstance(last, nn.Linear)
        last.bias.fill_(value)
