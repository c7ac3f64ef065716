"""``--device`` as a torch device: ``auto`` picks CUDA when present; anything absent here is one line."""

from __future__ import annotations

import torch

from flrp.errors import FlrpError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if present, else cpu; a device that is unknown or absent here is one line."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FlrpError(f"--device {device}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise FlrpError(f"--device {device}: no CUDA GPU is available here (use --device cpu or auto)")
        if dev.index is not None and dev.index >= n:
            raise FlrpError(f"--device {device}: this machine has {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
    elif dev.type != "cpu":
        raise FlrpError(f"--device {device}: unsupported device type '{dev.type}' (use auto, cpu, cuda or cuda:N)")
    return dev
