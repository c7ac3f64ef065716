"""What OSRL's VAE-based Q-learners (BCQ-L, CPQ) share: settings, optimisers, reward/cost scaling.

:mod:`flrp.algos.bcq_lag` and :mod:`flrp.algos.cpq` build on :class:`VAEQAlgorithm`; neither
imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from flrp.algos.base import AlgoConfig, Algorithm
from flrp.algos.sources import OSRL_SUITE_STEPS, bootstrap_stops
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.nn.vae import ConditionalVAE

__all__ = ["VAEQAlgorithm", "VAEQConfig"]


@dataclass
class VAEQConfig(AlgoConfig):
    """Settings shared by OSRL's VAE-based Q-learners (BCQ-L ``bcql_configs.py`` and CPQ
    ``cpq_configs.py``, which agree on all of these)."""

    field_help: ClassVar[dict[str, str]] = {"hidden": "width of the actor's and the critics' hidden layers (the VAE's: --vae-hidden)"}

    # OSRL update_steps 100_000 (bcql_configs.py:40, cpq_configs.py:38); MetaDrive configs
    # 200_000 (VAEQAlgorithm.suite_steps, used when --steps is not given). The FLRP paper's Table 4 says 1e6 for every method;
    # we keep OSRL's default, pass --steps 1000000 to match Table 4.
    steps: int = 100_000
    # OSRL batch_size 512, gamma 0.99, a/c hidden [256, 256] (= Table 4): inherited.
    # OSRL cost_limit 10: the episode cost budget, turned into the Q_c threshold.
    cost_limit: float = 10.0
    # OSRL critic_lr 1e-3 (reward and cost critics).
    critic_lr: float = 1e-3
    # Actor learning rate: each method sets its own OSRL default (BCQ-L 1e-3, CPQ 1e-4).
    actor_lr: float = 1e-3
    # OSRL vae_lr 1e-3.
    vae_lr: float = 1e-3
    # OSRL tau 0.005 for every target network (= Table 4).
    tau: float = 0.005
    # OSRL reward_scale 0.1: rewards are multiplied by it before the critic sees them.
    reward_scale: float = 0.1
    # OSRL cost_scale 1.
    cost_scale: float = 1.0
    # OSRL beta 0.5: KL weight of the VAE loss (CPQ's constructor default 1.5 is overridden by its config).
    beta: float = 0.5
    # OSRL vae_hidden_sizes 400 (two hidden layers of this width in encoder and decoder).
    vae_hidden: int = 400
    # OSRL latent_dim = 2 * act_dim; None -> that.
    latent_dim: int | None = None
    # OSRL sample_action_num 10: actions sampled per state (targets; CPQ's OOD term).
    sample_action_num: int = 10
    # OSRL num_q 2 / num_qc 2 critic ensembles.
    num_q: int = 2
    num_qc: int = 2
    # OSRL episode_len (per task = DSRL max episode steps) for the Q_c threshold; None -> the
    # longest episode in the data (= the task's max steps for DSRL data).
    episode_len: int | None = None
    # OSRL trains on raw observations (examples/train/train_{bcql,cpq}.py:79: wrap_env with
    # reward_scale only, no obs normalisation).
    normalize_obs: bool = False
    # OSRL TransitionDataset (osrl/common/dataset.py:815): done = terminals | timeouts.
    timeout_is_terminal: bool = True
    # OSRL's cost backup is c + gamma Qc' without a done mask (bcql.py:172, cpq.py:161); True
    # masks it like the reward backup.
    cost_done_mask: bool = False
    # OSRL samples the next actions afresh for the cost target (bcql.py:141 and :164, cpq.py:141
    # and :159); True reuses the reward target's draw.
    shared_next_action: bool = False



class VAEQAlgorithm(Algorithm):
    """What OSRL's VAE-based Q-learners (BCQ-L, CPQ) share: their optimisers and reward/cost scaling."""

    config: VAEQConfig
    suite_steps = OSRL_SUITE_STEPS

    def _osrl_vae(self, spec: DataSpec) -> ConditionalVAE:
        """OSRL's VAE (``osrl/common/net.py:VAE``): latent 2 * act_dim, log-std in [-4, 15], prior
        samples clipped to +-0.5, two hidden layers of ``vae_hidden``."""
        c = self.config
        Z = c.latent_dim or 2 * spec.act_dim
        return ConditionalVAE(spec.obs_dim, spec.act_dim, Z, hidden=(c.vae_hidden, c.vae_hidden), log_std_bounds=(-4.0, 15.0), latent_clip=0.5)

    def _build_optimizers(self) -> None:
        c, m = self.config, self.modules
        # Separate Adams as in OSRL's setup_optimizers (BCQ-L and CPQ alike): the steps are sequential (the critics'
        # targets use the VAE just updated, the actor the critics just updated). Fused Adam (as
        # FLRP): one kernel per step instead of a loop over tensors.
        fused = self.device.type in ("cpu", "cuda")
        self.optimizers["vae"] = torch.optim.Adam(m["vae"].parameters(), lr=c.vae_lr, fused=fused)
        self.optimizers["critic"] = torch.optim.Adam(m["critic"].parameters(), lr=c.critic_lr, fused=fused)
        self.optimizers["cost_critic"] = torch.optim.Adam(m["cost_critic"].parameters(), lr=c.critic_lr, fused=fused)
        self.optimizers["actor"] = torch.optim.Adam(m["actor"].parameters(), lr=c.actor_lr, fused=fused)

    # ------------------------------------------------------------------ data
    def prepare_data(self, ds: OfflineDataset) -> dict[str, np.ndarray]:
        data = super().prepare_data(ds)
        data["rew"] = data["rew"] * np.float32(self.config.reward_scale)
        data["cost"] = data["cost"] * np.float32(self.config.cost_scale)
        data["terminal"] = bootstrap_stops(ds, self.config.timeout_is_terminal)
        return data

    def _cost_target(self, cost: torch.Tensor, done: torch.Tensor, qc_next: torch.Tensor) -> torch.Tensor:
        """OSRL's ``c + gamma Qc'`` (no done mask), or ``c + gamma (1 - done) Qc'`` with ``cost_done_mask``."""
        c = self.config
        return cost + c.gamma * ((1.0 - done) if c.cost_done_mask else 1.0) * qc_next

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
