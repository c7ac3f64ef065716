"""Conditional RealNVP flows with exact inverses and log-determinants (paper Eq. 2, 3, 10).

Direction convention (the paper's): a flow ``T`` maps the Gaussian base ``u`` to the latent ``z``,
``z = T(u; c)``; ``T^{-1}(z; c)`` maps back. ``forward`` returns ``log|det dz/du|`` and
``inverse`` returns ``log|det du/dz|``, so ``log p(z|c) = log N(T^{-1}(z); 0, I) + log|det du/dz|``
(Eq. 2/10). With zero coupling layers the flow is the identity and the prior is N(0, I): the
"Gaussian prior" ablation of Table 3.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from flrp.nn.mlp import MLP

__all__ = ["AffineCoupling", "ConditionalRealNVP", "ConditionalGaussianFlow", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B,) log N(u; 0, I)."""
    return -0.5 * (u.square().sum(-1) + u.shape[-1] * _LOG_2PI)


class AffineCoupling(nn.Module):
    """One RealNVP coupling layer, Eq. 3: ``z'_tr = z_tr * exp(s(z_id, c)) + t(z_id, c)``.

    ``mask`` marks the identity part. The log-scale is softly bounded,
    ``s = bound * tanh(raw / bound)``, so a single layer can never scale by more than
    ``exp(+-bound)`` (zuko's choice: a soft bound keeps gradients, a hard clamp kills them).
    The hyper-network's last layer starts at zero, so every layer starts as the identity.
    """

    def __init__(self, mask: torch.Tensor, cond_dim: int, hidden: Sequence[int], scale_bound: float) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float())
        self.scale_bound = scale_bound
        self.net = MLP(dim + cond_dim, 2 * dim, hidden, zero_last=True)

    def _scale_shift(self, z_id: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(torch.cat([z_id, cond], dim=-1)).chunk(2, dim=-1)
        keep = 1.0 - self.mask
        s = self.scale_bound * torch.tanh(s / self.scale_bound) * keep
        return s, t * keep

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(x * self.mask, cond)
        return x * torch.exp(s) + t, s.sum(-1)

    def inverse(self, y: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The identity part of y equals that of x, so s and t are recomputed exactly.
        s, t = self._scale_shift(y * self.mask, cond)
        return (y - t) * torch.exp(-s), -s.sum(-1)


class ConditionalRealNVP(nn.Module):
    """A stack of affine couplings with alternating masks, conditioned on ``c`` (e.g. the state).

    ``forward(u, c) -> (z, log|det dz/du|)``; ``inverse(z, c) -> (u, log|det du/dz|)``.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        layers: int = 4,
        hidden: Sequence[int] = (256, 256),
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if layers > 0 and dim < 2:
            raise ValueError(f"a RealNVP coupling needs dim >= 2, got {dim}")
        self.dim = dim
        half = torch.zeros(dim)
        half[: (dim + 1) // 2] = 1.0
        self.couplings = nn.ModuleList(
            AffineCoupling(half if i % 2 == 0 else 1.0 - half, cond_dim, hidden, scale_bound) for i in range(layers)
        )

    def forward(self, u: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = u.new_zeros(u.shape[:-1])
        for layer in self.couplings:
            u, ld = layer(u, cond)
            ladj = ladj + ld
        return u, ladj

    def inverse(self, z: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = z.new_zeros(z.shape[:-1])
        for layer in reversed(self.couplings):
            z, ld = layer.inverse(z, cond)
            ladj = ladj + ld
        return z, ladj

    def log_prob(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Eq. 10: ``log p(z|c) = log N(T^{-1}(z)) + log|det du/dz|``."""
        u, ladj = self.inverse(z, cond)
        return standard_normal_log_prob(u) + ladj


class ConditionalGaussianFlow(nn.Module):
    """An amortised posterior ``q(z | c)``: a diagonal Gaussian ``N(mu(c), sigma(c))`` followed by a
    conditional RealNVP, so the posterior is itself a flow (paper Sec. 3.2, "posterior flow").

    ``rsample_and_log_prob(c, eps)`` returns a reparameterised sample and its exact log-density.
    """

    LOG_STD_MIN = -5.0
    LOG_STD_MAX = 2.0

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        layers: int = 2,
        hidden: Sequence[int] = (256, 256),
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.base = MLP(cond_dim, 2 * dim, hidden)
        self.flow = ConditionalRealNVP(dim, cond_dim, layers, hidden, scale_bound)

    def rsample_and_log_prob(self, cond: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.base(cond).chunk(2, dim=-1)
        log_std = raw.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        z0 = mu + torch.exp(log_std) * eps
        log_q0 = standard_normal_log_prob(eps) - log_std.sum(-1)
        z, ladj = self.flow(z0, cond)
        return z, log_q0 - ladj
