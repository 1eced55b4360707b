"""TrackStar and its ablations as streamed methods, built from raw gradients and the R_train / R_eval they give.

Each ablation changes one ingredient of  score = unit(R^{-1/2} P g/sqrt(V)) . unit(...)  relative
to the gradient table: no optimizer correction (no 1/sqrt(V)), R_train only (lambda = 0), no
curvature (no R^{-1/2}), no unit norm, and the projection dimension d swept. Everything else is
the table's: R_eval over every query, R_train over the same seeded corpus sample, the same lambda
rule. The raw gradients at the table's (d, correction) are the ones the assets stored (a shard's
arrive with the shard, `stream.ShardRows.gradients`); only no-optimizer and the other d of the
sweep take a new gradient pass: first over the R_train sample and the queries (for R), then shard
by shard inside evaluation's one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from trackstar_pipeline.attribution.curvature import (
    CurvatureMatrix,
    inverse_sqrt_from_moments,
    model_curvature_blocks,
    sampled_curvature_moments,
)
from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import collect_gradients
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.scoring import prepare_vectors
from trackstar_pipeline.evaluation.stream import ShardRows, VectorMethod
from trackstar_pipeline.settings import AttributionSettings


@dataclass(frozen=True)
class GradientSource:
    """Raw (pre-R) gradients at one (d, correction): every query's, R_train / R_eval, and a shard's on demand."""

    query_ids: list[str]
    queries: torch.Tensor
    """(Q, d) float32, every query (R_eval averages over all of them)."""
    r_train: CurvatureMatrix | None
    """float64 mean g g^T over the seeded corpus sample, per R block; None without curvature."""
    r_eval: CurvatureMatrix | None
    """float64 mean g g^T over every query, per R block; None without curvature."""
    corpus: Callable[[ShardRows], torch.Tensor] = lambda shard: shard.gradients
    """Shard -> its rows' raw gradients (n, d); default: what projected_gradients stored."""


NewPass = Callable[[AttributionSettings, "SecondMoments | None"], GradientSource]
"""(settings, optimizer moments) -> a new gradient pass's source (evaluate builds it from the model)."""


def sweep_name(projection_dim: int) -> str:
    """Method name of one projection-dimension sweep entry, e.g. 'trackstar_d256'."""
    return f"trackstar_d{projection_dim}"


def lambda_method_name(settings: AttributionSettings, lambda_mix: float | str | None) -> str:
    """The name trackstar_methods gives TrackStar's ranking at this lambda_mix (None: the table's own).

    The table's lambda (or any lambda without curvature) is 'trackstar', 0 is 'trackstar_r_train_only',
    any other needs `lambdas` to hold it and is 'trackstar_lambda<value>' (curvature_variants' name).
    """
    if isinstance(lambda_mix, (int, float)) and not isinstance(lambda_mix, bool) and not 0.0 <= lambda_mix <= 1.0:
        raise ValueError(f"lambda must be in [0, 1] or 'auto', got {lambda_mix!r}")
    if lambda_mix is None or not settings.curvature or lambda_mix == settings.lambda_mix:
        return "trackstar"
    if lambda_mix != "auto" and float(lambda_mix) == 0.0:
        return "trackstar_r_train_only"
    return f"trackstar_lambda{lambda_mix}"


def curvature_variants(settings: AttributionSettings, lambdas: Sequence[float | str] = (),
                       dampings: Sequence[float] = ()) -> dict[str, AttributionSettings]:
    """Method name -> settings of the curvature sweep: one lambda or one damping changed at a time.

    The table's own (lambda, damping) is left out: it is 'trackstar'.
    """
    variants = {f"trackstar_lambda{value}": replace(settings, lambda_mix=value)
                for value in lambdas if value != settings.lambda_mix}
    variants.update({f"trackstar_damping{value:g}": replace(settings, damping=float(value))
                     for value in dampings if float(value) != settings.damping})
    return variants


def gradient_pass(model: nn.Module, query_examples: Sequence[TokenizedExample],
                  sample_examples: Callable[[], Sequence[TokenizedExample]], settings: AttributionSettings,
                  moments: SecondMoments | None, progress: Callable[[str], None] = print) -> GradientSource:
    """A new gradient pass: every query and the R_train sample now (for R), each shard's rows when streamed."""
    label = f"d={settings.projection_dim}, optimizer correction {'on' if moments is not None else 'off'}"
    progress(f"gradient pass ({label}): {len(query_examples)} queries and the R_train sample now, the corpus by shard")
    queries = collect_gradients(model, query_examples, settings, moments)  # (Q, d)
    r_train = r_eval = None
    if settings.curvature:
        sample = collect_gradients(model, sample_examples(), settings, moments)  # (S, d)
        block_sizes = None if settings.curvature_blocks == "dense" else model_curvature_blocks(model, settings)
        r_train, r_eval = sampled_curvature_moments(sample, queries, settings, block_sizes=block_sizes)
    key = ("gradients", settings.projection_dim, moments is not None)

    def corpus(shard: ShardRows) -> torch.Tensor:
        return shard.cached(key, lambda: collect_gradients(model, shard.examples, settings, moments))  # (n, d)

    return GradientSource([e.example_id for e in query_examples], queries, r_train, r_eval, corpus)


def inverse_sqrt_of(gradients: GradientSource, settings: AttributionSettings,
                    ) -> tuple[CurvatureMatrix | None, float | None]:
    """(R^{-1/2}, lambda used) from the gradients' R_train and R_eval; (None, None) when curvature is off.

    The one place evaluation builds R, with the engine's mix and damped inverse square root (the
    curvature assets' formula).
    """
    if not settings.curvature:
        return None, None
    return inverse_sqrt_from_moments(gradients.r_eval, gradients.r_train, settings)


def vector_method(gradients: GradientSource, query_ids: Sequence[str], inverse_sqrt: CurvatureMatrix | None,
                  unit_normalize: bool, name: str) -> VectorMethod:
    """The evaluated queries (a subset of the gradients' queries) against each shard, both prepared alike."""
    row = {query_id: i for i, query_id in enumerate(gradients.query_ids)}
    missing = [query_id for query_id in query_ids if query_id not in row]
    if missing:
        raise KeyError(f"{name}: no stored gradient for {len(missing)} evaluated queries, e.g. {missing[:3]}; "
                       "re-materialize query_gradients")
    queries = gradients.queries[[row[query_id] for query_id in query_ids]]  # (Q_eval, d)
    return VectorMethod(name, prepare_vectors(queries, inverse_sqrt, unit_normalize),
                        lambda shard: prepare_vectors(gradients.corpus(shard), inverse_sqrt, unit_normalize))


def trackstar_methods(
    table_gradients: GradientSource,
    query_ids: Sequence[str],
    settings: AttributionSettings,
    new_pass: NewPass | None = None,
    second_moments: SecondMoments | None = None,
    projection_dims: Sequence[int] = (),
    lambdas: Sequence[float | str] = (),
    dampings: Sequence[float] = (),
) -> tuple[dict[str, VectorMethod], dict[str, str], float | None]:
    """(method name -> method over `query_ids`, alias -> method it equals, lambda used).

    `table_gradients` are the raw gradients the table was built from. The variants that need a new
    gradient pass (no optimizer correction, other d) are built only with `new_pass`; without
    `second_moments` 'trackstar_no_optimizer' would equal 'trackstar' and is left out (the report then
    says the ablation was not run). The sweep entry at the table's d is an alias of 'trackstar'. The
    curvature sweep (`lambdas`, `dampings`: `curvature_variants`) reuses the table's gradients and R moments.
    """
    inverse_sqrt, lambda_used = inverse_sqrt_of(table_gradients, settings)
    unit = settings.unit_normalize
    methods = {
        "trackstar": vector_method(table_gradients, query_ids, inverse_sqrt, unit, "trackstar"),
        "trackstar_no_curvature": vector_method(table_gradients, query_ids, None, unit, "trackstar_no_curvature"),
        "trackstar_no_unit_norm": vector_method(table_gradients, query_ids, inverse_sqrt, False,
                                                "trackstar_no_unit_norm"),
    }
    aliases = {sweep_name(dim): "trackstar" for dim in projection_dims if dim == settings.projection_dim}
    if settings.curvature:
        same_r: dict[AttributionSettings, str] = {}  # a sweep entry equal to R_train only is an alias of it
        for name, variant_settings in {"trackstar_r_train_only": replace(settings, lambda_mix=0.0),
                                       **curvature_variants(settings, lambdas, dampings)}.items():
            if variant_settings in same_r:
                aliases[name] = same_r[variant_settings]
                continue
            same_r[variant_settings] = name
            inverse, _ = inverse_sqrt_of(table_gradients, variant_settings)
            methods[name] = vector_method(table_gradients, query_ids, inverse, unit, name)
    if new_pass is None:
        return methods, aliases, lambda_used

    def variant(name: str, variant_settings: AttributionSettings, moments: SecondMoments | None) -> VectorMethod:
        gradients = new_pass(variant_settings, moments)
        inverse, _ = inverse_sqrt_of(gradients, variant_settings)
        return vector_method(gradients, query_ids, inverse, unit, name)

    if second_moments is not None:
        methods["trackstar_no_optimizer"] = variant("trackstar_no_optimizer", settings, None)
    for dim in projection_dims:
        if dim != settings.projection_dim:
            methods[sweep_name(dim)] = variant(sweep_name(dim), replace(settings, projection_dim=dim), second_moments)
    return methods, aliases, lambda_used
