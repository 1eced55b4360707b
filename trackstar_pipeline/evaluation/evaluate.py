"""The evaluation entry point: every method, both settings, all metrics, one report folder.

    result = evaluate(
        corpus, queries, ground_truth, settings, output_dir,
        model=model, tokenizer=tokenizer,            # for gradients (ablations), embed and tail-patch
        second_moments=load_second_moments(...),     # optimizer correction (None: no_optimizer skipped)
        tailpatch=load_tailpatch_setup(model_dir),   # None: tail-patch columns are null
        fact_correct=fact_recall(...).correct,       # query id -> model predicts it (the correctness split)
        methods={"trackstar": PrecomputedScorer(...)},  # optional overrides, e.g. the LanceDB proponents
        model_info={...}, table_version=table.version,
    )

Inputs: `corpus` (id, text, facts) and `queries` (id, prompt, completion, fact) frames as
DATA's loaders return them; `ground_truth` query id -> corpus ids (DATA's `ground_truth`).
Methods not given in `methods` are built here: trackstar and its ablations from the engine's
gradient/curvature functions (`ablations.trackstar_scorers`), bm25, embed (mean hidden states of
settings.evaluation.embed_layer), random, and trackstar+bm25 (reciprocal rank fusion). Without a
model only the given methods plus bm25, random and the fusion are evaluated.

All methods rank the same corpus for the same queries: at most settings.evaluation.max_eval_queries
of them (a seeded sample, corpus order kept). Tail-patch uses the first
settings.evaluation.tailpatch_queries of those. Output files (evaluation.json, report.md, PNG
plots, explorer.html) go to `output_dir`; the Dagster asset copies that folder to reports/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
from torch import nn

from trackstar_pipeline.attribution.examples import TokenizedExample, context_length, encode_corpus, encode_queries
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.projection import stable_seed
from trackstar_pipeline.evaluation.closed_set import build_candidate_sets, rank_candidates
from trackstar_pipeline.evaluation.metrics import bucket_of, group_queries, ranking_metrics
from trackstar_pipeline.evaluation.scorers import FusionScorer, MethodScorer, Ranking, VectorScorer, random_scorer
from trackstar_pipeline.evaluation.tailpatch import (
    TailPatchEffect,
    TailPatchSetup,
    proponent_targets,
    tailpatch_effects,
    tailpatch_metrics,
)
from trackstar_pipeline.settings import PipelineSettings, settings_to_dict

TABLE_VERSION_UNKNOWN = 0
"""evaluation.json's table_version when the caller has no LanceDB table (plain-file runs)."""
METHOD_ORDER = ("trackstar", "trackstar_no_optimizer", "trackstar_r_train_only", "trackstar_no_curvature",
                "trackstar_no_unit_norm", "bm25", "embed", "random", "trackstar+bm25")


@dataclass
class EvaluationResult:
    """What evaluate() measured: the JSON summary plus the rankings and effects behind it."""

    summary: dict[str, Any]
    """Exactly what evaluation.json holds."""
    rankings: dict[str, dict[str, dict[str, Ranking]]]
    """setting ('open_set' | 'closed_set') -> method -> query id -> top proponents."""
    candidates: dict[str, list[str]]
    effects: dict[tuple[str, str], TailPatchEffect]
    queries: pl.DataFrame
    """The evaluated queries (the sample), with columns n_ground_truth, bucket, correct added."""
    corpus_text: dict[str, str]
    ground_truth: dict[str, list[str]]
    files: dict[str, Path] = field(default_factory=dict)


def sample_queries(queries: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """At most `limit` queries, a seeded choice that keeps their original order."""
    if limit <= 0 or queries.height <= limit:
        return queries
    keys = [stable_seed(seed, f"eval_query:{query_id}") for query_id in queries["id"].to_list()]
    chosen = sorted(np.argsort(keys, kind="stable")[:limit].tolist())
    return queries[chosen]


def _encode(corpus: pl.DataFrame, queries: pl.DataFrame, tokenizer, model: nn.Module,
            settings: PipelineSettings) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    attribution = settings.attribution
    max_length = context_length(model, attribution.max_length)
    corpus_batch = encode_corpus(corpus["id"].to_list(), corpus["text"].to_list(), tokenizer, max_length,
                                 attribution.overlength)
    query_batch = encode_queries(queries["id"].to_list(), queries["prompt"].to_list(),
                                 queries["completion"].to_list(), tokenizer, max_length, attribution.overlength)
    return corpus_batch.examples, query_batch.examples


def build_methods(
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    settings: PipelineSettings,
    model: nn.Module | None = None,
    corpus_examples: Sequence[TokenizedExample] | None = None,
    query_examples: Sequence[TokenizedExample] | None = None,
    second_moments: SecondMoments | None = None,
    given: Mapping[str, MethodScorer] | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, MethodScorer], float | None]:
    """Every method not in `given`, for these queries: (name -> scorer, lambda used or None)."""
    from trackstar_pipeline.evaluation.bm25 import bm25_scorer, query_texts

    methods: dict[str, MethodScorer] = dict(given or {})
    corpus_ids, query_ids = corpus["id"].to_list(), queries["id"].to_list()
    lambda_used = None
    if model is not None and corpus_examples is not None and query_examples is not None:
        from trackstar_pipeline.evaluation.ablations import trackstar_scorers
        from trackstar_pipeline.evaluation.embedding import mean_hidden_states

        scorers, lambda_used = trackstar_scorers(model, corpus_examples, query_examples, settings.attribution,
                                                 second_moments, settings.evaluation.projection_dim_sweep, progress)
        for name, scorer in scorers.items():
            methods.setdefault(name, scorer)
        if "embed" not in methods:
            progress(f"embedding baseline: layer {settings.evaluation.embed_layer}")
            layer, batch = settings.evaluation.embed_layer, settings.attribution.batch_size
            methods["embed"] = VectorScorer(
                [e.example_id for e in query_examples], mean_hidden_states(model, query_examples, layer, batch),
                [e.example_id for e in corpus_examples], mean_hidden_states(model, corpus_examples, layer, batch),
                name="embed")
    if "bm25" not in methods:
        methods["bm25"] = bm25_scorer(corpus_ids, corpus["text"].to_list(), query_ids,
                                      query_texts(queries["prompt"].to_list(), queries["completion"].to_list()))
    methods.setdefault("random", random_scorer(query_ids, corpus_ids, settings.evaluation.seed))
    if "trackstar" in methods and "trackstar+bm25" not in methods:
        methods["trackstar+bm25"] = FusionScorer([methods["trackstar"], methods["bm25"]],
                                                 rrf_k=settings.evaluation.rrf_k,
                                                 depth=max(settings.evaluation.top_k, 100), query_ids=query_ids)
    return methods, lambda_used


def _restrict(rankings: Mapping[str, Ranking], query_ids: Sequence[str]) -> dict[str, Ranking]:
    return {query_id: list(rankings.get(query_id, [])) for query_id in query_ids}


def _split_metrics(rankings: Mapping[str, dict[str, Ranking]], ground_truth: Mapping[str, Sequence[str]],
                   labels: Mapping[str, str], effects, ks: Sequence[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> group label -> metrics over the queries of that group."""
    groups = group_queries(labels)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for method, per_query in rankings.items():
        result[method] = {}
        for label, query_ids in groups.items():
            subset = _restrict(per_query, query_ids)
            metrics = ranking_metrics(subset, ground_truth)
            if effects:
                metrics.update(tailpatch_metrics(subset, effects, ks))
            metrics["n_queries"] = len(query_ids)
            result[method][label] = metrics
    return result


def evaluate(
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    ground_truth: Mapping[str, Sequence[str]],
    settings: PipelineSettings,
    output_dir: str | Path,
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    corpus_examples: Sequence[TokenizedExample] | None = None,
    query_examples: Sequence[TokenizedExample] | None = None,
    second_moments: SecondMoments | None = None,
    tailpatch: TailPatchSetup | None = None,
    fact_correct: Mapping[str, bool] | None = None,
    fact_recall: float | None = None,
    methods: Mapping[str, MethodScorer] | None = None,
    model_info: Mapping[str, Any] | None = None,
    table_version: int | None = None,
    lambda_used: float | None = None,
    progress: Callable[[str], None] = print,
) -> EvaluationResult:
    """Evaluate every method on the open and closed set, write the report folder, return the numbers.

    Give `model` with `tokenizer` (or pre-encoded `corpus_examples`/`query_examples`, all of them)
    to get the gradient methods, embed and tail-patch; `methods` overrides or adds scorers (their
    query ids must cover the evaluated queries). See the module docstring for the full recipe.
    """
    from trackstar_pipeline.evaluation.report import write_report

    started = time.perf_counter()
    evaluation = settings.evaluation
    ground_truth = {query_id: list(ids) for query_id, ids in ground_truth.items()}
    sample = sample_queries(queries, evaluation.max_eval_queries, evaluation.seed)
    query_ids = sample["id"].to_list()
    progress(f"evaluating {len(query_ids)} of {queries.height} queries against {corpus.height} corpus rows")

    if model is not None and (corpus_examples is None or query_examples is None):
        if tokenizer is None:
            raise ValueError("evaluate: pass `tokenizer` (or corpus_examples and query_examples) with `model`")
        corpus_examples, query_examples = _encode(corpus, sample, tokenizer, model, settings)
    elif query_examples is not None:
        wanted = set(query_ids)
        query_examples = [example for example in query_examples if example.example_id in wanted]
    built, built_lambda = build_methods(corpus, sample, settings, model, corpus_examples, query_examples,
                                        second_moments, methods, progress)
    lambda_used = lambda_used if lambda_used is not None else built_lambda

    open_set: dict[str, dict[str, Ranking]] = {}
    for name, scorer in built.items():
        progress(f"open set: ranking the corpus with {name}")
        open_set[name] = _restrict(scorer.top_k(evaluation.top_k), query_ids)
    bm25_top = open_set["bm25"] if evaluation.top_k >= evaluation.closed_set_bm25 else \
        _restrict(built["bm25"].top_k(evaluation.closed_set_bm25), query_ids)
    candidates = build_candidate_sets(corpus, sample, ground_truth, bm25_top, evaluation.closed_set_bm25,
                                      evaluation.closed_set_same_completion, evaluation.closed_set_random,
                                      evaluation.seed)
    closed_set = {name: _restrict(rank_candidates(scorer, candidates, evaluation.top_k), query_ids)
                  for name, scorer in built.items()}
    rankings = {"open_set": open_set, "closed_set": closed_set}

    effects: dict[tuple[str, str], TailPatchEffect] = {}
    ks = tuple(evaluation.tailpatch_k)
    if tailpatch is not None and model is not None and ks:
        patched = set(query_ids[: evaluation.tailpatch_queries])
        work = proponent_targets(
            {f"{setting}/{name}": {q: r for q, r in per_query.items() if q in patched}
             for setting, per_method in rankings.items() for name, per_query in per_method.items()},
            max(ks))
        progress(f"tail-patch: {len(work)} distinct proponents for {len(patched)} queries (one step each)")
        by_id = {example.example_id: example for example in corpus_examples}
        query_by_id = {example.example_id: example for example in query_examples}

        def report_steps(done: int, total: int) -> None:
            if done % 200 == 0 or done == total:
                progress(f"tail-patch {done}/{total} proponents")

        effects = tailpatch_effects(model, tailpatch, by_id, work, query_by_id, settings.attribution.batch_size,
                                    report_steps)

    counts = {query_id: len(ground_truth.get(query_id, [])) for query_id in query_ids}
    sample = sample.with_columns(
        pl.Series("n_ground_truth", [counts[q] for q in query_ids], dtype=pl.Int64),
        pl.Series("bucket", [bucket_of(counts[q]) for q in query_ids], dtype=pl.String),
        pl.Series("correct", [None if fact_correct is None else fact_correct.get(q) for q in query_ids],
                  dtype=pl.Boolean),
    )
    summary = _summary(corpus, queries, sample, ground_truth, rankings, effects, ks, settings, fact_correct,
                       fact_recall, model, model_info, table_version, lambda_used, tailpatch)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    result = EvaluationResult(summary, rankings, candidates, effects, sample,
                              dict(zip(corpus["id"].to_list(), corpus["text"].to_list())), ground_truth)
    result.files = write_report(result, Path(output_dir))
    progress(f"evaluation report written to {output_dir}")
    return result


def _summary(corpus, queries, sample, ground_truth, rankings, effects, ks, settings: PipelineSettings,
             fact_correct, fact_recall, model, model_info, table_version, lambda_used, tailpatch) -> dict[str, Any]:
    """The evaluation.json payload (issue 5's shape plus splits and provenance)."""
    query_ids = sample["id"].to_list()
    attribution = settings.attribution
    if fact_recall is None and fact_correct:
        values = [bool(fact_correct[q]) for q in query_ids if q in fact_correct]
        fact_recall = sum(values) / len(values) if values else None
    info: dict[str, Any] = dict(model_info or {})
    if model is not None:
        info.setdefault("architecture", type(model).__name__)
        info.setdefault("parameters", int(sum(p.numel() for p in model.parameters())))
    numeric_lambda = lambda_used if lambda_used is not None else (
        attribution.lambda_mix if isinstance(attribution.lambda_mix, float) else None)
    summary: dict[str, Any] = {
        "n_queries": len(query_ids),
        "n_queries_total": queries.height,
        "n_corpus": corpus.height,
        "model": info,
        "settings": {"projection_dim": attribution.projection_dim, "lambda": numeric_lambda,
                     "lambda_setting": attribution.lambda_mix, "curvature": attribution.curvature,
                     "optimizer_correction": attribution.optimizer_correction,
                     "unit_normalize": attribution.unit_normalize,
                     "tailpatch": None if tailpatch is None else {
                         "optimizer": tailpatch.optimizer_kind, "learning_rate": tailpatch.learning_rate,
                         "queries": min(len(query_ids), settings.evaluation.tailpatch_queries)},
                     "evaluation": settings_to_dict(settings.evaluation)},
        "fact_recall": fact_recall,
        "table_version": int(table_version) if table_version is not None else TABLE_VERSION_UNKNOWN,
        "methods": [name for name in METHOD_ORDER if name in rankings["open_set"]]
                   + sorted(name for name in rankings["open_set"] if name not in METHOD_ORDER),
    }
    splits: dict[str, Any] = {}
    buckets = dict(zip(query_ids, sample["bucket"].to_list()))
    correctness = ({q: ("correct" if fact_correct.get(q) else "incorrect") for q in query_ids}
                   if fact_correct is not None else None)
    for setting, per_method in rankings.items():
        table = {}
        for name in summary["methods"]:
            metrics = ranking_metrics(per_method[name], ground_truth)
            metrics.update(tailpatch_metrics(per_method[name], effects, ks) if effects else
                           {f"tailpatch@{k}": None for k in ks})
            table[name] = metrics
        summary[setting] = table
        splits[setting] = {"by_frequency": _split_metrics(per_method, ground_truth, buckets, effects, ks)}
        if correctness is not None:
            splits[setting]["by_correct"] = _split_metrics(per_method, ground_truth, correctness, effects, ks)
    summary["splits"] = splits
    return summary
