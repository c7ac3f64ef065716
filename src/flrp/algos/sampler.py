"""Minibatch sampling: uniform with replacement, from a CPU generator, drawn a block at a time.

The indices come from a CPU generator, so the stream is the same on every device and
restorable from a checkpoint. They are drawn ``SAMPLE_BLOCK`` steps at a time and moved to the
device in one (pinned, asynchronous) copy, so a CUDA training loop has no per-step host-device
transfer; on CPU a block draws exactly the numbers of per-step draws.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SAMPLE_BLOCK", "BlockSampler"]

SAMPLE_BLOCK = 256  # minibatch index draws per host-to-device copy


class BlockSampler:
    """Uniform minibatch indices with replacement (OSRL/FISOR practice), resumable mid-block.

    ``state()`` is the generator state at the current block's start plus the steps used of it;
    ``set_state`` restores it, so a checkpoint inside a block resumes the same stream.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.generator = torch.Generator()
        self._block: torch.Tensor | None = None
        self._block_state: torch.Tensor | None = None
        self._pos = self._skip = self._size = 0

    def seed(self, seed: int) -> None:
        self.set_state({"state": self.generator.manual_seed(seed).get_state(), "pos": 0})

    def sample(self, data: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        """One minibatch of ``batch_size`` rows of every array in ``data``."""
        size = next(iter(data.values())).shape[0]
        blk = self._block
        if blk is None or self._pos >= blk.shape[0] or self._size != size or blk.shape[1] != batch_size:
            self._block_state = self.generator.get_state()
            cpu = torch.randint(size, (SAMPLE_BLOCK, batch_size), generator=self.generator)
            if self.device.type == "cuda":
                cpu = cpu.pin_memory()
            blk, self._size = cpu.to(self.device, non_blocking=True), size
            self._block = blk
            self._pos, self._skip = self._skip, 0
        idx = blk[self._pos]
        self._pos += 1
        return {k: v.index_select(0, idx) for k, v in data.items()}

    def state(self) -> dict[str, Any]:
        """The position: the generator state at the current block's start + steps used."""
        if self._block is None:  # none drawn since seed/set_state: a resumed position may be pending
            return {"state": self.generator.get_state(), "pos": self._skip}
        if self._pos >= self._block.shape[0]:
            return {"state": self.generator.get_state(), "pos": 0}
        return {"state": self._block_state, "pos": self._pos}

    def set_state(self, saved: Any) -> None:
        if isinstance(saved, torch.Tensor):  # checkpoints of flrp 0.1: the generator state alone
            saved = {"state": saved, "pos": 0}
        self.generator.set_state(saved["state"])
        self._block, self._pos, self._skip = None, 0, int(saved["pos"])
