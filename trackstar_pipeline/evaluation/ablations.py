"""TrackStar and its ablations as scorers, all built from the engine's own functions.

Each ablation removes one ingredient of the formula  score = unit(R^{-1/2} P g/sqrt(V)) . unit(...):
no optimizer correction (no 1/sqrt(V)), R_train only (lambda = 0), no curvature (no R^{-1/2}),
no unit norm, and the projection dimension d swept. Gradients are taken once per distinct
(d, optimizer correction) pair and the cheap variants reuse them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch
from torch import nn

from trackstar_pipeline.attribution.curvature import inverse_sqrt_from_gradients, model_curvature_blocks
from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import collect_gradients
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.scoring import prepare_vectors
from trackstar_pipeline.evaluation.scorers import VectorScorer
from trackstar_pipeline.settings import AttributionSettings


def sweep_name(projection_dim: int) -> str:
    """Method name of one projection-dimension sweep entry, e.g. 'trackstar_d256'."""
    return f"trackstar_d{projection_dim}"


class _Gradients:
    """Raw (pre-R) gradients of corpus and queries for one attribution setting."""

    def __init__(self, model: nn.Module, corpus: Sequence[TokenizedExample], queries: Sequence[TokenizedExample],
                 settings: AttributionSettings, moments: SecondMoments | None, progress: Callable[[str], None]):
        label = f"d={settings.projection_dim}, optimizer correction {'on' if moments is not None else 'off'}"
        progress(f"evaluation gradients ({label}): {len(corpus)} corpus, {len(queries)} queries")
        self.queries = collect_gradients(model, queries, settings, moments)  # (Q, d)
        self.corpus = collect_gradients(model, corpus, settings, moments)  # (N, d)
        self.settings = settings
        self.block_sizes = model_curvature_blocks(model, settings) if settings.curvature else None  # R's blocks

    def scorer(self, corpus_ids: list[str], query_ids: list[str], inverse_sqrt: torch.Tensor | None,
               unit_normalize: bool, name: str) -> VectorScorer:
        return VectorScorer(query_ids, prepare_vectors(self.queries, inverse_sqrt, unit_normalize), corpus_ids,
                            prepare_vectors(self.corpus, inverse_sqrt, unit_normalize), name=name)


def trackstar_scorers(
    model: nn.Module,
    corpus_examples: Sequence[TokenizedExample],
    query_examples: Sequence[TokenizedExample],
    settings: AttributionSettings,
    second_moments: SecondMoments | None,
    projection_dims: Sequence[int] = (),
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, VectorScorer], float | None]:
    """(method name -> scorer, lambda used) for trackstar, its ablations and the d sweep.

    Without `second_moments` the 'trackstar_no_optimizer' entry would equal 'trackstar' and is
    left out (the report then says the ablation was not run).
    """
    corpus_ids = [example.example_id for example in corpus_examples]
    query_ids = [example.example_id for example in query_examples]
    main = _Gradients(model, corpus_examples, query_examples, settings, second_moments, progress)
    inverse_sqrt, lambda_used = inverse_sqrt_from_gradients(main.corpus, main.queries, settings, progress,
                                                            block_sizes=main.block_sizes)
    scorers = {
        "trackstar": main.scorer(corpus_ids, query_ids, inverse_sqrt, settings.unit_normalize, "trackstar"),
        "trackstar_no_curvature": main.scorer(corpus_ids, query_ids, None, True, "trackstar_no_curvature"),
        "trackstar_no_unit_norm": main.scorer(corpus_ids, query_ids, inverse_sqrt, False, "trackstar_no_unit_norm"),
    }
    if settings.curvature:
        train_only, _ = inverse_sqrt_from_gradients(main.corpus, main.queries, replace(settings, lambda_mix=0.0),
                                                    block_sizes=main.block_sizes)
        scorers["trackstar_r_train_only"] = main.scorer(corpus_ids, query_ids, train_only, settings.unit_normalize,
                                                        "trackstar_r_train_only")
    if second_moments is not None:
        plain = _Gradients(model, corpus_examples, query_examples, settings, None, progress)
        plain_inverse, _ = inverse_sqrt_from_gradients(plain.corpus, plain.queries, settings,
                                                       block_sizes=plain.block_sizes)
        scorers["trackstar_no_optimizer"] = plain.scorer(corpus_ids, query_ids, plain_inverse,
                                                         settings.unit_normalize, "trackstar_no_optimizer")
        del plain
    for dim in projection_dims:
        if dim == settings.projection_dim:
            scorers[sweep_name(dim)] = scorers["trackstar"]
            continue
        swept = _Gradients(model, corpus_examples, query_examples, replace(settings, projection_dim=dim),
                           second_moments, progress)
        swept_inverse, _ = inverse_sqrt_from_gradients(swept.corpus, swept.queries, swept.settings,
                                                       block_sizes=swept.block_sizes)
        scorers[sweep_name(dim)] = swept.scorer(corpus_ids, query_ids, swept_inverse, settings.unit_normalize,
                                                sweep_name(dim))
    return scorers, lambda_used
