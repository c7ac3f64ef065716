"""Conditional VAE over actions, ``p(a | s) ~ decoder(s, z)``: the behaviour model of BCQ-Lag and CPQ.

Shape of OSRL's ``osrl/common/net.py:VAE`` (itself BCQ's, Fujimoto et al. 2019): encoder
``(s, a) -> hidden (ReLU) -> (mu, log_std)`` with log_std clamped to [-4, 15]; decoder
``(s, z) -> hidden (ReLU) -> tanh``; prior samples ``z ~ N(0, I)`` clipped to [-0.5, 0.5]; loss
``MSE(recon, a) + beta * KL(q(z|s,a) || N(0, I))``, both averaged over every element.

Everything algorithm-specific (hidden width, latent size, the clamps, beta) is a constructor
argument or a call argument, so BCQ-Lag, CPQ and LSPC share this one module: LSPC for example
weights the per-sample terms from :meth:`ConditionalVAE.terms` and sums over action dims.
Randomness comes from an explicit ``generator`` so training stays bit-exact on resume.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from flrp.nn.mlp import MLP

__all__ = ["ConditionalVAE", "gaussian_kl"]


def gaussian_kl(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mu, std^2) || N(0, 1))`` = ``-0.5 (1 + 2 log_std - mu^2 - std^2)``."""
    return -0.5 * (1.0 + 2.0 * log_std - mu.square() - torch.exp(2.0 * log_std))


class ConditionalVAE(nn.Module):
    """``q(z | s, a)`` encoder and ``a = max_action * tanh(f(s, z))`` decoder.

    Args:
        obs_dim, act_dim: sizes of s and a.
        latent_dim: size of z (BCQ/OSRL use ``2 * act_dim``).
        hidden: hidden widths of both the encoder and the decoder (OSRL: (400, 400)).
        log_std_bounds: hard clamp of the encoder log-std (OSRL: (-4, 15), "for numerical stability").
        latent_clip: prior samples are clipped to ``[-latent_clip, latent_clip]`` in :meth:`decode`
            (OSRL: 0.5; LSPC: 0.25 or 0.6); ``None`` leaves them unclipped.
        max_action: the decoder's output bound (1 for actions already scaled to [-1, 1]).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (400, 400),
        log_std_bounds: tuple[float, float] = (-4.0, 15.0),
        latent_clip: float | None = 0.5,
        max_action: float = 1.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.log_std_bounds = log_std_bounds
        self.latent_clip = latent_clip
        self.max_action = max_action
        # One linear layer emitting (mu, log_std) equals OSRL's two heads on the shared trunk.
        self.encoder = MLP(obs_dim + act_dim, 2 * latent_dim, hidden)
        self.decoder = MLP(obs_dim + latent_dim, act_dim, hidden)

    def encode(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S), (B, A) -> mu (B, Z), log_std (B, Z) (clamped)."""
        mu, log_std = self.encoder(torch.cat([s, a], dim=-1)).chunk(2, dim=-1)
        lo, hi = self.log_std_bounds
        return mu, log_std.clamp(lo, hi)

    def sample_prior(self, n: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, Z) draws from N(0, I), clipped to ``latent_clip`` (BCQ's truncated prior)."""
        z = torch.randn(n, self.latent_dim, device=like.device, dtype=like.dtype, generator=generator)
        if self.latent_clip is not None:
            z = z.clamp(-self.latent_clip, self.latent_clip)
        return z

    def decode(self, s: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, S) [, (B, Z)] -> actions (B, A) in ``[-max_action, max_action]``.

        Without ``z`` a latent is drawn from the clipped prior (:meth:`sample_prior`).
        """
        if z is None:
            z = self.sample_prior(s.shape[0], s, generator)
        return self.max_action * torch.tanh(self.decoder(torch.cat([s, z], dim=-1)))

    def forward(
        self, s: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised reconstruction: returns (recon (B, A), mu (B, Z), log_std (B, Z))."""
        mu, log_std = self.encode(s, a)
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        z = mu + torch.exp(log_std) * eps
        return self.decode(s, z), mu, log_std

    def terms(
        self, s: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unreduced loss terms: squared error (B, A) and KL to N(0, I) (B, Z)."""
        recon, mu, log_std = self(s, a, generator)
        return (recon - a).square(), gaussian_kl(mu, log_std)

    def loss(
        self, s: torch.Tensor, a: torch.Tensor, beta: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """OSRL's VAE loss ``mean(MSE) + beta * mean(KL)`` (means over batch and dims) and its parts."""
        sq, kl = self.terms(s, a, generator)
        recon, kl_mean = sq.mean(), kl.mean()
        return recon + beta * kl_mean, {"vae/recon": recon.detach(), "vae/kl": kl_mean.detach()}

    @torch.no_grad()
    def kl(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B,) KL of the encoder's posterior for (s, a) to N(0, I), averaged over latent dims.

        Large values mark actions the behaviour data does not explain (CPQ's OOD detector).
        """
        mu, log_std = self.encode(s, a)
        return gaussian_kl(mu, log_std).mean(-1)
