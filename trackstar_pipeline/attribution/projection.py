"""Seeded two-sided random projections of per-module gradients (project first, then outer product).

For a weight W (out x in) with per-example gradient G = sum_t g_t a_t^T, the projected gradient is
the first d_m entries of vec(P_out^T G P_in) / sqrt(d_m), where P_out (out, k_out) and P_in (in, k_in)
hold unit-variance entries, so E||proj(G)||^2 = ||G||^2 (JL-unbiased). Because
P_out^T G P_in = sum_t (P_out^T g_t)(P_in^T a_t)^T, the full G is never formed.

P depends only on (projection_seed, module name): it is drawn on CPU from a torch.Generator seeded
by a stable hash, then moved to the device, so every process and device sees identical matrices.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch

from trackstar_pipeline.settings import ProjectionKind


def stable_seed(seed: int, name: str) -> int:
    """A 63-bit seed from (seed, name) that does not depend on Python's hash randomisation."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@functools.lru_cache(maxsize=4096)
def random_matrix(rows: int, cols: int, seed: int, name: str, kind: ProjectionKind) -> torch.Tensor:
    """Unit-variance Rademacher or Gaussian matrix (rows, cols), float32 on CPU, reproducible anywhere.

    Cached: collect_gradients is called once per batch by some callers, and drawing every module's
    matrices again each call cost more than projecting. Callers must not modify the result in place.
    """
    generator = torch.Generator(device="cpu").manual_seed(stable_seed(seed, name))
    if kind == "rademacher":
        signs = torch.randint(0, 2, (rows, cols), generator=generator, dtype=torch.int8)  # (rows, cols)
        return signs.to(torch.float32).mul_(2.0).sub_(1.0)
    if kind == "gaussian":
        return torch.randn((rows, cols), generator=generator, dtype=torch.float32)  # (rows, cols)
    raise ValueError(f"projection_kind must be 'rademacher' or 'gaussian', got {kind!r}")


def split_dim(total: int, parts: int) -> list[int]:
    """Split d over modules: d // n each, the remainder going to the first modules."""
    if parts <= 0:
        raise ValueError("no modules are hooked; check target_modules")
    if total < parts:
        raise ValueError(
            f"projection_dim={total} is smaller than the {parts} hooked modules; raise projection_dim "
            "or narrow target_modules"
        )
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def factor_dim(dim: int, out_features: int) -> tuple[int, int]:
    """k_out = min(out, ceil(sqrt(d_m))), k_in = ceil(d_m / k_out), so k_out * k_in >= d_m."""
    k_out = min(out_features, math.ceil(math.sqrt(dim)))
    return k_out, math.ceil(dim / k_out)


@dataclass
class ModuleProjector:
    """The two projection matrices of one module and how to combine projected factors."""

    name: str
    dim: int
    p_out: torch.Tensor  # (out, k_out)
    p_in: torch.Tensor  # (in, k_in)

    @classmethod
    def create(cls, name: str, out_features: int, in_features: int, dim: int, seed: int,
               kind: ProjectionKind) -> "ModuleProjector":
        """Draw P_out and P_in for a module from (seed, module name)."""
        k_out, k_in = factor_dim(dim, out_features)
        return cls(name, dim, random_matrix(out_features, k_out, seed, f"{name}/out", kind),
                   random_matrix(in_features, k_in, seed, f"{name}/in", kind))

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> "ModuleProjector":
        """The same projector with its matrices on `device` in `dtype` (bfloat16: the hooks' fast copy)."""
        return ModuleProjector(self.name, self.dim, self.p_out.to(device, dtype), self.p_in.to(device, dtype))

    def folded(self, out_scale: torch.Tensor | None, in_scale: torch.Tensor | None) -> "ModuleProjector":
        """Fold a separable 1/sqrt(V) = out_scale out_scale^T into the matrices: diag(s) P."""
        p_out = self.p_out if out_scale is None else self.p_out * out_scale[:, None].to(self.p_out)  # (out, k_out)
        p_in = self.p_in if in_scale is None else self.p_in * in_scale[:, None].to(self.p_in)  # (in, k_in)
        return ModuleProjector(self.name, self.dim, p_out, p_in)

    def combine(self, out_projected: torch.Tensor, in_projected: torch.Tensor) -> torch.Tensor:
        """Per-example sum over tokens of (P_out^T g_t)(P_in^T a_t)^T, flattened to d_m entries."""
        outer = torch.einsum("bto,bti->boi", out_projected, in_projected)  # (B, k_out, k_in)
        return outer.flatten(1)[:, : self.dim] / math.sqrt(self.dim)  # (B, d_m)

    def project_full(self, gradients: torch.Tensor) -> torch.Tensor:
        """The slow exact twin: project already-formed gradients G (B, out, in) to (B, d_m)."""
        projected = torch.einsum("ok,boi,ij->bkj", self.p_out, gradients, self.p_in)  # (B, k_out, k_in)
        return projected.flatten(1)[:, : self.dim] / math.sqrt(self.dim)  # (B, d_m)
