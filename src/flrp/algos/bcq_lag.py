"""BCQ-Lagrangian (BCQ-L): batch-constrained Q-learning with a PID-Lagrangian cost penalty.

Reference code: OSRL ``osrl/algorithms/bcql.py`` (class ``BCQL``/``BCQLTrainer``) with the shared
parts of ``osrl/common/net.py`` (``VAE``, ``EnsembleDoubleQCritic``,
``MLPGaussianPerturbationActor``, ``LagrangianPIDController``); defaults from
``examples/configs/bcql_configs.py`` (OSRL @ 03a4586). BCQ itself: Fujimoto et al. 2019.

One update step, in OSRL's order (each component with its own Adam):

1. VAE: ``MSE(recon, a) + beta KL`` on dataset pairs (the behaviour model).
2. Reward critic: repeat s' 10 times, a' = actor_target(s', vae.decode(s')); soft-clipped double
   Q ``lmbda min(Q1, Q2) + (1 - lmbda) max(Q1, Q2)`` from the target critic, **max over the 10
   samples**; target ``r + gamma (1 - done) Q'`` with ``done = terminals | timeouts``
   (``bcql.py:134-155``, ``osrl/common/dataset.py:815``).
3. Cost critic: the same construction on the cost target critic with its own 10 next actions
   (OSRL decodes them again, ``bcql.py:164``); target ``c + gamma Qc'``, **no done mask**
   (``bcql.py:172``).
4. Actor (perturbation of a VAE sample within +-phi): ``-min Q + lambda (min Qc - thres)``, with
   lambda from the PID controller fed the same batch's ``min Qc``.
5. Soft update of critic, cost critic and actor targets (tau 0.005).

The defaults are OSRL's arithmetic (issue 14: the source is the default). Flags that leave it:

* ``--no-timeout-is-terminal``: bootstrap through timeouts (flrp's convention; OSRL stops at
  ``terminals | timeouts``).
* ``--cost-done-mask``: mask the cost backup like the reward backup. OSRL's ``c + gamma Qc'``
  bootstraps past every episode end, timeouts included; a true terminal has no future cost, so
  with ``--no-timeout-is-terminal`` this mask is the consistent choice. (The DSRL data has no
  terminals except in the velocity tasks.)
* ``--shared-next-action``: one draw of the 10 next actions for both targets (OSRL draws twice).
  Each target keeps its distribution, only their correlation changes; it saves a third of the
  update.
* ``--normalize-obs``: standardise observations with dataset statistics (OSRL trains on raw
  observations: ``examples/train/train_bcql.py:79`` wraps the env with ``reward_scale`` only).

The threshold is in scaled cost units, ``cost_scale * qc_threshold(...)``, identical to OSRL at
its default cost_scale 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import nn

from flrp.algos.lagrangian import PIDLagrangian, qc_threshold
from flrp.algos.registry import register
from flrp.algos.vae_q import VAEQAlgorithm, VAEQConfig
from flrp.data.spec import DataSpec
from flrp.nn.critics import QEnsemble
from flrp.nn.frozen import call_frozen
from flrp.nn.functional import soft_update
from flrp.nn.vae import ConditionalVAE

__all__ = ["VAEQConfig", "VAEQAlgorithm", "BCQLagConfig", "BCQLag", "PerturbationActor", "double_q"]


@dataclass
class BCQLagConfig(VAEQConfig):
    """BCQ-L hyperparameters; every default is OSRL's ``bcql_configs.py:BCQLTrainConfig``."""

    # OSRL actor_lr 1e-3 (= Table 4 "BCQ-L 1e-3").
    actor_lr: float = 1e-3
    # OSRL phi 0.05: the actor moves a VAE action by at most phi (per dim, actions in [-1, 1]).
    # Larger = further from the data, more room to trade reward against cost.
    phi: float = 0.05
    # OSRL lmbda 0.75: weight of min vs max in the soft-clipped double-Q target (1 = pure min,
    # more pessimistic).
    lmbda: float = 0.75
    # OSRL num_q semantics for BCQ-L: EnsembleDoubleQCritic holds num_q "Q1" and num_q "Q2" nets,
    # each of Q1/Q2 the min over its members (4 reward and 4 cost nets by default).
    # OSRL PID = [0.1, 0.003, 0.001] for the Lagrange multiplier (KP, KI, KD).
    kp: float = 0.1
    ki: float = 0.003
    kd: float = 0.001


class PerturbationActor(nn.Module):
    """``xi(s, a) = clamp(a + phi * tanh(MLP([s, a])), -1, 1)`` with **Tanh** hidden activations
    (OSRL ``MLPGaussianPerturbationActor`` built with ``nn.Tanh``; BCQ's original uses ReLU)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], phi: float) -> None:
        super().__init__()
        dims = [obs_dim + act_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        layers += [nn.Linear(dims[-1], act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.phi = phi

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (a + self.phi * self.net(torch.cat([s, a], dim=-1))).clamp(-1.0, 1.0)


def double_q(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an ensemble output (2n, B) into OSRL's (Q1, Q2), each the min over its n members."""
    q1, q2 = q.reshape(2, q.shape[0] // 2, *q.shape[1:]).min(1).values
    return q1, q2


@register
class BCQLag(VAEQAlgorithm):
    """BCQ with a PID-Lagrangian constraint on the cost critic (OSRL's BCQL)."""

    name = "bcq-lag"
    Config = BCQLagConfig
    config: BCQLagConfig
    # OSRL's BCQL.act decodes a freshly sampled latent at evaluation too: stochastic.
    eval_deterministic = False

    # ------------------------------------------------------------------ networks
    def _build(self, spec: DataSpec) -> None:
        c = self.config
        S, A, H = spec.obs_dim, spec.act_dim, c.hidden_sizes
        m = self.modules
        m["vae"] = self._osrl_vae(spec)
        m["actor"] = PerturbationActor(S, A, H, c.phi)
        # One batched ensemble per critic: members [0, num_q) are OSRL's Q1 nets, the rest Q2.
        m["critic"] = QEnsemble(S, A, H, ensemble=2 * c.num_q)
        m["cost_critic"] = QEnsemble(S, A, H, ensemble=2 * c.num_qc)
        for name in ("actor", "critic", "cost_critic"):
            m[f"{name}_target"] = copy.deepcopy(m[name]).requires_grad_(False)
        m["lagrangian"] = PIDLagrangian(c.kp, c.ki, c.kd, self.qc_threshold)

    @property
    def qc_threshold(self) -> float:
        """Per-step discounted cost bound, in scaled cost units (OSRL ``BCQL.qc_thres``)."""
        spec = self._require_built()
        c = self.config
        return c.cost_scale * qc_threshold(c.cost_limit, c.gamma, c.episode_len or spec.max_episode_steps)

    # ------------------------------------------------------------------ helpers
    def _clipped_double_q_max(self, critic: nn.Module, s_rep: torch.Tensor, a_rep: torch.Tensor, batch: int) -> torch.Tensor:
        """``lmbda min(Q1, Q2) + (1 - lmbda) max(Q1, Q2)``, then max over the sampled actions: (B,)."""
        q1, q2 = double_q(critic(s_rep, a_rep))
        lam = self.config.lmbda
        q = lam * torch.minimum(q1, q2) + (1.0 - lam) * torch.maximum(q1, q2)
        return q.reshape(batch, -1).max(1).values

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, m, gen = self.config, self.modules, self._noise_gen
        s, a, s2 = batch["obs"], batch["act"], batch["next_obs"]
        r, cost, term = batch["rew"], batch["cost"], batch["terminal"]
        B = s.shape[0]

        # 1. VAE (behaviour model).
        loss_vae, vae_metrics = m["vae"].loss(s, a, c.beta, generator=gen)
        self._step(self.optimizers["vae"], loss_vae)

        # 2. Reward target from 10 perturbed VAE samples per s' (after the VAE step, as in OSRL).
        s2_rep = s2.repeat_interleave(c.sample_action_num, 0)  # (B * N, S), sample-major per row
        with torch.no_grad():
            a2_rep = m["actor_target"](s2_rep, m["vae"].decode(s2_rep, generator=gen))
            y_r = r + c.gamma * (1.0 - term) * self._clipped_double_q_max(m["critic_target"], s2_rep, a2_rep, B)
        # OSRL EnsembleDoubleQCritic.loss: sum over every member of its MSE.
        loss_q = (m["critic"](s, a) - y_r).square().mean(1).sum()
        self._step(self.optimizers["critic"], loss_q)
        # 3. Cost target from its own 10 samples (OSRL bcql.py:164), no done mask (bcql.py:172).
        with torch.no_grad():
            if not c.shared_next_action:
                a2_rep = m["actor_target"](s2_rep, m["vae"].decode(s2_rep, generator=gen))
            y_c = self._cost_target(cost, term, self._clipped_double_q_max(m["cost_critic_target"], s2_rep, a2_rep, B))
        loss_qc = (m["cost_critic"](s, a) - y_c).square().mean(1).sum()
        self._step(self.optimizers["cost_critic"], loss_qc)

        # 4. Actor: perturb a VAE sample; critics and VAE are not trained by this loss.
        with torch.no_grad():
            a_vae = m["vae"].decode(s, generator=gen)
        a_pi = m["actor"](s, a_vae)
        q_pi = torch.minimum(*double_q(call_frozen(m["critic"], s, a_pi)))
        qc_pi = torch.minimum(*double_q(call_frozen(m["cost_critic"], s, a_pi)))
        lam = m["lagrangian"].update(qc_pi)  # PID step on this batch's min Qc (OSRL order)
        penalty = (lam * (qc_pi - self.qc_threshold)).mean()
        loss_actor = -q_pi.mean() + penalty
        self._step(self.optimizers["actor"], loss_actor)

        return {
            "vae/loss": loss_vae.detach(),
            **vae_metrics,
            "critic/q_loss": loss_q.detach(),
            "critic/qc_loss": loss_qc.detach(),
            "actor/loss": loss_actor.detach(),
            "actor/qc_penalty": penalty.detach(),
            "actor/q_pi": q_pi.detach().mean(),
            "actor/qc_pi": qc_pi.detach().mean(),
            "lagrangian/lambda": lam,
        }

    def after_update(self) -> None:
        tau = self.config.tau  # OSRL sync_weight: critic, cost critic and actor targets
        for name in ("critic", "cost_critic", "actor"):
            soft_update(self.modules[f"{name}_target"], self.modules[name], tau)

    # ------------------------------------------------------------------ acting
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """``actor(s, vae.decode(s, z))`` with z from the clipped prior, as OSRL evaluates it
        (``eval_deterministic = False``); ``deterministic=True`` decodes z = 0, the prior's mode."""
        vae = cast(ConditionalVAE, self.modules["vae"])
        if deterministic:
            z = obs.new_zeros(obs.shape[0], vae.latent_dim)
        else:
            z = vae.sample_prior(obs.shape[0], obs, generator=self._noise_gen)
        return self.modules["actor"](obs, vae.decode(obs, z))
