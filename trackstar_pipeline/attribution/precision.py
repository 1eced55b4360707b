"""Which dtype a forward pass runs in: the one place the precision setting meets the hardware.

Pretraining (`training.precision`) and gradient collection (`attribution.precision`) both run their
forward under torch.autocast in bfloat16 where the hardware has fast bfloat16 matmuls (CUDA compute
capability 8.0+, x86 CPUs with AMX or AVX512-BF16: about 3x a float32 forward+backward of a 63M
Llama on this project's CPU) and in plain float32 elsewhere; weights stay float32 either way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import torch

from trackstar_pipeline.settings import Precision


def cpu_has_fast_bfloat16() -> bool:
    """True on x86 CPUs with AMX or AVX512-BF16, where bfloat16 matmuls beat float32 by a wide margin."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matmuls natively: an Ampere-or-newer GPU, or a CPU with AMX/AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and cpu_has_fast_bfloat16()


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a forward on `device` runs in, or None for plain float32."""
    if precision == "bfloat16" or (precision == "auto" and has_fast_bfloat16(device)):
        return torch.bfloat16
    if precision in ("auto", "float32"):
        return None
    raise ValueError(f"precision={precision!r} is not one of auto, float32, bfloat16")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast on `device` in `dtype`, or a no-op context when dtype is None (float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
