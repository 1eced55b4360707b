"""The TrackStar curvature R = lambda R_eval + (1 - lambda) R_train and its damped inverse square root.

R_train and R_eval are second-moment matrices mean(g g^T) of (already optimizer-corrected and
projected) gradients, accumulated in float64 one batch at a time. Scores use R^{-1/2} g.

R is block-diagonal (`BlockDiagonal`): one block per hooked module's slice of the gradient vector
(curvature_blocks='module', the paper's and bergson's choice, so d = 65536 fits), or one dense
block (curvature_blocks='dense'). Every function takes either form and a plain (d, d) tensor too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence, Union

import numpy as np
import torch
from torch import nn

from trackstar_pipeline.settings import AttributionSettings, CurvatureBlocks

MAX_CURVATURE_BLOCK_DIM = 16384
"""Above this a (d_m, d_m) float64 block of R (2 GiB at 16384) is refused rather than attempted."""

RANK_TOLERANCE = 1e-10
"""Eigenvalues below this fraction of the largest count as zero when finding the available rank."""


class CurvatureTooLargeError(ValueError):
    """A block of the curvature matrix is too large to hold and decompose."""


def check_curvature_blocks(sizes: Sequence[int]) -> None:
    """Refuse early, before any gradient is computed, when a block of R would not fit."""
    largest = max(sizes)
    if largest > MAX_CURVATURE_BLOCK_DIM:
        gib = largest * largest * 8 / 2**30
        what = "a dense" if len(sizes) == 1 else f"a per-module block (one of {len(sizes)}) of"
        raise CurvatureTooLargeError(
            f"the curvature needs {what} {largest}x{largest} matrix ({gib:.1f} GiB in float64), more than the limit "
            f"{MAX_CURVATURE_BLOCK_DIM}; use curvature_blocks: module (one block per hooked module), a smaller "
            "projection dim (--projection-dim 4096), or pass --no-curvature (curvature: false)"
        )


def model_curvature_blocks(model: nn.Module, settings: AttributionSettings) -> tuple[int, ...]:
    """Block sizes of R for this model and settings: the projection's per-module slices (or one dense block)."""
    from trackstar_pipeline.attribution.gradients import module_dims

    return curvature_block_sizes(module_dims(model, settings), settings.curvature_blocks)


def curvature_block_sizes(module_dims: Sequence[int], blocks: CurvatureBlocks) -> tuple[int, ...]:
    """Block sizes of R over the gradient vector: one per hooked module, or one dense block of all of d."""
    if blocks not in ("module", "dense"):
        raise ValueError(f"curvature_blocks must be 'module' or 'dense', got {blocks!r}")
    sizes = tuple(int(size) for size in module_dims) if blocks == "module" else (int(sum(module_dims)),)
    check_curvature_blocks(sizes)
    return sizes


@dataclass(frozen=True)
class BlockDiagonal:
    """A symmetric block-diagonal (d, d) matrix kept as its diagonal blocks (one per hooked module).

    Memory and time are O(sum d_m^2) and O(sum d_m^3) instead of O(d^2) and O(d^3); a dense R is
    the one-block case, so every caller uses the same type.
    """

    blocks: tuple[torch.Tensor, ...]  # each (d_m, d_m)

    def __post_init__(self) -> None:
        for index, block in enumerate(self.blocks):
            if block.ndim != 2 or block.shape[0] != block.shape[1]:
                raise ValueError(f"curvature block {index} has shape {tuple(block.shape)}; blocks must be square")

    @classmethod
    def dense(cls, matrix: torch.Tensor) -> "BlockDiagonal":
        """One (d, d) block."""
        return cls((matrix,))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(block.shape[0]) for block in self.blocks)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def slices(self) -> list[slice]:
        """Where each block sits in the gradient vector."""
        ends = list(itertools.accumulate(self.sizes))
        return [slice(end - size, end) for end, size in zip(ends, self.sizes)]

    def mixed_with(self, other: "BlockDiagonal", weight: float) -> "BlockDiagonal":
        """weight * self + (1 - weight) * other, block by block (float64)."""
        if self.sizes != other.sizes:
            raise ValueError(f"curvature blocks differ: {self.sizes[:4]}... vs {other.sizes[:4]}...; "
                             "R_eval and R_train must come from the same model and projection settings")
        return BlockDiagonal(tuple(weight * a.double() + (1.0 - weight) * b.double()
                                   for a, b in zip(self.blocks, other.blocks)))

    def sorted_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of all blocks pooled (the spectrum of the whole matrix), descending, clamped at 0: (d,)."""
        pooled = torch.cat([torch.linalg.eigvalsh(_symmetric(block)) for block in self.blocks])  # (d,)
        return pooled.sort(descending=True).values.clamp_min(0.0)

    def trace(self) -> float:
        return float(sum(torch.trace(block.double()) for block in self.blocks))

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors (N, d) times the matrix (it is symmetric), block by block: (N, d)."""
        if vectors.shape[-1] != self.dim:
            raise ValueError(f"vectors have d={vectors.shape[-1]} but the curvature has d={self.dim}; "
                             "rematerialize the curvature for this projection")
        return torch.cat([vectors[:, where] @ block.to(vectors) for where, block in zip(self.slices(), self.blocks)],
                         dim=1)  # (N, d)

    def to_dense(self) -> torch.Tensor:
        """The full (d, d) matrix (small d only: tests and the dense setting)."""
        return torch.block_diag(*self.blocks)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """One safetensors entry per block, `name/<index>`."""
        return {f"{name}/{index}": block for index, block in enumerate(self.blocks)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], name: str) -> "BlockDiagonal":
        """Read what `tensors` wrote (and a plain `name` entry, the old dense layout)."""
        if name in tensors:
            return cls.dense(tensors[name])
        count = sum(1 for key in tensors if key.startswith(f"{name}/"))
        if count == 0:
            raise KeyError(f"no curvature tensor named {name!r} (found {sorted(tensors)[:5]}); rematerialize the curvature")
        return cls(tuple(tensors[f"{name}/{index}"] for index in range(count)))


CurvatureMatrix = Union[torch.Tensor, BlockDiagonal]
"""A dense (d, d) tensor or its block-diagonal form; functions return the kind they were given."""


def _as_blocks(matrix: CurvatureMatrix) -> BlockDiagonal:
    return matrix if isinstance(matrix, BlockDiagonal) else BlockDiagonal.dense(matrix)


def _like(result: BlockDiagonal, given: CurvatureMatrix) -> CurvatureMatrix:
    return result if isinstance(given, BlockDiagonal) else result.blocks[0]


def _symmetric(block: torch.Tensor) -> torch.Tensor:
    block = block.double()  # (d_m, d_m)
    return (block + block.T) / 2


class CurvatureAccumulator:
    """Streaming float64 sum of g g^T per block, so R never needs all gradients in memory at once."""

    def __init__(self, block_sizes: int | Sequence[int]):
        sizes = (block_sizes,) if isinstance(block_sizes, int) else tuple(block_sizes)
        check_curvature_blocks(sizes)
        self.sizes = sizes
        self.dim = sum(sizes)
        self.totals = [torch.zeros((size, size), dtype=torch.float64) for size in sizes]  # each (d_m, d_m)
        self.count = 0

    def update(self, vectors: torch.Tensor) -> None:
        """Add a batch of gradient vectors (B, d)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (B, {self.dim}), got {tuple(vectors.shape)}; the gradients "
                             "and the curvature's module blocks must come from the same model and projection_dim")
        batch = vectors.detach().to("cpu", torch.float64)  # (B, d)
        start = 0
        for total, size in zip(self.totals, self.sizes):
            part = batch[:, start: start + size]  # (B, d_m)
            total += part.T @ part  # (d_m, d_m)
            start += size
        self.count += batch.shape[0]

    def mean(self) -> BlockDiagonal:
        """mean(g g^T) per block over everything seen (float64)."""
        if self.count == 0:
            raise ValueError("no gradients were accumulated; the curvature needs at least one example")
        return BlockDiagonal(tuple(total / self.count for total in self.totals))


def accumulate_curvature(batches: Iterable[np.ndarray | torch.Tensor], block_sizes: Sequence[int]) -> tuple[BlockDiagonal, int]:
    """(mean g g^T per block, number of vectors) over streamed (B, d) gradient batches; empty batches are skipped."""
    accumulator = CurvatureAccumulator(block_sizes)
    for batch in batches:
        if len(batch):
            vectors = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch, np.float32))
            accumulator.update(vectors)  # (B, d)
    if accumulator.count == 0:
        raise ValueError("no gradients to accumulate; materialize projected_gradients / query_gradients first")
    return accumulator.mean(), accumulator.count


def auto_lambda(r_eval: CurvatureMatrix, r_train: CurvatureMatrix, component: int) -> float:
    """lambda at which the sorted (pooled over blocks) eigenvalue curves of lambda R_eval and (1 - lambda) R_train
    cross at `component`."""
    e_eval, e_train = _as_blocks(r_eval).sorted_eigenvalues(), _as_blocks(r_train).sorted_eigenvalues()  # (d,) each
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


def mix_curvature(r_eval: CurvatureMatrix, r_train: CurvatureMatrix, lambda_mix: float | Literal["auto"],
                  auto_component: int | None = None) -> tuple[CurvatureMatrix, float]:
    """R = lambda R_eval + (1 - lambda) R_train (block by block), with lambda given or chosen by `auto_lambda`."""
    evaluation, train = _as_blocks(r_eval), _as_blocks(r_train)
    if evaluation.sizes != train.sizes:
        raise ValueError(f"R_eval (blocks {evaluation.sizes[:4]}, d={evaluation.dim}) and R_train (blocks "
                         f"{train.sizes[:4]}, d={train.dim}) differ in shape")
    if auto_component is None:
        auto_component = scaled_auto_component(evaluation.dim)
    value = auto_lambda(evaluation, train, auto_component) if lambda_mix == "auto" else float(lambda_mix)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lambda must be in [0, 1] or 'auto', got {lambda_mix!r}")
    return _like(evaluation.mixed_with(train, value), r_eval), value


@dataclass(frozen=True)
class DampedSpectrum:
    """Is R + damping * mean(eigenvalue) * I SPD, block by block? (eigenvalues not clamped, so a negative shows)."""

    relative_asymmetry: float  # worst block
    block_min_eigenvalues: tuple[float, ...]  # smallest damped eigenvalue of each block
    max_eigenvalue: float

    @property
    def min_eigenvalue(self) -> float:
        return min(self.block_min_eigenvalues)

    @property
    def condition(self) -> float:
        return self.max_eigenvalue / self.min_eigenvalue if self.min_eigenvalue > 0 else float("inf")

    @property
    def blocks_not_positive(self) -> int:
        return sum(1 for value in self.block_min_eigenvalues if value <= 0)


def damped_inverse_sqrt(matrix: CurvatureMatrix, damping: float) -> tuple[CurvatureMatrix, DampedSpectrum]:
    """((R + damping * mean(eigenvalue) * I)^{-1/2} as float32, its damped spectrum), one eigh per block.

    The shift uses the mean eigenvalue of the whole R (trace / d), so the block result equals the
    dense computation on the block-diagonal matrix. Eigenvalues are clamped at 0 before the root.
    """
    blocks = _as_blocks(matrix)
    shift = damping * blocks.trace() / blocks.dim
    inverse, minimums, maximum, asymmetry = [], [], 0.0, 0.0
    for block in blocks.blocks:
        raw = block.double()  # (d_m, d_m)
        asymmetry = max(asymmetry, float((raw - raw.T).abs().max() / raw.abs().max().clamp_min(1e-300)))
        eigenvalues, eigenvectors = torch.linalg.eigh(_symmetric(raw))  # (d_m,), (d_m, d_m)
        minimums.append(float(eigenvalues.min()) + shift)
        maximum = max(maximum, float(eigenvalues.max()) + shift)
        clamped = eigenvalues.clamp_min(0.0)  # (d_m,)
        if shift <= 0.0 and float(clamped.min()) <= 0.0:
            raise ValueError("the curvature is singular and damping is 0; set damping > 0")
        inverse.append(((eigenvectors * (clamped + shift).rsqrt()) @ eigenvectors.T).float())  # (d_m, d_m)
    spectrum = DampedSpectrum(asymmetry, tuple(minimums), maximum)
    return _like(BlockDiagonal(tuple(inverse)), matrix), spectrum


def curvature_inverse_sqrt(matrix: CurvatureMatrix, damping: float) -> CurvatureMatrix:
    """(R + damping * mean(eigenvalue) * I)^{-1/2} per block: float32, dense in, dense out."""
    return damped_inverse_sqrt(matrix, damping)[0]


def damped_spectrum(matrix: CurvatureMatrix, damping: float) -> tuple[float, float, float]:
    """(relative asymmetry, min eigenvalue, condition number) of R + damping * mean(eig) * I: is the damped R SPD?

    The eigenvalues are `damped_inverse_sqrt`'s before clamping, so a negative direction shows.
    """
    spectrum = damped_inverse_sqrt(matrix, damping)[1]
    return spectrum.relative_asymmetry, spectrum.min_eigenvalue, spectrum.condition


def whiten(vectors: torch.Tensor, inverse_sqrt: CurvatureMatrix) -> torch.Tensor:
    """R^{-1/2} g for a batch (N, d): blockwise for a block-diagonal R, one matmul for a dense one."""
    if isinstance(inverse_sqrt, BlockDiagonal):
        return inverse_sqrt.apply(vectors)  # (N, d)
    return vectors @ inverse_sqrt.to(vectors)  # (N, d)


def curvature_train_sample(total: int, samples: int, seed: int) -> torch.Tensor:
    """Indices (min(total, samples),) of the seeded sample of training gradients that R_train averages over."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:samples]


def resolve_block_sizes(dim: int, settings: AttributionSettings, block_sizes: Sequence[int] | None) -> tuple[int, ...]:
    """R's block sizes: the given per-module ones, or one dense block when curvature_blocks='dense'."""
    if block_sizes is not None:
        return tuple(block_sizes)
    if settings.curvature_blocks != "dense":
        raise ValueError("curvature_blocks='module' needs the per-module block sizes; pass "
                         "block_sizes=model_curvature_blocks(model, settings)")
    return (dim,)


def curvature_moments(corpus_vectors: torch.Tensor, query_vectors: torch.Tensor, settings: AttributionSettings,
                      *, block_sizes: Sequence[int] | None = None) -> tuple[BlockDiagonal, BlockDiagonal]:
    """(R_train, R_eval) by the curvature assets' rule: the seeded corpus sample, every query.

    corpus_vectors (N, d) and query_vectors (Q, d) are raw (pre-R) gradients.
    """
    sample = curvature_train_sample(corpus_vectors.shape[0], settings.curvature_train_samples,
                                    settings.projection_seed)  # (S,)
    return sampled_curvature_moments(corpus_vectors[sample], query_vectors, settings, block_sizes=block_sizes)


def sampled_curvature_moments(sample_vectors: torch.Tensor, query_vectors: torch.Tensor, settings: AttributionSettings,
                              *, block_sizes: Sequence[int] | None = None) -> tuple[BlockDiagonal, BlockDiagonal]:
    """(R_train, R_eval) from the gradients of the corpus sample alone (rows in curvature_train_sample's order),
    so a streamed caller computes only those S gradients up front instead of holding all N."""
    sizes = resolve_block_sizes(sample_vectors.shape[1], settings, block_sizes)
    r_train, r_eval = CurvatureAccumulator(sizes), CurvatureAccumulator(sizes)
    r_train.update(sample_vectors)  # (S, d)
    r_eval.update(query_vectors)  # (Q, d)
    return r_train.mean(), r_eval.mean()


def damped_mix(r_eval: CurvatureMatrix, r_train: CurvatureMatrix, settings: AttributionSettings,
               ) -> tuple[BlockDiagonal, float, DampedSpectrum]:
    """(R^{-1/2} per block, lambda used, damped spectrum) of R = lambda R_eval + (1 - lambda) R_train.

    The one place R is mixed and inverted: the curvature asset (which checks the spectrum), the
    ablations and `trackstar score` all come through here.
    """
    mixed, used = mix_curvature(_as_blocks(r_eval), _as_blocks(r_train), settings.lambda_mix,
                                settings.lambda_auto_component)
    inverse, spectrum = damped_inverse_sqrt(mixed, settings.damping)
    return inverse, used, spectrum


def inverse_sqrt_from_moments(r_eval: CurvatureMatrix, r_train: CurvatureMatrix, settings: AttributionSettings,
                              ) -> tuple[CurvatureMatrix, float]:
    """(R^{-1/2}, lambda used): a single block comes back as a plain (d, d) tensor, several as a BlockDiagonal."""
    inverse, used, _ = damped_mix(r_eval, r_train, settings)
    return (inverse.blocks[0] if len(inverse.sizes) == 1 else inverse), used


def inverse_sqrt_from_gradients(corpus_vectors: torch.Tensor, query_vectors: torch.Tensor,
                                settings: AttributionSettings, progress: Callable[[str], None] | None = None,
                                *, block_sizes: Sequence[int] | None = None,
                                ) -> tuple[CurvatureMatrix | None, float | None]:
    """(R^{-1/2}, lambda used) from in-memory gradients; (None, None) when settings.curvature is off.

    block_sizes: R's blocks (`model_curvature_blocks`); needed for curvature_blocks='module'.
    """
    if not settings.curvature:
        return None, None
    r_train, r_eval = curvature_moments(corpus_vectors, query_vectors, settings, block_sizes=block_sizes)
    inverse, used = inverse_sqrt_from_moments(r_eval, r_train, settings)
    if progress is not None:
        blocks = "" if len(r_train.sizes) == 1 else f" in {len(r_train.sizes)} module blocks"
        sampled = min(corpus_vectors.shape[0], settings.curvature_train_samples)
        progress(f"curvature from {sampled} corpus and {query_vectors.shape[0]} query gradients{blocks}, lambda={used:.4f}")
    return inverse, used


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
