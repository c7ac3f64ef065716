"""CPQ: Constraints Penalized Q-learning (Xu, Zhan & Zhu, AAAI 2022).

Reference code: OSRL ``osrl/algorithms/cpq.py`` (``CPQ``/``CPQTrainer``) with
``osrl/common/net.py`` (``VAE``, ``EnsembleQCritic``, ``SquashedGaussianMLPActor``); defaults from
``examples/configs/cpq_configs.py`` (OSRL @ 03a4586).

The idea: a cost critic Q_c that is *pushed up on out-of-distribution actions* (detected by a
VAE behaviour model) makes every unfamiliar action look unsafe. The reward critic then only
bootstraps through next actions whose cost value is within the threshold, and the actor only
maximises Q where Q_c is within it. Both gates use ``1[Q_c <= thres]``. One update step, in
OSRL's order:

1. VAE: ``MSE + beta KL`` on dataset pairs.
2. Reward critic: ``r + gamma (1 - done) 1[Qc'(s', a') <= thres] Q'(s', a')`` with
   ``a' ~ pi(s')``, min-over-members target critics and ``done = terminals | timeouts``
   (``cpq.py:137-153``, ``osrl/common/dataset.py:815``).
3. Cost critic: ``c + gamma Qc'(s', a')`` with a fresh ``a' ~ pi(s')`` and **no done mask**
   (``cpq.py:159-161``), plus the OOD term ``-alpha (E_nu[Qc] - qc_thres)``. nu is the set of
   policy samples (10 per state) whose VAE KL is at or above the 0.75-quantile over all samples
   of the batch, about 25% of them. The dual step on alpha is
   ``log alpha += alpha_lr * alpha * (qc_thres - E_nu[Qc])``, clamped to [-5, 5].
4. Actor (squashed Gaussian): ``-mean(1[Qc(s, pi) <= thres] Q(s, pi))`` (no entropy term).
5. Soft update of the critic targets (tau 0.005).

The OOD penalty (``ood_penalty``). OSRL computes this term under ``torch.no_grad`` with the target
cost critic (``cpq.py:158-185``), and alpha is not a leaf with a gradient (``cpq.py:93``), so in
OSRL the term adds **no gradient** (``cpq.py:186-187``). The cost critic there is plain TD, and
alpha only moves its own logged value. OSRL also feeds pre-tanh Gaussian samples to the VAE and
to Q_c, and it averages the masked values over all 10 samples, not over the OOD ones. The default
``"osrl"`` is exactly that arithmetic (issue 14: the authors' code is the default). ``"paper"``
implements what the CPQ paper intends:

* the gradient of ``-alpha E_nu[Qc]`` reaches every online cost-critic member, which pushes Q_c
  up on OOD actions;
* the samples are the squashed actions the policy actually takes, inside the box the VAE was
  trained on;
* ``E_nu`` is the mean over the OOD samples.

The mask and alpha stay gradient-free, as in the paper's dual formulation.

The data conventions are OSRL's by default and shared with BCQ-L (``bcq_lag.py`` lists the flags
that leave them): raw observations, timeouts terminal, no done mask on the cost backup, separate
next-action draws for the two targets. The policy target network OSRL keeps but never reads is
not built. The thresholds are in scaled cost units (identical at OSRL's cost_scale 1).

Known behaviour (measured before issue 14, with the ``"paper"`` penalty, terminal-only masks and
standardised observations). Where the actor's gate is closed, ``1[Qc <= thres] Q`` gives the actor no
gradient. Nothing pulls an unsafe policy back: it can only change through states where its own
action still passes the gate. The gated reward backup does not stop it either. On the toy task
the reward is the velocity, so what it loses past the gate is distance that a safe stop would not
earn anyway. On the toy task CPQ goes to full throttle within ~250 steps, before Q_c has
propagated back to the start states, and then swings between "full throttle" and "stand still".
Measured at hidden 64: cost 81 at 2.5k steps, 0 at 5k, 60 (seed 1) or 0 (seed 0) at 7.5k, 58
(seed 0) at 15k. Its cost critic, in contrast, is strongly pessimistic: OOD values reach several
times 1 / (1 - gamma). That holds reliably, and tests/test_baselines_bcq_cpq.py tests it.
With OSRL's defaults (issue 14: OSRL penalty, raw observations, timeouts terminal; hidden 64,
batch 256, seeds 0 and 1, 10 episodes) CPQ drives at full throttle on the toy task, cost 81.6 at
1k and 3k steps, where BCQ-Lag costs 52-55; the paper's penalty stands still (cost 0) at 3k
steps with seed 0 and is at 81.6 with seed 1. So CPQ as OSRL runs it is not the more
conservative of the two on the toy task.
Line-by-line against OSRL (gates on q_thres, qc_thres = 1.5 q_thres for the OOD level, min over
members, no entropy term, the alpha rule and clamp, the scales and learning rates), the only
differences are the deliberate ones listed above.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from flrp.algos.lagrangian import qc_threshold
from flrp.algos.registry import register
from flrp.algos.vae_q import VAEQAlgorithm, VAEQConfig
from flrp.data.spec import DataSpec
from flrp.nn.critics import QEnsemble
from flrp.nn.frozen import call_frozen
from flrp.nn.functional import soft_update
from flrp.nn.mlp import MLP

__all__ = ["CPQConfig", "CPQ", "SquashedGaussianActor"]


@dataclass
class CPQConfig(VAEQConfig):
    """CPQ hyperparameters; every default is OSRL's ``cpq_configs.py:CPQTrainConfig`` (the shared
    VAE/critic settings are in :class:`~flrp.algos.vae_q.VAEQConfig`)."""

    # OSRL actor_lr 1e-4 (Table 4 lists 1e-3 for CPQ, which is OSRL's critic lr).
    actor_lr: float = 1e-4
    # OSRL alpha_lr 1e-4: step of the dual ascent on log alpha (the OOD penalty weight).
    alpha_lr: float = 1e-4
    # OSRL KL quantile 0.75 (hard-coded): samples with VAE KL >= this batch quantile count as OOD.
    ood_quantile: float = 0.75
    # OSRL qc_scalar 1.5: the OOD cost values are pushed towards qc_scalar * thres, i.e. above the
    # gate's thres, so OOD actions are gated out. Larger = more conservative.
    qc_scalar: float = 1.5
    # OSRL log_alpha init 0 and clamp [-5, 5] (hard-coded).
    log_alpha_init: float = 0.0
    log_alpha_max: float = 5.0
    # "osrl": OSRL's exact, gradient-free arithmetic (cpq.py:158-187: the term is built under
    # no_grad and log_alpha has no grad); "paper": the OOD term trains the cost critic (module
    # docstring).
    ood_penalty: Literal["paper", "osrl"] = "osrl"


class SquashedGaussianActor(nn.Module):
    """``a = tanh(u)``, ``u ~ N(mu(s), std(s))``, log-std clamped to [-20, 2]
    (OSRL ``SquashedGaussianMLPActor``: ReLU trunk, mean and log-std heads).

    One output layer of width ``2 * act_dim`` equals OSRL's two heads on the shared trunk.
    """

    LOG_STD_MIN = -20.0
    LOG_STD_MAX = 2.0

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 2 * act_dim, hidden)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> pre-tanh mean (B, A), std (B, A)."""
        mu, log_std = self.net(s).chunk(2, dim=-1)
        return mu, torch.exp(log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX))

    def sample_pre_tanh(self, s: torch.Tensor, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised pre-tanh samples: (B, A), or (n, B, A) with ``n``."""
        mu, std = self(s)
        shape = mu.shape if n is None else (n, *mu.shape)
        eps = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + std * eps

    def sample(self, s: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tanh(self.sample_pre_tanh(s, generator=generator))

    def mode(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(s)[0])


class DualVariable(nn.Module):
    """A gradient-free ``log alpha`` held in a buffer so checkpoints carry it."""

    log_alpha: torch.Tensor

    def __init__(self, init: float) -> None:
        super().__init__()
        self.register_buffer("log_alpha", torch.tensor(float(init)))


@register
class CPQ(VAEQAlgorithm):
    """Constraints Penalized Q-learning (OSRL's CPQ; the paper's OOD cost penalty is ``ood_penalty="paper"``)."""

    name = "cpq"
    Config = CPQConfig
    config: CPQConfig
    # OSRL's CPQTrainer.rollout acts with deterministic=True (tanh of the Gaussian mean).
    eval_deterministic = True

    # ------------------------------------------------------------------ networks
    def _build(self, spec: DataSpec) -> None:
        c = self.config
        S, A, H = spec.obs_dim, spec.act_dim, c.hidden_sizes
        m = self.modules
        m["vae"] = self._osrl_vae(spec)
        m["actor"] = SquashedGaussianActor(S, A, H)
        m["critic"] = QEnsemble(S, A, H, ensemble=c.num_q)
        m["cost_critic"] = QEnsemble(S, A, H, ensemble=c.num_qc)
        for name in ("critic", "cost_critic"):
            m[f"{name}_target"] = copy.deepcopy(m[name]).requires_grad_(False)
        m["alpha"] = DualVariable(c.log_alpha_init)

    @property
    def q_threshold(self) -> float:
        """Gate of the reward backup and the actor (OSRL ``CPQ.q_thres``), scaled cost units."""
        spec = self._require_built()
        c = self.config
        return c.cost_scale * qc_threshold(c.cost_limit, c.gamma, c.episode_len or spec.max_episode_steps)

    @property
    def qc_threshold(self) -> float:
        """Level the OOD cost values are pushed to (OSRL ``CPQ.qc_thres = qc_scalar * q_thres``)."""
        return self.config.qc_scalar * self.q_threshold

    # ------------------------------------------------------------------ OOD term
    def _ood_cost(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (penalty value E_nu[Qc] per member with gradient or a constant, (E,) or ();
        E_nu[min Qc] without gradient for the dual step, 0-d; fraction of samples flagged OOD)."""
        c, m, gen = self.config, self.modules, self._noise_gen
        N, B = c.sample_action_num, s.shape[0]
        s_rep = s.unsqueeze(0).expand(N, *s.shape).reshape(N * B, -1)  # (N * B, S), sample-major
        with torch.no_grad():
            u = m["actor"].sample_pre_tanh(s, n=N, generator=gen).reshape(N * B, -1)
            a_ood = u if c.ood_penalty == "osrl" else torch.tanh(u)
            kl = m["vae"].kl(s_rep, a_ood)  # (N * B,)
            # OSRL flags samples with KL >= its 0.75-quantile (torch.quantile, linear
            # interpolation): with distinct values these are exactly the top k below. topk keeps the
            # shape fixed (no host sync on CUDA), and the cost critic then runs on those k samples
            # only, instead of all N * B with a mask (3/4 of the critic's work was multiplied by 0).
            n = N * B
            k = n - math.ceil(c.ood_quantile * (n - 1) - 1e-9)
            idx = kl.topk(k, sorted=False).indices
            frac = torch.full((), k / n, device=s.device)
        s_ood, a_sel = s_rep.index_select(0, idx), a_ood.index_select(0, idx)
        if c.ood_penalty == "osrl":
            with torch.no_grad():
                qc = m["cost_critic_target"](s_ood, a_sel).min(0).values
                # OSRL: (mask * qc).mean(0).mean(): divided by all N samples, not the OOD count.
                value = qc.sum() / n
            return value, value, frac
        qc_ood = m["cost_critic"](s_ood, a_sel)  # (E, k), trains the critic
        per_member = qc_ood.mean(1)  # (E,) E_nu[Qc_i]
        with torch.no_grad():
            value = qc_ood.detach().min(0).values.mean()
        return per_member, value, frac

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, m, gen = self.config, self.modules, self._noise_gen
        s, a, s2 = batch["obs"], batch["act"], batch["next_obs"]
        r, cost, term = batch["rew"], batch["cost"], batch["terminal"]
        thres = self.q_threshold

        # 1. VAE.
        loss_vae, vae_metrics = m["vae"].loss(s, a, c.beta, generator=gen)
        self._step(self.optimizers["vae"], loss_vae)

        # 2. Reward target with a' ~ pi(s'), gated by the cost target at the same a' (cpq.py:141-146).
        with torch.no_grad():
            a2 = m["actor"].sample(s2, generator=gen)
            q_next = m["critic_target"](s2, a2).min(0).values
            qc_next = m["cost_critic_target"](s2, a2).min(0).values
            safe_next = (qc_next <= thres).float()
            y_r = r + c.gamma * (1.0 - term) * safe_next * q_next  # constraints-penalized backup
        loss_q = (m["critic"](s, a) - y_r).square().mean(1).sum()  # sum of member MSEs (OSRL)
        self._step(self.optimizers["critic"], loss_q)

        # 3. Cost target with a fresh a' (cpq.py:159), no done mask (cpq.py:161).
        with torch.no_grad():
            if not c.shared_next_action:
                qc_next = m["cost_critic_target"](s2, m["actor"].sample(s2, generator=gen)).min(0).values
            y_c = self._cost_target(cost, term, qc_next)

        alpha = m["alpha"].log_alpha.exp()
        td_qc = (m["cost_critic"](s, a) - y_c).square().mean(1).sum()
        penalty_value, qc_ood, frac_ood = self._ood_cost(s)
        # Sum over members like the TD term, so every member is pushed up on OOD actions.
        loss_qc = td_qc - alpha * (penalty_value - self.qc_threshold).sum()
        self._step(self.optimizers["cost_critic"], loss_qc)
        # Dual ascent on log alpha (OSRL's rule): alpha grows while OOD costs sit below qc_thres.
        with torch.no_grad():
            la = m["alpha"].log_alpha
            la.add_(c.alpha_lr * alpha * (self.qc_threshold - qc_ood)).clamp_(-c.log_alpha_max, c.log_alpha_max)

        # 4. Actor: maximise Q only where the cost value is within the threshold.
        a_pi = m["actor"].sample(s, generator=gen)
        q_pi = call_frozen(m["critic"], s, a_pi).min(0).values
        qc_pi = call_frozen(m["cost_critic"], s, a_pi).min(0).values
        safe_pi = (qc_pi <= thres).float().detach()
        loss_actor = -(safe_pi * q_pi).mean()
        self._step(self.optimizers["actor"], loss_actor)

        return {
            "vae/loss": loss_vae.detach(),
            **vae_metrics,
            "critic/q_loss": loss_q.detach(),
            "critic/qc_td": td_qc.detach(),
            "critic/qc_loss": loss_qc.detach(),
            "critic/safe_next_frac": safe_next.mean(),
            "ood/qc": qc_ood.detach(),
            "ood/frac": frac_ood,
            "ood/alpha": alpha.detach(),
            "actor/loss": loss_actor.detach(),
            "actor/q_pi": q_pi.detach().mean(),
            "actor/qc_pi": qc_pi.detach().mean(),
            "actor/safe_frac": safe_pi.mean(),
        }

    def after_update(self) -> None:
        tau = self.config.tau
        for name in ("critic", "cost_critic"):
            soft_update(self.modules[f"{name}_target"], self.modules[name], tau)

    # ------------------------------------------------------------------ acting
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """tanh of the Gaussian mean when deterministic (OSRL evaluates CPQ this way), else a sample."""
        actor = self.modules["actor"]
        return actor.mode(obs) if deterministic else actor.sample(obs, generator=self._noise_gen)
