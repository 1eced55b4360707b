"""The TrackStar curvature R = lambda R_eval + (1 - lambda) R_train and its damped inverse square root.

R_train and R_eval are second-moment matrices mean(g g^T) of (already optimizer-corrected and
projected) gradients, accumulated in float64 one batch at a time. Scores use R^{-1/2} g.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import torch

from trackstar_pipeline.settings import AttributionSettings

MAX_DENSE_CURVATURE_DIM = 16384
"""Above this d a dense (d, d) float64 R (2 GiB at 16384) is refused rather than attempted."""


RANK_TOLERANCE = 1e-10
"""Eigenvalues below this fraction of the largest count as zero when finding the available rank."""


class CurvatureTooLargeError(ValueError):
    """The gradient dimension is too large for a dense curvature matrix."""


def check_curvature_dim(dim: int) -> None:
    """Refuse early, before any gradient is computed, when R would not fit."""
    if dim > MAX_DENSE_CURVATURE_DIM:
        gib = dim * dim * 8 / 2**30
        raise CurvatureTooLargeError(
            f"gradient dimension d={dim} needs a dense {dim}x{dim} curvature matrix ({gib:.1f} GiB in float64), "
            f"more than the limit d <= {MAX_DENSE_CURVATURE_DIM}; pass --no-curvature (curvature: false) or a "
            "projection dim (--projection-dim 4096)"
        )


class CurvatureAccumulator:
    """Streaming float64 sum of g g^T, so R never needs all gradients in memory at once."""

    def __init__(self, dim: int):
        check_curvature_dim(dim)
        self.dim = dim
        self.total = torch.zeros((dim, dim), dtype=torch.float64)  # (d, d)
        self.count = 0

    def update(self, vectors: torch.Tensor) -> None:
        """Add a batch of gradient vectors (B, d)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (B, {self.dim}), got {tuple(vectors.shape)}")
        batch = vectors.detach().to("cpu", torch.float64)  # (B, d)
        self.total += batch.T @ batch  # (d, d)
        self.count += batch.shape[0]

    def mean(self) -> torch.Tensor:
        """mean(g g^T) over everything seen: (d, d) float64."""
        if self.count == 0:
            raise ValueError("no gradients were accumulated; the curvature needs at least one example")
        return self.total / self.count


def _sorted_eigenvalues(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(matrix.double()).flip(0).clamp_min(0.0)  # (d,) descending


def auto_lambda(r_eval: torch.Tensor, r_train: torch.Tensor, component: int) -> float:
    """lambda at which the sorted eigenvalue curves of lambda R_eval and (1 - lambda) R_train cross at `component`."""
    e_eval, e_train = _sorted_eigenvalues(r_eval), _sorted_eigenvalues(r_train)
    def rank(eigenvalues: torch.Tensor) -> int:  # numerically nonzero eigenvalues
        return int((eigenvalues > eigenvalues[0] * RANK_TOLERANCE).sum())

    rank = min(rank(e_eval), rank(e_train))
    k = max(0, min(component, rank - 1))
    denominator = float(e_eval[k] + e_train[k])
    if denominator == 0.0:
        raise ValueError("both curvature matrices are zero; cannot choose lambda automatically")
    return float(e_train[k]) / denominator


PAPER_AUTO_COMPONENT, PAPER_PROJECTION_DIM = 1000, 65536
"""TrackStar (§A.1.3) makes the curves cross at component 1000 of d = 2^16."""


def scaled_auto_component(dim: int) -> int:
    """The paper's crossing component as the same fraction of a smaller or larger d (at least 1).

    A fixed 1000 degenerates at small d: with a few hundred queries R_eval has fewer nonzero
    eigenvalues than that, the crossing is clipped to its tail and lambda comes out as ~1.
    """
    return max(1, round(PAPER_AUTO_COMPONENT * dim / PAPER_PROJECTION_DIM))


def mix_curvature(r_eval: torch.Tensor, r_train: torch.Tensor, lambda_mix: float | Literal["auto"],
                  auto_component: int | None = None) -> tuple[torch.Tensor, float]:
    """R = lambda R_eval + (1 - lambda) R_train, with lambda given or chosen by `auto_lambda`."""
    if r_eval.shape != r_train.shape:
        raise ValueError(f"R_eval {tuple(r_eval.shape)} and R_train {tuple(r_train.shape)} differ in shape")
    if auto_component is None:
        auto_component = scaled_auto_component(r_eval.shape[0])
    value = auto_lambda(r_eval, r_train, auto_component) if lambda_mix == "auto" else float(lambda_mix)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lambda must be in [0, 1] or 'auto', got {lambda_mix!r}")
    return value * r_eval.double() + (1.0 - value) * r_train.double(), value


def curvature_inverse_sqrt(matrix: torch.Tensor, damping: float) -> torch.Tensor:
    """(R + damping * mean(eigenvalue) * I)^{-1/2} by symmetric eigendecomposition: (d, d) float32."""
    symmetric = (matrix.double() + matrix.double().T) / 2  # (d, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(symmetric)  # (d,), (d, d)
    eigenvalues = eigenvalues.clamp_min(0.0)
    shift = damping * float(eigenvalues.mean())
    if shift <= 0.0 and float(eigenvalues.min()) <= 0.0:
        raise ValueError("the curvature is singular and damping is 0; set damping > 0")
    inverse_roots = (eigenvalues + shift).rsqrt()  # (d,)
    return ((eigenvectors * inverse_roots) @ eigenvectors.T).float()  # (d, d)


def damped_spectrum(matrix: torch.Tensor, damping: float) -> tuple[float, float, float]:
    """(relative asymmetry, min eigenvalue, condition number) of R + damping * mean(eig) * I: is the damped R SPD?

    Unlike `curvature_inverse_sqrt`, eigenvalues are not clamped at 0 first, so a negative direction shows.
    """
    r = matrix.double()  # (d, d)
    asymmetry = float((r - r.T).abs().max() / r.abs().max().clamp_min(1e-300))
    eigenvalues = torch.linalg.eigvalsh((r + r.T) / 2)  # (d,)
    damped = eigenvalues + damping * eigenvalues.mean()  # (d,)
    return asymmetry, float(damped.min()), float(damped.max() / damped.min()) if damped.min() > 0 else float("inf")


def curvature_train_sample(total: int, samples: int, seed: int) -> torch.Tensor:
    """Indices (min(total, samples),) of the seeded sample of training gradients that R_train averages over."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:samples]


def inverse_sqrt_from_gradients(corpus_vectors: torch.Tensor, query_vectors: torch.Tensor,
                                settings: AttributionSettings, progress: Callable[[str], None] | None = None,
                                ) -> tuple[torch.Tensor | None, float | None]:
    """(R^{-1/2}, lambda used) from in-memory gradients: R_train over a seeded corpus sample, R_eval over the queries.

    corpus_vectors (N, d) and query_vectors (Q, d) are raw (pre-R) gradients. (None, None) when
    settings.curvature is off. `progress` gets one line naming the sample sizes and lambda.
    """
    if not settings.curvature:
        return None, None
    sample = curvature_train_sample(corpus_vectors.shape[0], settings.curvature_train_samples,
                                    settings.projection_seed)  # (S,)
    r_train, r_eval = CurvatureAccumulator(corpus_vectors.shape[1]), CurvatureAccumulator(query_vectors.shape[1])
    r_train.update(corpus_vectors[sample])  # (S, d)
    r_eval.update(query_vectors)  # (Q, d)
    mixed, used = mix_curvature(r_eval.mean(), r_train.mean(), settings.lambda_mix, settings.lambda_auto_component)
    if progress is not None:
        progress(f"curvature from {r_train.count} corpus and {r_eval.count} query gradients, lambda={used:.4f}")
    return curvature_inverse_sqrt(mixed, settings.damping), used


def save_curvature(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write curvature tensors (r_train, r_eval, inverse_sqrt, ...) with string metadata as safetensors."""
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path),
              metadata={key: str(value) for key, value in metadata.items()})


def load_curvature(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read what `save_curvature` wrote: (tensors, metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
