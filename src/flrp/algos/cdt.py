"""CDT: Constrained Decision Transformer (Liu et al., ICML 2023), as OSRL implements it.

Reference code: ``liuzuxin/OSRL`` @ 03a4586 — ``osrl/algorithms/cdt.py`` (model, loss, rollout),
``osrl/common/net.py`` (transformer block, Gaussian head), ``osrl/common/dataset.py`` (sequence
sampling, Pareto augmentation), ``examples/configs/cdt_configs.py`` (defaults, ``CDTTrainConfig``)
and ``examples/train/train_cdt.py`` (cost-weighted trajectory sampling). Code written anew.

Model. Each step contributes four tokens ``(R_t, C_t, s_t, a_t)``: linear embeddings of the
return-to-go, the *transformed* cost-to-go ``50 - C_t`` (``cost_transform``), the state and the
action, each plus a learned timestep embedding (``episode_len + seq_len`` entries: windows run
past the episode end). A causal transformer (:mod:`flrp.nn.transformer`) reads the ``4 * seq_len``
tokens; the state token's output gives a diagonal Gaussian over ``a_t`` (log-std unbounded, as
OSRL: ``log_std_bounds`` is never applied) and the action token's output a two-class prediction of
whether step ``t`` incurs cost.

Loss (``CDTTrainer.train_one_step``). ``-(log-lik + T * entropy)`` averaged over valid positions
*and* action dimensions, plus ``0.02 *`` the cost NLL averaged over all ``B * seq_len`` positions
(padding counts as zero, as OSRL's ``(loss * mask).mean()``); AdamW with linear warm-up, grad-norm
clip 0.25 on the model only. The temperature ``T = exp(log T)`` is learned separately (Adam 1e-4)
with loss ``T * (entropy - target_entropy)``, ``target_entropy = -act_dim``; note that OSRL
compares this *per-dimension mean* entropy with ``-act_dim``, which we keep.

Data. Trajectory windows with undiscounted RTG/CTG, cost-weighted trajectory sampling and Pareto
return augmentation: :mod:`flrp.data.sequences`.

Evaluation. :meth:`CDT.episode_runner` keeps each episode's last ``seq_len`` steps, starts from
the target (return, cost) scaled by ``reward_scale``/``cost_scale`` and subtracts each observed
scaled reward/cost (OSRL ``CDTTrainer.rollout``); the action is the Gaussian mean clamped to
``[-1, 1]``. :meth:`CDT.act` (and so ``predict``) without history uses a one-step context.

Per-task values. OSRL sets the evaluation targets and the augmentation per task
(``cdt_configs.py``); :data:`OSRL_CDT_TASKS` holds them by flrp task name, and a dataset whose
task is known (:func:`flrp.algos.sources.dataset_task`) uses them for every field left at None:

* evaluation target return (:func:`osrl_target_return`): OSRL's pair whose cost is the cost
  limit (Bullet and MetaDrive have pairs at 10); where OSRL has no pair at the limit
  (Safety-Gymnasium, velocity included: pairs at 20/40/80 only) the reward of the pair with the
  largest cost below the limit, else of its lowest-cost pair (at limit 10: the cost-20 pair's
  reward), always with the cost-to-go target = the limit. That choice is flrp's, not OSRL's;
* augmentation ``deg``, ``max_reward``, ``max_rew_decrease`` (``min_reward`` is 1 everywhere).

Unknown tasks (in-memory data, the toy task) take data-derived values (see each field).
OSRL's ``CDTMediumDenseConfig`` (``cdt_configs.py:656``) sets none of these and inherits the
CarCircle base values, an OSRL bug; flrp reproduces what OSRL runs. Explicit config values
override.

Differences from OSRL (each deliberate):

* ``--normalize-obs`` standardises observations with dataset statistics (default off: OSRL trains
  CDT on raw observations, ``examples/train/train_cdt.py:79`` wraps the env with
  ``reward_scale`` only).
* The cost class is ``cost > 0`` (OSRL casts the cost to ``long``, which fails for costs > 1).
* The state-prediction head is omitted: its loss weight is 0 in OSRL, so it never affects the
  policy.
* Attention is implemented directly (:mod:`flrp.nn.transformer`) with all its Linear weights
  ``N(0, 0.02)``; OSRL's ``nn.MultiheadAttention`` keeps PyTorch's Xavier init for its input
  projection.
* Dropout draws from a generator seeded from the algorithm's checkpointed noise stream each step,
  so that a resumed run is bit-exact; OSRL uses the global RNG. Its masks use 16 random bits per
  element (drop probability ``round(p * 2^16) / 2^16``, :class:`flrp.nn.transformer.Dropout`).
* No key-padding mask: windows are right-padded, so causal attention alone hides the padding from
  every real step (same real outputs; OSRL also masks padded keys).

Computation (results equal up to float rounding and the dropout random stream). A step runs as
forward/backward passes over micro-batches (:attr:`CDTConfig.micro_batch`, 128 windows on CPU)
whose gradients add up to the batch gradient: at batch 2048 one pass holds ~100-170 MB tensors
per layer, far out of cache. The last transformer block computes only the state and action
tokens, the only ones the heads read (-14% FLOPs).
* Eval targets: one ``(target_return, target_cost)`` pair per evaluation, where OSRL evaluates
  every pair of its task's table (:attr:`CDTConfig.target_return`, :attr:`CDTConfig.target_cost`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flrp.algos.base import AlgoConfig, Algorithm, register
from flrp.algos.sources import OSRL_SUITE_STEPS, dataset_task
from flrp.data.dataset import OfflineDataset
from flrp.data.sequences import Augmentation, gather_windows, pareto_augmentation, sample_window_index, sequence_arrays
from flrp.data.spec import DataSpec
from flrp.errors import FlrpError
from flrp.nn.transformer import CausalTransformer, init_gpt_weights

__all__ = ["CDTConfig", "CDT", "CDTNetwork", "CDTEpisodeRunner", "default_target_return", "OSRL_CDT_TASKS", "OSRLCDTValues", "osrl_target_return"]

_LOG_2PI = math.log(2.0 * math.pi)
# OSRL CDT(cost_transform=True): the CTG token sees ``50 - ctg``.
COST_TRANSFORM_OFFSET = 50.0
# Windows per forward/backward pass on CPU when CDTConfig.micro_batch is None: small enough that
# a layer's activations stay in cache (and below glibc's mmap threshold), see CDT.update.
CPU_MICRO_BATCH = 128


@dataclass
class CDTConfig(AlgoConfig):
    """CDT hyperparameters; defaults from OSRL ``examples/configs/cdt_configs.py`` (CDTTrainConfig)
    unless noted. ``hidden`` and ``gamma`` of :class:`AlgoConfig` are unused (the width is
    ``embed_dim``; CDT's returns-to-go are undiscounted)."""

    field_help: ClassVar[dict[str, str]] = {"hidden": "unused by CDT (the transformer's width is --embed-dim)"}

    # cdt_configs.py:40 update_steps 100_000 (MetaDrive configs 200_000, cdt_configs.py:572 and
    # on: CDT.suite_steps, used when --steps is not given; Table 4 says 1e6 for all).
    steps: int = 100_000
    # OSRL trains CDT on raw observations (examples/train/train_cdt.py:79 wraps the env with
    # reward_scale only).
    normalize_obs: bool = False
    # cdt_configs.py batch_size 2048. The paper's Table 4 lists 512 for every method; we keep
    # OSRL's value because it is what produced the CDT numbers (pass --batch-size 512 otherwise).
    batch_size: int = 2048
    # cdt_configs.py embedding_dim 128.
    embed_dim: int = 128
    # cdt_configs.py num_layers 3.
    num_layers: int = 3
    # cdt_configs.py num_heads 8.
    num_heads: int = 8
    # cdt_configs.py seq_len 10 (context window, in environment steps).
    seq_len: int = 10
    # cdt_configs.py attention_dropout 0.1.
    attention_dropout: float = 0.1
    # cdt_configs.py residual_dropout 0.1.
    residual_dropout: float = 0.1
    # cdt_configs.py embedding_dropout 0.1.
    embedding_dropout: float = 0.1
    # cdt_configs.py learning_rate 1e-4 (AdamW).
    lr: float = 1e-4
    # cdt_configs.py weight_decay 1e-4 (AdamW, applied to every model parameter as in OSRL).
    weight_decay: float = 1e-4
    # cdt_configs.py betas (0.9, 0.999), first moment.
    beta1: float = 0.9
    # cdt_configs.py betas (0.9, 0.999), second moment.
    beta2: float = 0.999
    # cdt_configs.py clip_grad 0.25 (global grad-norm clip of the model; <= 0 disables).
    clip_grad: float = 0.25
    # cdt_configs.py lr_warmup_steps 500: lr * min((step + 1) / 500, 1) (CDTTrainer LambdaLR).
    warmup_steps: int = 500
    # cdt_configs.py reward_scale 0.1: RTG targets/inputs are reward sums times this.
    reward_scale: float = 0.1
    # cdt_configs.py cost_scale 1.
    cost_scale: float = 1.0
    # cdt_configs.py stochastic True: Gaussian head with entropy bonus; False = MSE head ("DT-Cost"
    # of liuzuxin/OSRL#14 when combined with augment_percent 0).
    stochastic: bool = True
    # cdt_configs.py init_temperature 0.1 (entropy temperature T at step 0).
    init_temperature: float = 0.1
    # cdt.py CDTTrainer: Adam lr 1e-4, betas (0.9, 0.999) for log T.
    temperature_lr: float = 1e-4
    # cdt_configs.py loss_cost_weight 0.02 (cost-prediction NLL; not in the paper, liuzuxin/OSRL#9).
    loss_cost_weight: float = 0.02
    # cdt_configs.py cost_transform True: the CTG token sees 50 - ctg.
    cost_transform: bool = True
    # cdt_configs.py cost_sample True: draw trajectories with probability ∝ max(0, threshold - C).
    cost_sample: bool = True
    # train_cdt.py with linear=True: ct = lambda x: 70 - x (raw cost units).
    cost_sample_threshold: float = 70.0
    # cdt_configs.py augment_percent 0.2: Pareto-frontier return relabelling (0 disables).
    augment_percent: float = 0.2
    # Degree of the frontier polynomial. None: OSRL's per-task deg (OSRL_CDT_TASKS, e.g. AntRun 3,
    # DroneRun 1, CarButton1 0) if the task is known, else 1 (OSRL's commonest value). Lowered
    # automatically when the frontier has too few points.
    aug_deg: int | None = None
    # Highest augmented return (raw units). None: OSRL's per-task max_reward if the task is known
    # (e.g. AntRun 1000, DroneRun 700), else best dataset return + 0.1 x dataset return range
    # (see data.sequences.pareto_augmentation).
    aug_max_reward: float | None = None
    # cdt_configs.py min_reward 1.0: augmented returns start this far above the frontier.
    aug_min_reward: float = 1.0
    # Largest return drop for substitute sources. None: OSRL's per-task max_rew_decrease if the
    # task is known (e.g. AntRun 150), else 0.2 x dataset return range.
    aug_max_rew_decrease: float | None = None
    # cdt_configs.py beta 1.0: substitute weights 1 / (distance + beta).
    aug_beta: float = 1.0
    # Evaluation target return (raw reward units). None: OSRL's per-task target for cost_limit
    # (osrl_target_return) if the task is known, else the best return among dataset episodes with
    # cost <= cost_limit (default_target_return).
    target_return: float | None = None
    # Evaluation target cost (raw cost units). None: cost_limit (10).
    target_cost: float | None = None
    # Computation only (flrp): windows per forward/backward pass. The gradients of the passes add
    # up to the full-batch gradient, so this changes results only by float rounding (and which
    # dropout masks are drawn). None: 128 on CPU (~2x faster than one pass at batch 2048), the
    # whole batch on GPU.
    micro_batch: int | None = None


@dataclass(frozen=True)
class OSRLCDTValues:
    """One task's CDT values in OSRL ``examples/configs/cdt_configs.py`` (@ 03a4586)."""

    targets: tuple[tuple[float, float], ...]  # target_returns: the (reward, cost) pairs evaluated
    deg: int  # deg: frontier polynomial degree
    max_reward: float  # max_reward: highest augmented return
    max_rew_decrease: float  # max_rew_decrease: largest return drop for substitute sources


def _osrl(targets: tuple[tuple[float, float], ...], deg: int, max_reward: float, max_rew_decrease: float) -> OSRLCDTValues:
    return OSRLCDTValues(tuple((float(r), float(c)) for r, c in targets), deg, float(max_reward), float(max_rew_decrease))


# Keyed by flrp task name; the comment gives the line of OSRL's config class (cdt_configs.py).
OSRL_CDT_TASKS: dict[str, OSRLCDTValues] = {
    "CarCircle": _osrl(((450, 10), (500, 20), (550, 50)), 4, 600, 100),  # :102, CDTCarCircleConfig = CDTTrainConfig (:6)
    "AntRun": _osrl(((700, 10), (750, 20), (800, 40)), 3, 1000, 150),  # :107
    "DroneRun": _osrl(((400, 10), (500, 20), (600, 40)), 1, 700, 100),  # :123
    "DroneCircle": _osrl(((700, 10), (750, 20), (800, 40)), 1, 1000, 100),  # :140
    "CarRun": _osrl(((575, 10), (575, 20), (575, 40)), 0, 600, 100),  # :157
    "AntCircle": _osrl(((300, 10), (350, 20), (400, 40)), 2, 500, 100),  # :174
    "BallRun": _osrl(((500, 10), (500, 20), (700, 40)), 2, 1400, 200),  # :191
    "BallCircle": _osrl(((700, 10), (750, 20), (800, 40)), 2, 1000, 200),  # :208
    "CarButton1": _osrl(((35, 20), (35, 40), (35, 80)), 0, 45, 10),  # :225
    "CarButton2": _osrl(((40, 20), (40, 40), (40, 80)), 0, 50, 10),  # :241
    "CarCircle1": _osrl(((20, 20), (22.5, 40), (25, 80)), 1, 30, 10),  # :257
    "CarCircle2": _osrl(((20, 20), (21, 40), (22, 80)), 1, 30, 10),  # :273
    "CarGoal1": _osrl(((40, 20), (40, 40), (40, 80)), 1, 50, 5),  # :289
    "CarGoal2": _osrl(((30, 20), (30, 40), (30, 80)), 1, 35, 5),  # :305
    "CarPush1": _osrl(((15, 20), (15, 40), (15, 80)), 0, 20, 5),  # :321
    "CarPush2": _osrl(((12, 20), (12, 40), (12, 80)), 0, 15, 3),  # :337
    "PointButton1": _osrl(((40, 20), (40, 40), (40, 80)), 0, 45, 5),  # :353
    "PointButton2": _osrl(((40, 20), (40, 40), (40, 80)), 0, 50, 10),  # :369
    "PointCircle1": _osrl(((50, 20), (52.5, 40), (55, 80)), 1, 65, 5),  # :385
    "PointCircle2": _osrl(((45, 20), (47.5, 40), (50, 80)), 1, 55, 5),  # :401
    "PointGoal1": _osrl(((30, 20), (30, 40), (30, 80)), 0, 35, 5),  # :417
    "PointGoal2": _osrl(((30, 20), (30, 40), (30, 80)), 1, 35, 5),  # :433
    "PointPush1": _osrl(((15, 20), (15, 40), (15, 80)), 0, 20, 5),  # :449
    "PointPush2": _osrl(((12, 20), (12, 40), (12, 80)), 0, 15, 3),  # :465
    "AntVelocity": _osrl(((2800, 20), (2800, 40), (2800, 80)), 1, 3000, 500),  # :481
    "HalfCheetahVelocity": _osrl(((3000, 20), (3000, 40), (3000, 80)), 1, 3000, 500),  # :498
    "HopperVelocity": _osrl(((1750, 20), (1750, 40), (1750, 80)), 1, 2000, 300),  # :515
    "SwimmerVelocity": _osrl(((160, 20), (160, 40), (160, 80)), 1, 250, 50),  # :532
    "Walker2dVelocity": _osrl(((2800, 20), (2800, 40), (2800, 80)), 1, 3600, 800),  # :549
    "EasySparse": _osrl(((300, 10), (350, 20), (400, 40)), 2, 500, 100),  # :566
    "EasyMean": _osrl(((300, 10), (350, 20), (400, 40)), 2, 500, 100),  # :584
    "EasyDense": _osrl(((300, 10), (350, 20), (400, 40)), 2, 500, 100),  # :602
    "MediumSparse": _osrl(((300, 10), (300, 20), (300, 40)), 0, 300, 100),  # :620
    "MediumMean": _osrl(((300, 10), (300, 20), (300, 40)), 0, 300, 100),  # :638
    # :656 CDTMediumDenseConfig sets none of these and inherits CDTTrainConfig's (OSRL bug).
    "MediumDense": _osrl(((450, 10), (500, 20), (550, 50)), 4, 600, 100),
    "HardSparse": _osrl(((300, 10), (350, 20), (400, 40)), 1, 500, 100),  # :664
    "HardMean": _osrl(((300, 10), (350, 20), (400, 40)), 1, 500, 100),  # :682
    "HardDense": _osrl(((300, 10), (350, 20), (400, 40)), 1, 500, 100),  # :700
}


def osrl_target_return(values: OSRLCDTValues, cost_limit: float) -> float:
    """The reward target OSRL's table gives for ``cost_limit``: the pair at that cost; else the
    pair with the largest cost below it; else the lowest-cost pair (flrp's rule where OSRL has no
    pair at the limit, e.g. Safety-Gymnasium at 10)."""
    pairs = sorted(values.targets, key=lambda rc: rc[1])
    below = [r for r, c in pairs if c <= cost_limit]
    return below[-1] if below else pairs[0][0]


def default_target_return(episode_returns: np.ndarray, episode_costs: np.ndarray, cost_limit: float) -> float:
    """Best return among episodes with cost <= ``cost_limit``; if there are none, the return of the
    cheapest episode (the best among the cheapest ones)."""
    rets = np.asarray(episode_returns, dtype=np.float64)
    costs = np.asarray(episode_costs, dtype=np.float64)
    if len(rets) == 0:
        raise FlrpError("default_target_return: the dataset has no episodes")
    safe = costs <= cost_limit
    if not safe.any():
        safe = costs == costs.min()
    return float(rets[safe].max())


class CDTNetwork(nn.Module):
    """``(s, a, RTG, CTG, t)`` windows (B, T, ...) -> action distribution and cost logits per step."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        max_timestep: int,
        embed_dim: int = 128,
        num_layers: int = 3,
        num_heads: int = 8,
        attention_dropout: float = 0.1,
        residual_dropout: float = 0.1,
        embedding_dropout: float = 0.1,
        stochastic: bool = True,
        cost_transform: bool = True,
    ) -> None:
        super().__init__()
        self.max_timestep = max_timestep
        self.stochastic = stochastic
        self.cost_transform = cost_transform
        self.timestep_emb = nn.Embedding(max_timestep, embed_dim)
        self.return_emb = nn.Linear(1, embed_dim)
        self.cost_emb = nn.Linear(1, embed_dim)
        self.state_emb = nn.Linear(obs_dim, embed_dim)
        self.action_emb = nn.Linear(act_dim, embed_dim)
        self.trunk = CausalTransformer(embed_dim, num_layers, num_heads, attention_dropout, residual_dropout, embedding_dropout)
        self.mu = nn.Linear(embed_dim, act_dim)
        # OSRL DiagGaussianActor: separate linear mean and log-std; a deterministic head (MSE) has no log-std.
        self.log_std = nn.Linear(embed_dim, act_dim) if stochastic else None
        self.cost_head = nn.Linear(embed_dim, 2)
        self.apply(init_gpt_weights)

    def forward(
        self,
        obs: torch.Tensor,  # (B, T, obs_dim)
        act: torch.Tensor,  # (B, T, act_dim)
        rtg: torch.Tensor,  # (B, T) scaled
        ctg: torch.Tensor,  # (B, T) scaled
        timestep: torch.Tensor,  # (B, T) long
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Windows must be right-padded (real steps first), as the sampler and the evaluation
        context make them: causal attention then hides the padding from every real step, so no
        padding mask is needed (:mod:`flrp.nn.transformer`)."""
        B, T = obs.shape[:2]
        time = self.timestep_emb(timestep.clamp(0, self.max_timestep - 1))
        if self.cost_transform:
            ctg = COST_TRANSFORM_OFFSET - ctg
        tokens = torch.stack(
            [self.return_emb(rtg.unsqueeze(-1)), self.cost_emb(ctg.unsqueeze(-1)), self.state_emb(obs), self.action_emb(act)],
            dim=2,
        )  # (B, T, 4, E)
        tokens = (tokens + time.unsqueeze(2)).reshape(B, 4 * T, -1)  # (R_0, C_0, s_0, a_0, R_1, ...)
        # only the state and action tokens feed a head: (s_0, a_0, s_1, a_1, ...)
        wanted = torch.arange(4 * T, device=obs.device).view(T, 4)[:, 2:].reshape(-1)
        out = self.trunk(tokens, outputs=wanted).reshape(B, T, 2, -1)
        state_feat, action_feat = out[:, :, 0], out[:, :, 1]
        mu = self.mu(state_feat)
        log_std = self.log_std(state_feat) if self.log_std is not None else None
        return mu, log_std, self.cost_head(action_feat)


class _Temperature(nn.Module):
    """The learned entropy temperature ``T = exp(log_T)`` (OSRL ``CDT.log_temperature``)."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init), dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        return self.log_temperature.exp()


@register
class CDT(Algorithm):
    """Constrained Decision Transformer conditioned on target return and cost-to-go."""

    name = "cdt"
    Config = CDTConfig
    config: CDTConfig
    suite_steps = OSRL_SUITE_STEPS

    def __init__(self, config: CDTConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(config, device)
        self._default_target_return: float | None = None
        self._ep_weight: torch.Tensor | None = None  # CPU copies for the CPU sampler generator
        self._ep_len: torch.Tensor | None = None
        self.augmentation: Augmentation | None = None

    # ------------------------------------------------------------------ building
    def _build(self, spec: DataSpec) -> None:
        c = self.config
        if c.seq_len < 1:
            raise FlrpError(f"cdt: seq_len must be >= 1, got {c.seq_len}")
        if c.micro_batch is not None and c.micro_batch < 1:
            raise FlrpError(f"cdt: micro_batch must be >= 1 (or None), got {c.micro_batch}")
        self.modules["model"] = CDTNetwork(
            spec.obs_dim,
            spec.act_dim,
            max_timestep=spec.max_episode_steps + c.seq_len,
            embed_dim=c.embed_dim,
            num_layers=c.num_layers,
            num_heads=c.num_heads,
            attention_dropout=c.attention_dropout,
            residual_dropout=c.residual_dropout,
            embedding_dropout=c.embedding_dropout,
            stochastic=c.stochastic,
            cost_transform=c.cost_transform,
        )
        if c.stochastic:
            self.modules["temperature"] = _Temperature(c.init_temperature)

    def _build_optimizers(self) -> None:
        c = self.config
        self.optimizers["model"] = torch.optim.AdamW(
            self.modules["model"].parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=(c.beta1, c.beta2)
        )
        if c.stochastic:
            self.optimizers["temperature"] = torch.optim.Adam(self.modules["temperature"].parameters(), lr=c.temperature_lr, betas=(0.9, 0.999))

    # ------------------------------------------------------------------ data
    def prepare_data(self, ds: OfflineDataset) -> dict[str, np.ndarray]:
        """Flat obs/act/cost plus per-step RTG/CTG and the (real + augmented) trajectory table.

        Also fixes the default evaluation target return (saved with the model). Fields left at
        None take OSRL's values of the dataset's task if it has some (module docstring).
        """
        c = self.config
        flat = super().prepare_data(ds)
        ep_rets, ep_costs = ds.episode_returns(), ds.episode_costs()
        task = dataset_task(ds)
        osrl = OSRL_CDT_TASKS.get(task.name) if task is not None else None
        if osrl is not None:
            self._default_target_return = osrl_target_return(osrl, c.cost_limit)
        else:
            self._default_target_return = default_target_return(ep_rets, ep_costs, c.cost_limit)
        aug = None
        if c.augment_percent > 0:
            deg = c.aug_deg if c.aug_deg is not None else (osrl.deg if osrl else 1)
            max_reward = c.aug_max_reward if c.aug_max_reward is not None or osrl is None else osrl.max_reward
            max_drop = c.aug_max_rew_decrease if c.aug_max_rew_decrease is not None or osrl is None else osrl.max_rew_decrease
            aug = pareto_augmentation(
                ep_costs,
                ep_rets,
                np.random.default_rng(c.seed),  # same relabelling on every (re)start
                augment_percent=c.augment_percent,
                deg=deg,
                max_reward=max_reward,
                min_reward=c.aug_min_reward,
                max_rew_decrease=max_drop,
                beta=c.aug_beta,
            )
        self.augmentation = aug
        seq = sequence_arrays(ds.rewards, ds.costs, ds.episode_bounds, aug, c.cost_sample_threshold if c.cost_sample else None)
        self._ep_weight = torch.as_tensor(seq.pop("ep_weight"))
        self._ep_len = torch.as_tensor(seq["ep_len"])
        return {"obs": flat["obs"], "act": flat["act"], "cost": flat["cost"], **seq}

    def sample_batch(self, data: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """``n`` windows of ``seq_len`` steps; indices drawn on the CPU generator (exact resume)."""
        if self._ep_weight is None or self._ep_len is None:
            raise FlrpError("cdt.sample_batch: call prepare_data first")
        ep, offset = sample_window_index(self._ep_weight, self._ep_len, n, self._sampler_gen)
        c = self.config
        return gather_windows(data, ep, offset, c.seq_len, c.reward_scale, c.cost_scale)

    # ------------------------------------------------------------------ learning
    @contextlib.contextmanager
    def _seeded_dropout(self) -> Iterator[None]:
        """Run dropout from a seed fixed by (config seed, step), leaving global RNG alone.

        The step is checkpointed, so resume is exact; no value is read back from the device (a
        seed drawn on a CUDA generator would cost a host sync every step)."""
        seed = (self.config.seed * 1_000_003 + self.step * 7_919 + 17) % (2**62)
        cuda = self.device.type == "cuda"
        index = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if cuda else None
        with torch.random.fork_rng(devices=[index] if cuda else []):
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(seed)
            yield

    def micro_batch_size(self, batch_size: int) -> int:
        """Windows per forward/backward pass (:attr:`CDTConfig.micro_batch`)."""
        m = self.config.micro_batch
        if m is None:
            m = CPU_MICRO_BATCH if self.device.type == "cpu" else batch_size
        return max(1, min(int(m), batch_size))

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step on the whole batch, run as forward/backward passes over micro-batches whose
        gradients add up to the batch gradient (each loss term is divided by its full-batch count)."""
        c = self.config
        net = self.modules["model"]
        opt = self.optimizers["model"]
        lr = c.lr * min((self.step + 1) / max(c.warmup_steps, 1), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr
        act = batch["act"]
        B, T, A = act.shape
        valid = batch["valid"]
        validf = valid.to(act.dtype)
        labels = (batch["cost"] > 0).long()
        # OSRL: the action terms average over valid steps and action dimensions; the cost NLL over
        # all B * T positions (padding counts as zero).
        act_count = validf.sum() * A
        cost_count = float(B * T)
        temperature = self.modules["temperature"]().detach() if c.stochastic else None
        zero = act.new_zeros(())
        log_lik_sum, entropy_sum, mse_sum, cost_sum, correct = zero, zero, zero, zero, zero
        chunk = self.micro_batch_size(B)
        opt.zero_grad(set_to_none=True)
        with self._seeded_dropout():
            for lo in range(0, B, chunk):
                sl = slice(lo, lo + chunk)
                v = validf[sl]
                mu, log_std, cost_logits = net(batch["obs"][sl], act[sl], batch["rtg"][sl], batch["ctg"][sl], batch["timestep"][sl])
                if c.stochastic:
                    assert log_std is not None and temperature is not None
                    z = (act[sl] - mu) * torch.exp(-log_std)
                    log_prob = -0.5 * z.square() - log_std - 0.5 * _LOG_2PI  # (b, T, A) per dimension
                    entropy = 0.5 + 0.5 * _LOG_2PI + log_std
                    lp = (log_prob.sum(-1) * v).sum()
                    ent = (entropy.sum(-1) * v).sum()
                    act_part = -(lp + temperature * ent) / act_count
                    log_lik_sum, entropy_sum = log_lik_sum + lp.detach(), entropy_sum + ent.detach()
                else:
                    se = ((mu - act[sl]).square().sum(-1) * v).sum()
                    act_part = se / (cost_count * A)  # OSRL: masked squared error averaged over B * T * A
                    mse_sum = mse_sum + se.detach()
                nll = F.cross_entropy(cost_logits.reshape(-1, 2), labels[sl].reshape(-1), reduction="none")
                cn = (nll * v.reshape(-1)).sum()
                (act_part + c.loss_cost_weight * cn / cost_count).backward()
                cost_sum = cost_sum + cn.detach()
                with torch.no_grad():
                    correct = correct + ((cost_logits.argmax(-1) == labels[sl]) & valid[sl]).sum()
        if c.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), c.clip_grad)
        opt.step()
        metrics: dict[str, torch.Tensor] = {}
        if c.stochastic:
            assert temperature is not None
            log_lik, entropy_mean = log_lik_sum / act_count, entropy_sum / act_count
            act_loss = -(log_lik + temperature * entropy_mean)
            metrics.update({"actor/nll": -log_lik, "actor/entropy": entropy_mean, "actor/temperature": temperature})
            t_opt = self.optimizers["temperature"]
            target_entropy = -float(A)  # OSRL train_cdt.py: -act_dim
            t_loss = self.modules["temperature"]() * (entropy_mean - target_entropy)
            t_opt.zero_grad(set_to_none=True)
            t_loss.backward()
            t_opt.step()
        else:
            act_loss = mse_sum / (cost_count * A)
            metrics["actor/mse"] = act_loss
        cost_loss = cost_sum / cost_count
        acc = correct / valid.sum().clamp_min(1)
        loss = act_loss + c.loss_cost_weight * cost_loss
        metrics.update({"actor/loss": act_loss, "cost/nll": cost_loss, "cost/acc": acc, "train/loss": loss, "train/lr": torch.tensor(lr)})
        return metrics

    # ------------------------------------------------------------------ targets and acting
    @property
    def target_return(self) -> float:
        """Raw-unit evaluation target return (config, else the dataset default, else the spec max)."""
        if self.config.target_return is not None:
            return float(self.config.target_return)
        if self._default_target_return is not None:
            return self._default_target_return
        return float(self._require_built().episode_return_max)

    @property
    def target_cost(self) -> float:
        """Raw-unit evaluation target cost (config, else ``cost_limit``)."""
        return float(self.config.target_cost if self.config.target_cost is not None else self.config.cost_limit)

    def _choose(self, mu: torch.Tensor, log_std: torch.Tensor | None, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        """Gaussian mean (or a sample) clamped to the action box (OSRL ``acts.mean.clamp``)."""
        if deterministic or log_std is None:
            return mu.clamp(-1.0, 1.0)
        noise = torch.randn(mu.shape, device=mu.device, generator=generator)
        return (mu + log_std.exp() * noise).clamp(-1.0, 1.0)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """One-step context: ``(R, C, s)`` at t = 0 with the configured targets."""
        c = self.config
        spec = self._require_built()
        B = obs.shape[0]
        dev = obs.device
        rtg = torch.full((B, 1), self.target_return * c.reward_scale, device=dev)
        ctg = torch.full((B, 1), self.target_cost * c.cost_scale, device=dev)
        act0 = torch.zeros(B, 1, spec.act_dim, device=dev)
        t0 = torch.zeros(B, 1, dtype=torch.long, device=dev)
        mu, log_std, _ = self.modules["model"](obs[:, None], act0, rtg, ctg, t0)
        return self._choose(mu[:, -1], None if log_std is None else log_std[:, -1], deterministic, self._noise_gen)

    def episode_runner(self, n_envs: int, target_return: float | None = None, target_cost: float | None = None) -> "CDTEpisodeRunner":
        """A stateful runner for :func:`flrp.evaluation.rollout.run_episodes` (one context per env)."""
        return CDTEpisodeRunner(self, n_envs, target_return, target_cost)

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {"default_target_return": self._default_target_return}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        value = state.get("default_target_return")
        self._default_target_return = None if value is None else float(value)


class CDTEpisodeRunner:
    """Per-episode context for lockstep evaluation (OSRL ``CDTTrainer.rollout``, batched).

    Holds for each env its last ``seq_len`` (state, action, RTG, CTG, timestep) tokens, left-aligned
    with right padding. ``act`` appends the new state with the current RTG/CTG and a zero action
    placeholder, runs the model and stores the chosen action; ``observe`` subtracts
    ``reward * reward_scale`` and ``cost * cost_scale`` from the env's RTG/CTG. ``rtg``/``ctg``
    (float64, scaled units) are the values the next ``act`` will use.
    """

    def __init__(self, algo: CDT, n_envs: int, target_return: float | None = None, target_cost: float | None = None) -> None:
        spec = algo._require_built()
        c = algo.config
        self.algo = algo
        self.seq_len = c.seq_len
        dev = algo.device
        T = c.seq_len
        self.obs = torch.zeros(n_envs, T, spec.obs_dim, device=dev)
        self.act_buf = torch.zeros(n_envs, T, spec.act_dim, device=dev)
        self.rtg_buf = torch.zeros(n_envs, T, device=dev)
        self.ctg_buf = torch.zeros(n_envs, T, device=dev)
        self.time_buf = torch.zeros(n_envs, T, dtype=torch.long, device=dev)
        self.filled = np.zeros(n_envs, dtype=np.int64)  # tokens in the context (<= seq_len)
        self.t = np.zeros(n_envs, dtype=np.int64)  # steps taken in the episode
        R = algo.target_return if target_return is None else float(target_return)
        C = algo.target_cost if target_cost is None else float(target_cost)
        self.rtg = np.full(n_envs, R * c.reward_scale, dtype=np.float64)
        self.ctg = np.full(n_envs, C * c.cost_scale, dtype=np.float64)
        # Sampling mode only. Seeded from the algorithm's noise stream, which evaluation fixes per
        # group of episodes (Algorithm.seeded_noise), so each group samples differently.
        seed = int(torch.randint(0, 2**62, (1,), generator=algo._noise_gen, device=algo._noise_gen.device).item())
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray, env_ids: np.ndarray, deterministic: bool = True) -> np.ndarray:
        algo = self.algo
        spec = algo._require_built()
        ids_np = np.asarray(env_ids, dtype=np.int64)
        dev = algo.device
        ids = torch.as_tensor(ids_np, device=dev)
        T = self.seq_len
        full = self.filled[ids_np] >= T
        if full.any():  # drop the oldest step of full contexts
            f = torch.as_tensor(ids_np[full], device=dev)
            for buf in (self.obs, self.act_buf, self.rtg_buf, self.ctg_buf, self.time_buf):
                buf[f] = torch.roll(buf[f], shifts=-1, dims=1)
        pos_np = np.minimum(self.filled[ids_np], T - 1)
        pos = torch.as_tensor(pos_np, device=dev)
        s = torch.as_tensor(spec.normalize_obs(np.asarray(obs, dtype=np.float32).reshape(len(ids_np), -1)), device=dev)
        self.obs[ids, pos] = s
        self.act_buf[ids, pos] = 0.0
        self.rtg_buf[ids, pos] = torch.as_tensor(self.rtg[ids_np], dtype=torch.float32, device=dev)
        self.ctg_buf[ids, pos] = torch.as_tensor(self.ctg[ids_np], dtype=torch.float32, device=dev)
        self.time_buf[ids, pos] = torch.as_tensor(self.t[ids_np], device=dev)
        self.filled[ids_np] = pos_np + 1
        with algo.eval_mode():  # steps after ``pos`` are right padding, hidden by causality
            mu, log_std, _ = algo.modules["model"](self.obs[ids], self.act_buf[ids], self.rtg_buf[ids], self.ctg_buf[ids], self.time_buf[ids])
        rows = torch.arange(len(ids_np), device=dev)
        a = algo._choose(mu[rows, pos], None if log_std is None else log_std[rows, pos], deterministic, self.generator)
        self.act_buf[ids, pos] = a
        self.t[ids_np] += 1
        return (a.float().cpu().numpy() * spec.action_bound).astype(np.float32)

    def observe(self, env_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None:
        c = self.algo.config
        ids = np.asarray(env_ids, dtype=np.int64)
        self.rtg[ids] -= np.asarray(rewards, dtype=np.float64) * c.reward_scale
        self.ctg[ids] -= np.asarray(costs, dtype=np.float64) * c.cost_scale
