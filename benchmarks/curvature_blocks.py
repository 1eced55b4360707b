"""Per-module block-diagonal curvature against the dense R, and the paper's d = 65536.

Run: python benchmarks/curvature_blocks.py [--threads 1] [--repeats 3]

1. Ratio (same run, interleaved): at d = 4096 split over 16 modules, the whole curvature step
   (stream 2000 corpus + 500 query gradients into R_train / R_eval, lambda 'auto' from the pooled
   eigenvalues, damped R^{-1/2}, whiten 500 vectors) with curvature_blocks 'dense' vs 'module'.
2. The paper's size: d = 65536 over 224 modules (a Llama-3-8B layout: 32 layers x 7 linears, so
   blocks of ~293), module blocks only: seconds and the peak RSS added by the step (VmHWM after a
   reset of the kernel's mark, Linux). A dense R there would be 32 GiB per matrix in float64.
Gradients are random normal (curvature cost does not depend on their values), drawn in batches of
256 so the inputs never sit in memory at once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from trackstar_pipeline.attribution.curvature import (CurvatureAccumulator, curvature_block_sizes, damped_inverse_sqrt,
                                                      mix_curvature, whiten)
from trackstar_pipeline.attribution.projection import split_dim

BATCH = 256


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise KeyError(field)


def curvature_step(sizes: tuple[int, ...], corpus: int, queries: int, seed: int) -> float:
    """The whole curvature computation for random gradients; returns lambda (so nothing is optimized away)."""
    generator = torch.Generator().manual_seed(seed)
    dim = sum(sizes)
    r_train, r_eval = CurvatureAccumulator(sizes), CurvatureAccumulator(sizes)
    for start in range(0, corpus, BATCH):
        r_train.update(torch.randn(min(BATCH, corpus - start), dim, generator=generator))  # (B, d)
    for start in range(0, queries, BATCH):
        r_eval.update(torch.randn(min(BATCH, queries - start), dim, generator=generator) * 3.0)  # (B, d)
    mixed, used = mix_curvature(r_eval.mean(), r_train.mean(), "auto")
    inverse, spectrum = damped_inverse_sqrt(mixed, 1e-3)
    whitened = whiten(torch.randn(min(queries, BATCH), dim, generator=generator), inverse)  # (B, d)
    assert spectrum.blocks_not_positive == 0 and torch.isfinite(whitened).all()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    module_dims = split_dim(4096, 16)
    timings: dict[str, list[float]] = {"dense": [], "module": []}
    for repeat in range(args.repeats):
        for kind in ("dense", "module"):
            started = time.perf_counter()
            curvature_step(curvature_block_sizes(module_dims, kind), args.corpus, args.queries, seed=repeat)
            timings[kind].append(time.perf_counter() - started)
    for kind, values in timings.items():
        print(f"d=4096, 16 modules, {kind:6s}: " + ", ".join(f"{value:.2f}s" for value in values))
    ratios = [dense / module for dense, module in zip(timings["dense"], timings["module"])]
    print("dense / module time per repeat: " + ", ".join(f"{ratio:.1f}x" for ratio in ratios))

    sizes = curvature_block_sizes(split_dim(65536, 224), "module")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    baseline = _status_kib("VmRSS:")
    started = time.perf_counter()
    used = curvature_step(sizes, args.corpus, args.queries, seed=0)
    seconds = time.perf_counter() - started
    peak = (_status_kib("VmHWM:") - baseline) / 1024
    print(f"d=65536, 224 module blocks of {min(sizes)}-{max(sizes)}: {seconds:.1f}s, peak RSS +{peak:.0f} MiB "
          f"(lambda {used:.4f}; R in float64 {sum(s * s for s in sizes) * 8 / 2**20:.0f} MiB per matrix, "
          f"dense would be {65536**2 * 8 / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
