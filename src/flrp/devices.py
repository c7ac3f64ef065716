"""``--device`` as a torch device: ``auto`` picks CUDA when present; anything absent here is one line.
Also the machine a run was trained on (:func:`machine_info`): the same seed gives the same numbers
only on the same kind of processor, so a run records which one it had."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from flrp.errors import FlrpError

__all__ = ["machine_info", "resolve_device"]


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


# The instruction-set flags that pick numerical kernels at run time: glibc's libm takes FMA
# variants of sin/cos/exp when ``fma`` is there, numpy and torch dispatch on AVX2/AVX512.
_KERNEL_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, str]:
    """The processor's model name and its kernel-selecting flags (:data:`_KERNEL_FLAGS`, space-
    separated) from ``/proc/cpuinfo`` on Linux; elsewhere what :mod:`platform` knows and ``""``."""
    name, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key == "flags" and not flags:
                have = set(value.split())
                flags = " ".join(f for f in _KERNEL_FLAGS if f in have)
            if name and flags:
                break
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "unknown", flags


def machine_info(device: torch.device) -> dict[str, str]:
    """What decides a run's float rounding, for ``run.json``: the processor and its
    kernel-selecting instruction flags, the vector instructions torch's CPU kernels use on it,
    the torch and numpy builds (the simulators' observations and rewards go through numpy's
    float64 kernels) and, on a GPU, the GPU's name. Two processors with the same torch
    capability need not agree (this project's second and fourth machines both report AVX512 and
    give different numbers from the same seed), hence the flags."""
    cpu, flags = _cpuinfo()
    info = {"cpu": cpu, "cpu_flags": flags, "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "torch": torch.__version__, "numpy": np.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
