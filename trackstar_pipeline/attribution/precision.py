"""Which dtype a forward pass runs in: the one place the precision setting meets the hardware.

Pretraining (`training.precision`) and gradient collection (`attribution.precision`) both run their
forward under torch.autocast in bfloat16 where the hardware has fast bfloat16 matmuls (CUDA compute
capability 8.0+; x86 CPUs whose bfloat16 instructions measure faster than float32) and in plain
float32 elsewhere; weights stay float32 either way. The CPU flag alone does not tell: on one 2-core
AMD EPYC with AVX512-BF16 bfloat16 autocast ran a 63M Llama's forward+backward 1.9-2.6x faster than
float32, while on a 2-core Intel Xeon with the same flag (no AMX exposed) a training step of the
default 256-wide model took 1.7x longer (600 against 345 ms, one thread). So the CPU case is measured
once per process: a linear layer's forward and backward in both dtypes, a fraction of a second.
"""

from __future__ import annotations

import functools
import math
import time
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from trackstar_pipeline.settings import Precision


BFLOAT16_MIN_SPEEDUP = 1.2
"""bfloat16 autocast must beat float32 by this much to be chosen: a tie is not worth the rounding."""


@functools.cache
def cpu_has_fast_bfloat16() -> bool:
    """True on x86 CPUs with bfloat16 instructions (AMX or AVX512-BF16) that also measure faster than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if "amx_bf16" not in flags and "avx512_bf16" not in flags:
        return False  # emulated bfloat16: always slower
    return cpu_bfloat16_speedup() >= BFLOAT16_MIN_SPEEDUP


def cpu_bfloat16_speedup(rows: int = 1024, width: int = 256, repeats: int = 5) -> float:
    """float32 time over bfloat16-autocast time of a (rows x width) @ (width x 4*width) forward and backward.

    The shapes of one batch through the default model's MLP; the two dtypes are timed in alternation
    and the best of `repeats` kept, so a busy neighbour slows both alike.
    """
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, width, generator=generator)
    weight = torch.randn(4 * width, width, generator=generator, requires_grad=True)

    def seconds(dtype: torch.dtype | None) -> float:
        start = time.perf_counter()
        with autocast(torch.device("cpu"), dtype):
            output = inputs @ weight.T
        output.float().sum().backward()
        return time.perf_counter() - start

    best = {None: math.inf, torch.bfloat16: math.inf}
    for _ in range(repeats + 1):  # the first round warms up both kernels
        for dtype in best:
            best[dtype] = min(best[dtype], seconds(dtype))
    return best[None] / best[torch.bfloat16]


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matmuls natively: an Ampere-or-newer GPU, or a CPU where bfloat16 measures faster."""
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
