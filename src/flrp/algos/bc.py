"""Behaviour cloning baselines BC-All and BC-Safe (OSRL ``osrl/algorithms/bc.py``).

Defaults from OSRL's ``examples/configs/bc_configs.py``: actor MLP [256, 256] ReLU with tanh
output, MSE to dataset actions, Adam lr 1e-3, batch 512, 100k steps; BC-Safe keeps only episodes
whose undiscounted cost is <= cost_limit (OSRL ``process_bc_dataset`` mode "safe"). Raw
observations, as OSRL trains BC (``--normalize-obs`` standardises them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from flrp.algos.base import AlgoConfig, Algorithm, register
from flrp.algos.sources import OSRL_SUITE_STEPS
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.errors import FlrpError
from flrp.nn.policies import DeterministicActor

__all__ = ["BCConfig", "BC", "BCSafe", "BCSafeConfig"]


@dataclass
class BCConfig(AlgoConfig):
    # OSRL bc_configs.py:33 update_steps 100_000; its MetaDrive configs 200_000 (bc_configs.py:250
    # and on: BC.suite_steps, used when --steps is not given). The paper's Table 4 says 1e6.
    steps: int = 100_000
    # OSRL bc_configs.py: actor_lr 1e-3.
    lr: float = 1e-3
    # OSRL examples/train/train_bc.py:55 uses the plain env: no observation normalisation.
    normalize_obs: bool = False
    # "all" = BC-All, "safe" = BC-Safe (episodes with cost <= cost_limit).
    mode: Literal["all", "safe"] = "all"


@dataclass
class BCSafeConfig(BCConfig):
    mode: Literal["all", "safe"] = "safe"


@register
class BC(Algorithm):
    """Deterministic behaviour cloning on all (BC-All) or safe (BC-Safe) episodes."""

    name = "bc-all"
    Config = BCConfig
    config: BCConfig
    suite_steps = OSRL_SUITE_STEPS

    def _build(self, spec: DataSpec) -> None:
        self.modules["actor"] = DeterministicActor(spec.obs_dim, spec.act_dim, self.config.hidden_sizes)

    def _build_optimizers(self) -> None:
        self.optimizers["actor"] = torch.optim.Adam(self.modules["actor"].parameters(), lr=self.config.lr, fused=self.device.type in ("cpu", "cuda"))

    def prepare_data(self, ds: OfflineDataset) -> dict[str, np.ndarray]:
        if self.config.mode == "safe":
            keep = ds.episode_costs() <= self.config.cost_limit
            if not keep.any():
                raise FlrpError(f"{ds.source}: no episode has cost <= {self.config.cost_limit}; BC-Safe has nothing to clone")
            ds = ds.select_episodes(keep)
        data = super().prepare_data(ds)
        return {"obs": data["obs"], "act": data["act"]}  # all BC reads: sampling gathers only these

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = (self.modules["actor"](batch["obs"]) - batch["act"]).square().mean()
        opt = self.optimizers["actor"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"actor/mse": loss.detach()}

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.modules["actor"](obs)


@register
class BCSafe(BC):
    name = "bc-safe"
    Config = BCSafeConfig
