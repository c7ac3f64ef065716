"""``call_frozen``: run a network as a fixed function, so gradients reach its inputs but not its weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["call_frozen"]


def call_frozen(module: nn.Module, *args: Any, method: str = "forward") -> Any:
    """Call ``module`` with its parameters detached: gradients reach the inputs, never the weights.

    Used where one loss must pass *through* a network it must not train (the refiner through the
    frozen prior flow, decoder and critics, Sec. 3.2 "Freezing the decoder").
    """
    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = dict(module.named_buffers())
    if method == "forward":
        return torch.func.functional_call(module, {**params, **buffers}, args)
    # functional_call only dispatches forward; route other methods through a tiny shim.
    return torch.func.functional_call(_MethodShim(module, method), {f"m.{k}": v for k, v in {**params, **buffers}.items()}, args)


class _MethodShim(nn.Module):
    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.m = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.m, self.method)(*args)
