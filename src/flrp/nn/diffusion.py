"""A small DDPM noise-prediction actor: FISOR's diffusion policy, in PyTorch.

Source (facts only, re-written): ``ZhengYinan-AIR/FISOR`` @ 2097e8b, ``jaxrl5/networks/diffusion.py``
(``vp_beta_schedule``, ``FourierFeatures``, ``DDPM``, ``ddpm_sampler``), ``jaxrl5/networks/resnet.py``
(``MLPResNet``), ``jaxrl5/networks/mlp.py`` (the time encoder) and ``configs/train_config.py`` (the
values used: T=5, VP schedule, ``ln_resnet`` with 3 blocks, LayerNorm, dropout 0.1, mish).

The network predicts the noise ``eps`` that turned a data action ``a`` into
``a_t = sqrt(abar_t) a + sqrt(1 - abar_t) eps`` at discrete step ``t in {0, ..., T-1}``; the
denoiser sees ``[a_t, s, cond(t)]`` where ``cond`` is an MLP on learnable Fourier features of t.
Sampling runs the DDPM reverse chain from ``a_{T-1} ~ N(0, I)`` and clips to [-1, 1] after every
step (FISOR ``clip_sampler=True``).

Every random draw (timesteps, noise, dropout masks, sampler noise) takes an explicit
``torch.Generator`` so a training run resumes bit-exactly from a checkpoint (dropout through the
global RNG would not).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["vp_beta_schedule", "FourierFeatures", "MLPResNet", "DiffusionActor"]


def vp_beta_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """Discretised VP-SDE schedule (FISOR ``vp_beta_schedule``): for t = 1..T,
    ``beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min) (2t - 1) / (2 T^2))``."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alpha = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    return (1.0 - alpha).float()


class FourierFeatures(nn.Module):
    """Learnable Fourier features ``[cos(2 pi x W^T), sin(2 pi x W^T)]``; W ~ N(0, 0.2^2) (FISOR)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError(f"FourierFeatures: out_dim must be even, got {out_dim}")
        self.kernel = nn.Parameter(0.2 * torch.randn(out_dim // 2, in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2.0 * math.pi * x @ self.kernel.T
        return torch.cat([torch.cos(f), torch.sin(f)], dim=-1)


def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``generator`` (``F.dropout`` only uses the global RNG)."""
    if not training or p <= 0.0:
        return x
    keep = torch.rand(x.shape, device=x.device, generator=generator) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class _ResNetBlock(nn.Module):
    """FISOR ``MLPResNetBlock``: x + Dense(h)(mish(Dense(4h)(LayerNorm(Dropout(x)))))."""

    def __init__(self, width: int, dropout: float, layer_norm: bool) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        y = _dropout(x, self.dropout, self.training, generator)
        y = self.fc2(F.mish(self.fc1(self.norm(y))))
        return x + y


class MLPResNet(nn.Module):
    """FISOR ``MLPResNet``: Dense(h) -> blocks -> mish -> Dense(out) (first/last layers Xavier-uniform)."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, blocks: int = 3, dropout: float = 0.1, layer_norm: bool = True) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(_ResNetBlock(width, dropout, layer_norm) for _ in range(blocks))
        self.out = nn.Linear(width, out_dim)
        for layer in (self.inp, self.out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, generator)
        return self.out(F.mish(h))


class DiffusionActor(nn.Module):
    """DDPM noise-prediction policy ``eps_theta(a_t, s, t)`` on actions in [-1, 1].

    Args:
        obs_dim, act_dim: input/output sizes.
        steps: diffusion steps T (FISOR: 5).
        width, blocks, dropout, layer_norm: the MLP-ResNet denoiser (FISOR: 256, 3, 0.1, True).
        time_dim: Fourier features of t (FISOR ``time_dim``: 64).
        cond_hidden: width of the 2-layer mish MLP on the time features (FISOR: (128, 128)).
        beta_min, beta_max: VP schedule (FISOR: 0.1, 10).
        clip_sampler: clip the chain to [-1, 1] after every reverse step (FISOR: True).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        steps: int = 5,
        width: int = 256,
        blocks: int = 3,
        dropout: float = 0.1,
        layer_norm: bool = True,
        time_dim: int = 64,
        cond_hidden: int = 128,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        clip_sampler: bool = True,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {steps}")
        self.act_dim = act_dim
        self.steps = steps
        self.clip_sampler = clip_sampler
        betas = vp_beta_schedule(steps, beta_min, beta_max)
        alphas = 1.0 - betas
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alpha_hats", torch.cumprod(alphas, 0))
        self.time_features = FourierFeatures(1, time_dim)
        # FISOR's cond encoder: MLP(hidden_dims=(128, 128), mish, activate_final=False).
        first, last = nn.Linear(time_dim, cond_hidden), nn.Linear(cond_hidden, cond_hidden)
        self.cond = nn.Sequential(first, nn.Mish(), last)
        for layer in (first, last):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.denoiser = MLPResNet(act_dim + obs_dim + cond_hidden, act_dim, width, blocks, dropout, layer_norm)

    def forward(self, s: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Predicted noise (B, act_dim) for noisy actions ``a_t`` (B, act_dim) at integer steps ``t`` (B,)."""
        cond = self.cond(self.time_features(t.to(s.dtype).unsqueeze(-1)))
        return self.denoiser(torch.cat([a_t, s, cond], dim=-1), generator)

    def loss(self, s: torch.Tensor, a: torch.Tensor, weight: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Weighted noise-prediction loss ``mean_B(w * sum_dims (eps_hat - eps)^2)`` (FISOR ``update_actor``)."""
        B = a.shape[0]
        t = torch.randint(self.steps, (B,), device=a.device, generator=generator)
        eps = torch.randn(a.shape, device=a.device, generator=generator)
        abar = self.alpha_hats[t].unsqueeze(-1)
        a_t = abar.sqrt() * a + (1.0 - abar).sqrt() * eps
        per_sample = (self(s, a_t, t, generator) - eps).square().sum(-1)
        if weight is not None:
            per_sample = per_sample * weight
        return per_sample.mean()

    @torch.no_grad()
    def sample(self, s: torch.Tensor, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` actions per state by the DDPM reverse chain: (B, obs_dim) -> (B, n, act_dim) in [-1, 1].

        Per step (FISOR ``ddpm_sampler``, temperature 1, no repeated last step):
        ``a <- (a - (1 - alpha_t) / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + 1{t > 0} sqrt(beta_t) z``.
        """
        B = s.shape[0]
        s_rep = s.repeat_interleave(n, dim=0)  # (B*n, obs_dim), state-major
        a = torch.randn(B * n, self.act_dim, device=s.device, generator=generator)
        for t in range(self.steps - 1, -1, -1):
            tt = torch.full((B * n,), t, device=s.device, dtype=torch.long)
            eps_hat = self(s_rep, a, tt, generator)  # dropout (train mode only) uses it too
            a = (a - (1.0 - self.alphas[t]) / (1.0 - self.alpha_hats[t]).sqrt() * eps_hat) / self.alphas[t].sqrt()
            if t > 0:
                a = a + self.betas[t].sqrt() * torch.randn(a.shape, device=s.device, generator=generator)
            if self.clip_sampler:
                a = a.clamp(-1.0, 1.0)
        return a.clamp(-1.0, 1.0).reshape(B, n, self.act_dim)
