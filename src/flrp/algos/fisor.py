"""FISOR: Feasibility-guided Safe Offline RL (Zheng et al., ICLR 2024), a Table 1 baseline.

Reference code (facts only, re-written in PyTorch): ``ZhengYinan-AIR/FISOR`` @ 2097e8b —
``jaxrl5/agents/fisor/fisor.py`` (the agent), ``configs/train_config.py`` (the values used),
``jaxrl5/data/dsrl_datasets.py`` (h labels), ``launcher/examples/train_offline.py`` (reward
normalisation). Reads top to bottom like the method:

1. HJ feasibility critics Q_h, V_h (reversed expectile, discounted HJ backup) and IQL reward
   critics Q_r, V_r — the same objectives as FLRP, from :mod:`flrp.nn.critic_losses`.
2. Feasibility-guided weights: in the infeasible region (V_h > 0) imitate the actions that
   lower Q_h most, ``exp(5 (V_h - Q_h))``; in the feasible region, among feasible actions
   (Q_h <= 0), imitate high-advantage ones, ``exp(3 (Q_r - V_r))``; weight 0 otherwise.
3. A DDPM diffusion actor (:mod:`flrp.nn.diffusion`) trained on the weighted noise-prediction
   loss, with an EMA copy used at evaluation.
4. Action selection: 16 samples per state from the EMA actor, keep the one with the lowest Q_h.

The defaults are FISOR's code (issue 14: the source is the default; see each field's comment):
2048 rows per step, two actor steps on 1024 each, critics on the first 256 (``fisor.py:611-634``);
raw observations; timeouts terminal (``dsrl_datasets.py:47``); the reward scale from DSRL's
per-task constants (``train_offline.py:54``); V updated before Q. Options and what remains:

* The FLRP paper's Table 4 layout ("batch 512" for every method): ``--batch-size 512
  --actor-updates 1 --critic-batch-size none`` (about a third of the CPU time per step).
* ``--no-timeout-is-terminal`` bootstraps through timeouts (flrp's convention);
  ``--normalize-obs`` standardises observations.
* Without a known task (in-memory data, a file whose task cannot be inferred) the reward scale
  takes the longest episode and the episode-return range of the data; ``reward_scale``
  overrides it either way.
* Dropout masks and all diffusion noise come from the algorithm's seeded generator, so runs
  resume bit-exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from flrp.algos.base import AlgoConfig, Algorithm, register
from flrp.algos.sources import bootstrap_stops, dataset_task
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.errors import FlrpError
from flrp.nn.critic_losses import CriticTerms, hj_feasibility_terms, iql_reward_terms
from flrp.nn.critics import QEnsemble, VNet
from flrp.nn.diffusion import DiffusionActor
from flrp.nn.functional import awr_weight, soft_update

__all__ = ["FISORConfig", "FISOR", "fisor_weights"]


@dataclass
class FISORConfig(AlgoConfig):
    """FISOR's values from ``configs/train_config.py`` / ``FISOR.create`` unless noted.

    Batch layout: ``batch_size`` rows are sampled per step; the actor takes ``actor_updates``
    steps, one on each equal chunk; the critics use the first ``critic_batch_size`` rows (all of
    them if the batch is smaller, as FISOR's ``x[:256]`` slice).

    * Default = FISOR's own layout (``fisor.py:611-634``, ``batch_size=2048`` in
      ``train_config.py:10``): 2048 rows, two actor steps on 1024 each, critics on the first
      256. About 0.43 s per step on one CPU thread (obs 40 / act 6).
    * The FLRP paper's Table 4 ("batch 512" for every method): ``--batch-size 512
      --actor-updates 1 --critic-batch-size none``, one actor step and the critics on the same
      512 rows. About FLRP's CPU time per step (0.16 s vs 0.13 s).
    """

    field_help: ClassVar[dict[str, str]] = {"hidden": "width of the critics' hidden layers (the diffusion actor's: --actor-hidden)"}

    # FISOR max_steps = 1_000_001 (Table 4: 1e6).
    steps: int = 1_000_000
    # Rows sampled per step: FISOR train_config.py:10 batch_size=2048 (Table 4: 512).
    batch_size: int = 2048
    # Actor steps per training step, one per equal chunk of the batch: FISOR fisor.py:613-625
    # splits the batch in halves and updates the actor on each (Table 4 reading: 1).
    actor_updates: int = 2
    # Rows (the first ones) the critics train on; None = the whole batch: FISOR fisor.py:627-634
    # slices x[:256] for update_v/q/vc/qc (Table 4 reading: None).
    critic_batch_size: int | None = 256
    # FISOR actor_lr = critic_lr = value_lr = 3e-4 (Table 4: 3e-4).
    lr: float = 3e-4
    # FISOR decay_steps = 3e6 (train_config.py:42; fisor.py:144 optax.cosine_decay_schedule):
    # actor lr cosine-decays to 0 over this many *actor optimiser steps* (optax counts every actor
    # update: with FISOR's 2 per step, 1e6 steps use 2/3 of the cosine and end at lr/4; with 1 per
    # step, 1/3 of it, ending at 0.75 lr). None = constant lr.
    lr_decay_steps: int | None = 3_000_000
    # FISOR actor optimiser AdamW with actor_weight_decay=None -> 0.
    actor_weight_decay: float = 0.0
    # FISOR critic target rate tau = 0.005 (create() default, not overridden).
    tau: float = 0.005
    # FISOR actor_tau = 0.001: EMA of the diffusion net, updated after every actor update; the
    # EMA net acts at evaluation.
    actor_tau: float = 0.001
    # FISOR critic_hyperparam = 0.9: expectile of V_r (upper).
    expectile_reward: float = 0.9
    # FISOR cost_critic_hyperparam = 0.9: reversed expectile of V_h (V_h -> in-sample min Q_h).
    expectile_feasibility: float = 0.9
    # FISOR reward_temperature = 3: safe weight exp(3 (Q_r - V_r)); higher -> greedier.
    reward_temperature: float = 3.0
    # FISOR cost_temperature = 5: unsafe weight exp(5 (V_h - Q_h)); higher -> steers harder
    # toward the actions that reduce Q_h.
    feasibility_temperature: float = 5.0
    # FISOR clips the safe weights to [0, 100] (hard-coded in update_actor).
    reward_weight_clip: float = 100.0
    # FISOR cost_ub = 150: clip of the unsafe weights.
    feasibility_weight_clip: float = 150.0
    # FISOR dsrl_datasets.py with critic_type="hj", cost_scale=25: h = +25 if cost > 0 else -1.
    h_unsafe: float = 25.0
    h_safe: float = -1.0
    # FISOR normalize_returns (train_offline.py:54, dataset.py:190): r * max_steps /
    # (R_max - R_min) with the env's time limit and DSRL's MAX/MIN_EPISODE_REWARD of the task.
    # None -> those constants if the dataset's task is known, else the data's (see the module
    # docstring).
    reward_scale: float | None = None
    # FISOR: T = 5 diffusion steps, beta_schedule="vp" (beta_min 0.1, beta_max 10 in vp_beta_schedule).
    diffusion_steps: int = 5
    beta_min: float = 0.1
    beta_max: float = 10.0
    # FISOR actor_architecture="ln_resnet": hidden 256 (MLPResNet default), actor_num_blocks=3,
    # actor_dropout_rate=0.1, actor_layer_norm=True, mish. This net dominates the cost of a
    # step (about 4 x 256 x 1024 MACs per block per sample); shrink it here for quick CPU runs.
    actor_hidden: int = 256
    actor_blocks: int = 3
    actor_dropout: float = 0.1
    actor_layer_norm: bool = True
    # FISOR time_dim = 64 Fourier features; cond encoder MLP (128, 128).
    time_dim: int = 64
    time_hidden: int = 128
    # FISOR N = 16 candidate actions per state at evaluation, extract_method="minqc" (argmin Q_h).
    samples: int = 16
    # FISOR actor_objective="feasibility" (the method); "bc" = weight 1 on every sample (FISOR's
    # code has the same switch: plain diffusion behaviour cloning, an ablation).
    actor_objective: Literal["feasibility", "bc"] = "feasibility"
    # FISOR dsrl_datasets.py:47 done = terminals | timeouts, masks = 1 - done (:62).
    timeout_is_terminal: bool = True
    # FISOR trains on raw observations (train_offline.py: no observation normalisation; the
    # wrappers only rescale and clip actions).
    normalize_obs: bool = False


def fisor_weights(
    q: torch.Tensor,
    v: torch.Tensor,
    q_h: torch.Tensor,
    v_h: torch.Tensor,
    reward_temperature: float,
    feasibility_temperature: float,
    reward_clip: float,
    feasibility_clip: float,
) -> torch.Tensor:
    """FISOR's feasibility-guided weights (``update_actor`` with ``actor_objective="feasibility"``).

    * infeasible state (V_h > 0): ``min(exp(feasibility_temperature (V_h - Q_h)), feasibility_clip)``;
    * feasible state and feasible action (V_h <= 0 and Q_h <= 0): ``min(exp(reward_temperature (Q - V)), reward_clip)``;
    * feasible state, infeasible action: 0.
    """
    unsafe = awr_weight(v_h - q_h, feasibility_temperature, feasibility_clip)
    safe = awr_weight(q - v, reward_temperature, reward_clip)
    zero = torch.zeros_like(safe)
    return torch.where(v_h > 0, unsafe, torch.where(q_h <= 0, safe, zero))


@register
class FISOR(Algorithm):
    """FISOR with a DDPM actor, HJ feasibility critics and min-Q_h action selection."""

    name = "fisor"
    Config = FISORConfig
    config: FISORConfig
    # FISOR eval_actions: a fresh chain (new rng key) at every call.
    eval_deterministic = False

    # ------------------------------------------------------------------ networks
    def _build(self, spec: DataSpec) -> None:
        c = self.config
        if c.actor_updates < 1 or c.batch_size % c.actor_updates:
            raise FlrpError(f"fisor: batch_size {c.batch_size} must split into actor_updates={c.actor_updates} equal chunks")
        S, A, H = spec.obs_dim, spec.act_dim, c.hidden_sizes
        m = self.modules
        m["actor"] = DiffusionActor(
            S, A, steps=c.diffusion_steps, width=c.actor_hidden, blocks=c.actor_blocks, dropout=c.actor_dropout,
            layer_norm=c.actor_layer_norm, time_dim=c.time_dim, cond_hidden=c.time_hidden,
            beta_min=c.beta_min, beta_max=c.beta_max,
        )
        m["q_r"], m["v_r"] = QEnsemble(S, A, H, 2), VNet(S, H)  # FISOR critic: 2 x MLP(256, 256)
        m["q_h"], m["v_h"] = QEnsemble(S, A, H, 2), VNet(S, H)  # FISOR safe_critic / safe_value
        m["actor_ema"] = copy.deepcopy(m["actor"]).requires_grad_(False)
        for name in ("q_r", "q_h"):
            m[f"{name}_target"] = copy.deepcopy(m[name]).requires_grad_(False)

    def _build_optimizers(self) -> None:
        c, m = self.config, self.modules
        fused = self.device.type in ("cpu", "cuda")
        self.optimizers["actor"] = torch.optim.AdamW(m["actor"].parameters(), lr=c.lr, weight_decay=c.actor_weight_decay, fused=fused)
        # Adam is per-parameter, so one Adam over the four critics equals FISOR's four optimisers.
        critics = [p for k in ("q_r", "v_r", "q_h", "v_h") for p in m[k].parameters()]
        self.optimizers["critics"] = torch.optim.Adam(critics, lr=c.lr, fused=fused)

    # ------------------------------------------------------------------ data
    def prepare_data(self, ds: OfflineDataset) -> dict[str, np.ndarray]:
        data = super().prepare_data(ds)
        c = self.config
        # FISOR dsrl_datasets.py: actions clipped to +-(1 - 1e-5).
        data["act"] = np.clip(data["act"], -1.0 + 1e-5, 1.0 - 1e-5)
        # FISOR dsrl_datasets.py (critic_type="hj"): h = +cost_scale if cost > 0 else -1.
        data["h"] = np.where(ds.costs > 0, c.h_unsafe, c.h_safe).astype(np.float32)
        data["rew"] = data["rew"] * np.float32(self.reward_scale_for(ds))
        data["terminal"] = bootstrap_stops(ds, c.timeout_is_terminal)
        return data

    def reward_scale_for(self, ds: OfflineDataset) -> float:
        """FISOR ``normalize_returns``: ``max_steps / (R_max - R_min)``, so episode returns span
        about ``max_steps``. DSRL's constants of the dataset's task (as FISOR), else the data's."""
        if self.config.reward_scale is not None:
            return float(self.config.reward_scale)
        task = dataset_task(ds)
        if task is not None and task.max_reward > task.min_reward:
            return task.max_episode_steps / (task.max_reward - task.min_reward)
        spec = self._require_built()
        return spec.max_episode_steps / max(spec.episode_return_max - spec.episode_return_min, 1e-6)

    # ------------------------------------------------------------------ learning
    def _actor_lr(self, k: int) -> float:
        """optax.cosine_decay_schedule(lr, decay_steps) at actor optimiser step ``k`` (0-based)."""
        c = self.config
        if c.lr_decay_steps is None:
            return c.lr
        frac = min(k, c.lr_decay_steps) / c.lr_decay_steps
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    @torch.no_grad()
    def _actor_weights(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """FISOR ``update_actor``: target Q nets (min for reward, max for feasibility), online V nets."""
        c, m = self.config, self.modules
        if c.actor_objective == "bc":
            return torch.ones_like(s[:, 0])
        return fisor_weights(
            m["q_r_target"](s, a).min(0).values, m["v_r"](s),
            m["q_h_target"](s, a).max(0).values, m["v_h"](s),
            c.reward_temperature, c.feasibility_temperature, c.reward_weight_clip, c.feasibility_weight_clip,
        )

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, m = self.config, self.modules

        # ---- actor: one step per chunk, weights from the critics before this step's update ----
        opt = self.optimizers["actor"]
        for i, (s, a) in enumerate(zip(batch["obs"].chunk(c.actor_updates), batch["act"].chunk(c.actor_updates))):
            w = self._actor_weights(s, a)
            for group in opt.param_groups:
                group["lr"] = self._actor_lr(self.step * c.actor_updates + i)
            loss_actor = m["actor"].loss(s, a, w, generator=self._noise_gen)
            opt.zero_grad(set_to_none=True)
            loss_actor.backward()
            opt.step()
            soft_update(m["actor_ema"], m["actor"], c.actor_tau)  # FISOR: EMA after every actor update

        # ---- critics on the first critic_batch_size rows (FISOR's x[:256]) ----------------------
        n = min(c.critic_batch_size or c.batch_size, c.batch_size)
        s, a, s2 = batch["obs"][:n], batch["act"][:n], batch["next_obs"][:n]
        term = batch["terminal"][:n]

        def critic_terms() -> tuple[CriticTerms, CriticTerms]:
            rew = iql_reward_terms(m["q_r"], m["q_r_target"], m["v_r"], s, a, batch["rew"][:n], s2, term, c.gamma, c.expectile_reward)
            feas = hj_feasibility_terms(
                m["q_h"], m["q_h_target"], m["v_h"], m["v_h"], s, a, batch["h"][:n], s2, term, c.gamma, c.expectile_feasibility
            )
            return rew, feas

        # FISOR fisor.py:631-634 (update_v, update_q, update_vc, update_qc): each V steps first and
        # its Q's target then reads the updated V. The reward and feasibility pairs do not read
        # each other, so both V step together, then both Q. One Adam over the four nets: a step
        # moves only the parameters that have a gradient, as four optimisers would.
        opt_c = self.optimizers["critics"]
        rew, feas = critic_terms()
        opt_c.zero_grad(set_to_none=True)
        (rew.loss_v + feas.loss_v).backward()
        opt_c.step()
        rew_q, feas_q = critic_terms()
        opt_c.zero_grad(set_to_none=True)
        (rew_q.loss_q + feas_q.loss_q).backward()
        opt_c.step()

        return {
            "actor/loss": loss_actor.detach(),
            "actor/weight_mean": w.mean(),
            "actor/lr": torch.tensor(opt.param_groups[0]["lr"]),
            "critic/q_r": rew_q.loss_q.detach(),
            "critic/v_r": rew.loss_v.detach(),
            "critic/q_h": feas_q.loss_q.detach(),
            "critic/v_h": feas.loss_v.detach(),
            "feas/v_h_mean": feas.v.mean(),
            "feas/frac_unsafe_states": (feas.v > 0).float().mean(),
        }

    def after_update(self) -> None:
        for name in ("q_r", "q_h"):  # FISOR: target critics follow at tau = 0.005
            soft_update(self.modules[f"{name}_target"], self.modules[name], self.config.tau)

    # ------------------------------------------------------------------ acting
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """FISOR ``eval_actions``: N samples from the EMA actor, keep the one with the lowest Q_h.

        The chain is stochastic either way. ``deterministic=False`` (FISOR's protocol, the default
        evaluation) draws fresh noise from the running generator; ``deterministic=True`` draws it
        from a generator re-seeded with ``seed`` at every call, so the action is a fixed function
        of the observation batch (repeatable, identical after save/load).
        """
        c, m = self.config, self.modules
        if deterministic:
            gen = torch.Generator(device=obs.device)
            gen.manual_seed(c.seed + 3)
        else:
            gen = self._noise_gen
        B, N = obs.shape[0], c.samples
        a = m["actor_ema"].sample(obs, N, generator=gen)  # (B, N, A)
        q_h = m["q_h_target"](obs.repeat_interleave(N, dim=0), a.reshape(B * N, -1)).max(0).values.reshape(B, N)
        best = q_h.argmin(1)
        return a[torch.arange(B, device=obs.device), best]

    @torch.no_grad()
    def feasibility_value(self, obs: np.ndarray) -> np.ndarray:
        """V_h(s) for raw observations (<= 0: predicted feasible). For plots and the toy IoU."""
        spec = self._require_built()
        s = torch.as_tensor(spec.normalize_obs(np.asarray(obs, dtype=np.float32)), device=self.device)
        return self.modules["v_h"](s).float().cpu().numpy()
