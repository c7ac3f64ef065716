"""Action heads: the Gaussian action decoder pi_theta(a | s, z) of FLRP (and the latent models)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from flrp.nn.mlp import MLP

__all__ = ["GaussianDecoder", "DeterministicActor"]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianDecoder(nn.Module):
    """``pi_theta(a | x) = N(tanh(mu(x)), sigma(x))`` on actions scaled to [-1, 1].

    The paper leaves the decoder's distribution open (paper-notes). We use a Gaussian whose mean
    is tanh-bounded to the action box and whose log-std is softly bounded to [-5, 1]: the NLL in
    Eq. 11 is then a proper likelihood, and the decoded mean a_bar (Sec. 3.3) is always a valid
    action.
    """

    LOG_STD_MIN = -5.0
    LOG_STD_MAX = 1.0

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = MLP(in_dim, 2 * act_dim, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.net(x).chunk(2, dim=-1)
        half = 0.5 * (self.LOG_STD_MAX - self.LOG_STD_MIN)
        log_std = self.LOG_STD_MIN + half * (torch.tanh(raw) + 1.0)
        return torch.tanh(mu), log_std

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.net(x).chunk(2, dim=-1)
        return torch.tanh(mu)

    def log_prob(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B,) sum over action dims of log N(a; mean, std)."""
        mean, log_std = self(x)
        z = (a - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * _LOG_2PI).sum(-1)


class DeterministicActor(nn.Module):
    """``s -> tanh(MLP(s))``: behaviour cloning's actor (OSRL BC: [256, 256] ReLU, tanh output)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(s))
