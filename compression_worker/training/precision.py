"""Which arithmetic a network trains and teaches in: bf16 autocast where the hardware runs it fast, else fp32.

On a GPU bf16 autocast has always been the default. On a CPU it pays only with native bf16 units (Intel AMX
or AVX512-BF16, used by oneDNN): dense teachers train 3-5x faster under it on Intel AMX (issue #26) and 2x on
the AVX512-BF16 EPYC of session 9, while depthwise EAN students are slower (0.6-0.7x), so `auto` keeps EANs in
fp32 on a CPU (docs/BENCHMARKS.md section 12).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgefer.jobs.recipe import PRECISIONS

_CPU_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")


def cpu_bf16_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The CPU's native bf16 features among AMX-BF16 and AVX512-BF16 (empty where it has none or cannot tell)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return tuple(f for f in _CPU_BF16_FLAGS if f in flags)


def resolve_precision(
    setting: str, device: torch.device, model: nn.Module | None = None, features: tuple[str, ...] | None = None
) -> str:
    """`fp32` or `bf16` for a network on a device. `auto`: bf16 on a GPU; on a CPU bf16 for dense (non-EAN)
    networks when it has native bf16 units (`features`, detected when None), fp32 otherwise. An explicit
    `bf16` is honoured everywhere."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16"
    if device.type != "cpu" or not (cpu_bf16_features() if features is None else features):
        return "fp32"
    depthwise = model is not None and getattr(model, "family", "ean") == "ean"
    return "fp32" if depthwise else "bf16"


def describe_precision(precision: str, device: torch.device) -> str:
    """A line for the log and the model card: what was used and why it could be."""
    if device.type == "cpu" and precision == "bf16":
        features = ", ".join(cpu_bf16_features()) or "no native bf16 units: emulated, slow"
        return f"bf16 autocast on the CPU ({features})"
    return f"{precision} on {device.type}"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Forward passes under bf16 autocast when `precision` (already resolved) says so."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
