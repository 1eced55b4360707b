"""TrackStar and its ablations as scorers, built from raw gradients and the R_train / R_eval they give.

Each ablation changes one ingredient of  score = unit(R^{-1/2} P g/sqrt(V)) . unit(...)  relative
to the gradient table: no optimizer correction (no 1/sqrt(V)), R_train only (lambda = 0), no
curvature (no R^{-1/2}), no unit norm, and the projection dimension d swept. Everything else is
the table's: R_eval over every query, R_train over the same seeded corpus sample, the same lambda
rule. The raw gradients at the table's (d, correction) are the ones the assets stored
(`RawGradients`); only no-optimizer and the other d of the sweep take a new gradient pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from trackstar_pipeline.attribution.curvature import (
    CurvatureMatrix,
    curvature_moments,
    inverse_sqrt_from_moments,
    model_curvature_blocks,
)
from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import collect_gradients
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.scoring import prepare_vectors
from trackstar_pipeline.evaluation.scorers import VectorScorer
from trackstar_pipeline.settings import AttributionSettings


@dataclass(frozen=True)
class RawGradients:
    """Raw (pre-R) gradients of the corpus and of every query at one (d, correction), with their R_train and R_eval."""

    corpus_ids: list[str]
    corpus: torch.Tensor
    """(N, d) float32, in corpus order (the registered shards, sorted)."""
    query_ids: list[str]
    queries: torch.Tensor
    """(Q, d) float32, every query (R_eval averages over all of them)."""
    r_train: CurvatureMatrix | None
    """float64 mean g g^T over the seeded corpus sample, per R block; None without curvature."""
    r_eval: CurvatureMatrix | None
    """float64 mean g g^T over every query, per R block; None without curvature."""


def sweep_name(projection_dim: int) -> str:
    """Method name of one projection-dimension sweep entry, e.g. 'trackstar_d256'."""
    return f"trackstar_d{projection_dim}"


def gradient_pass(model: nn.Module, corpus_examples: Sequence[TokenizedExample],
                  query_examples: Sequence[TokenizedExample], settings: AttributionSettings,
                  moments: SecondMoments | None, progress: Callable[[str], None] = print) -> RawGradients:
    """One gradient pass over the corpus and every query, and the R_train / R_eval it gives."""
    label = f"d={settings.projection_dim}, optimizer correction {'on' if moments is not None else 'off'}"
    progress(f"gradient pass ({label}): {len(corpus_examples)} corpus, {len(query_examples)} queries")
    queries = collect_gradients(model, query_examples, settings, moments)  # (Q, d)
    corpus = collect_gradients(model, corpus_examples, settings, moments)  # (N, d)
    block_sizes = None if settings.curvature_blocks == "dense" else model_curvature_blocks(model, settings)
    r_train, r_eval = (curvature_moments(corpus, queries, settings, block_sizes=block_sizes)
                       if settings.curvature else (None, None))
    return RawGradients([e.example_id for e in corpus_examples], corpus, [e.example_id for e in query_examples],
                        queries, r_train, r_eval)


def inverse_sqrt_of(gradients: RawGradients, settings: AttributionSettings) -> tuple[CurvatureMatrix | None, float | None]:
    """(R^{-1/2}, lambda used) from the gradients' R_train and R_eval; (None, None) when curvature is off.

    The one place evaluation builds R, with the engine's mix and damped inverse square root (the
    curvature assets' formula).
    """
    if not settings.curvature:
        return None, None
    return inverse_sqrt_from_moments(gradients.r_eval, gradients.r_train, settings)


def _scorer(gradients: RawGradients, query_ids: Sequence[str], inverse_sqrt: CurvatureMatrix | None,
            unit_normalize: bool, name: str) -> VectorScorer:
    """Scores the evaluated queries (a subset of the gradients' queries) against the whole corpus."""
    row = {query_id: i for i, query_id in enumerate(gradients.query_ids)}
    missing = [query_id for query_id in query_ids if query_id not in row]
    if missing:
        raise KeyError(f"{name}: no stored gradient for {len(missing)} evaluated queries, e.g. {missing[:3]}; "
                       "re-materialize query_gradients")
    queries = gradients.queries[[row[query_id] for query_id in query_ids]]  # (Q_eval, d)
    return VectorScorer(list(query_ids), prepare_vectors(queries, inverse_sqrt, unit_normalize), gradients.corpus_ids,
                        prepare_vectors(gradients.corpus, inverse_sqrt, unit_normalize), name=name)


def trackstar_scorers(
    table_gradients: RawGradients,
    query_ids: Sequence[str],
    settings: AttributionSettings,
    model: nn.Module | None = None,
    corpus_examples: Sequence[TokenizedExample] | None = None,
    query_examples: Sequence[TokenizedExample] | None = None,
    second_moments: SecondMoments | None = None,
    projection_dims: Sequence[int] = (),
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, VectorScorer], float | None]:
    """(method name -> scorer over `query_ids`, lambda used) for trackstar, its ablations and the d sweep.

    `table_gradients` are the raw gradients the table was built from. The variants that need a new
    gradient pass (no optimizer correction, other d) are built only with `model` and the encoded
    corpus and queries (all queries, for R_eval); without `second_moments` 'trackstar_no_optimizer'
    would equal 'trackstar' and is left out (the report then says the ablation was not run).
    """
    inverse_sqrt, lambda_used = inverse_sqrt_of(table_gradients, settings)
    scorers = {
        "trackstar": _scorer(table_gradients, query_ids, inverse_sqrt, settings.unit_normalize, "trackstar"),
        "trackstar_no_curvature": _scorer(table_gradients, query_ids, None, settings.unit_normalize,
                                          "trackstar_no_curvature"),
        "trackstar_no_unit_norm": _scorer(table_gradients, query_ids, inverse_sqrt, False, "trackstar_no_unit_norm"),
    }
    if settings.curvature:
        train_only, _ = inverse_sqrt_of(table_gradients, replace(settings, lambda_mix=0.0))
        scorers["trackstar_r_train_only"] = _scorer(table_gradients, query_ids, train_only, settings.unit_normalize,
                                                    "trackstar_r_train_only")
    if model is None or corpus_examples is None or query_examples is None:
        return scorers, lambda_used

    def variant(name: str, variant_settings: AttributionSettings, moments: SecondMoments | None) -> VectorScorer:
        gradients = gradient_pass(model, corpus_examples, query_examples, variant_settings, moments, progress)
        inverse, _ = inverse_sqrt_of(gradients, variant_settings)
        return _scorer(gradients, query_ids, inverse, settings.unit_normalize, name)

    if second_moments is not None:
        scorers["trackstar_no_optimizer"] = variant("trackstar_no_optimizer", settings, None)
    for dim in projection_dims:
        scorers[sweep_name(dim)] = (scorers["trackstar"] if dim == settings.projection_dim else
                                    variant(sweep_name(dim), replace(settings, projection_dim=dim), second_moments))
    return scorers, lambda_used
