"""The evaluation entry point: every method, both settings, all metrics, one report folder.

    inputs = EvaluationInputs(
        corpus, queries, ground_truth, settings,
        gradients=load_raw_gradients(store, ...),   # what projected_gradients / query_gradients / r_* stored
        model=model, tokenizer=tokenizer,           # for the new passes (no optimizer, other d), embed, tail-patch
        second_moments=moments,                     # optimizer correction (None: no_optimizer skipped)
        tailpatch=load_tailpatch_setup(model_dir),  # None: tail-patch columns are null
        fact_correct=fact_recall(...).correct,      # query id -> model predicts it (the correctness split)
        methods={"trackstar": PrecomputedScorer(...)},  # optional overrides, e.g. the LanceDB proponents
    )
    result = evaluate(inputs, output_dir)

`corpus` (id, text, facts) and `queries` (id, prompt, completion, fact) are frames as DATA's
loaders return them; `ground_truth` maps query id -> corpus ids. Methods not given in `methods`
are built here: trackstar and its ablations from the raw gradients (`ablations.trackstar_scorers`;
without stored `gradients` one pass computes them), bm25, embed (mean hidden states of
settings.evaluation.embed_layer), random, and trackstar+bm25 (reciprocal rank fusion). Without a
model only the given methods, the gradient methods of stored `gradients`, bm25, random and the
fusion are evaluated.

All methods rank the same corpus for the same queries: at most settings.evaluation.max_eval_queries
of them (a seeded sample, corpus order kept); R_eval still averages over every query, as the
table's does. Tail-patch uses the first settings.evaluation.tailpatch_queries of those. Output
files (evaluation.json, report.md, PNG plots, explorer.html) go to `output_dir`; the Dagster asset
copies that folder to reports/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
from torch import nn

from trackstar_pipeline.attribution.examples import TokenizedExample, context_length, encode_corpus, encode_queries
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.projection import stable_seed
from trackstar_pipeline.evaluation.ablations import RawGradients, gradient_pass, trackstar_scorers
from trackstar_pipeline.evaluation.closed_set import build_candidate_sets, rank_candidates
from trackstar_pipeline.evaluation.metrics import bucket_of, group_queries, ranking_metrics
from trackstar_pipeline.evaluation.report import write_report
from trackstar_pipeline.evaluation.result import EvaluationResult
from trackstar_pipeline.evaluation.scorers import FusionScorer, MethodScorer, Ranking, VectorScorer, random_scorer
from trackstar_pipeline.evaluation.tailpatch import (
    TailPatchEffect,
    TailPatchSetup,
    proponent_targets,
    tailpatch_effects,
    tailpatch_metrics,
)
from trackstar_pipeline.settings import PipelineSettings, settings_to_dict

__all__ = ["EvaluationInputs", "EvaluationResult", "evaluate", "sample_queries"]

TABLE_VERSION_UNKNOWN = 0
"""evaluation.json's table_version when the caller has no LanceDB table (plain-file runs)."""
METHOD_ORDER = ("trackstar", "trackstar_no_optimizer", "trackstar_r_train_only", "trackstar_no_curvature",
                "trackstar_no_unit_norm", "bm25", "embed", "random", "trackstar+bm25")


@dataclass(frozen=True)
class EvaluationInputs:
    """Everything evaluate() reads: the data, the settings, and what earlier steps already computed."""

    corpus: pl.DataFrame
    queries: pl.DataFrame
    ground_truth: Mapping[str, Sequence[str]]
    settings: PipelineSettings
    gradients: RawGradients | None = None
    """Raw gradients at the table's (d, correction) with R_train / R_eval; None: computed from `model`."""
    model: nn.Module | None = None
    tokenizer: Any = None
    second_moments: SecondMoments | None = None
    tailpatch: TailPatchSetup | None = None
    fact_correct: Mapping[str, bool] | None = None
    fact_recall: float | None = None
    methods: Mapping[str, MethodScorer] | None = None
    """Scorers that override or add to the built ones (their query ids must cover the evaluated queries)."""
    model_info: Mapping[str, Any] | None = None
    table_version: int | None = None
    lambda_used: float | None = None
    """The lambda the table used (reported); None: the one the ablations' R used."""


def sample_queries(queries: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """At most `limit` queries, a seeded choice that keeps their original order."""
    if limit <= 0 or queries.height <= limit:
        return queries
    keys = [stable_seed(seed, f"eval_query:{query_id}") for query_id in queries["id"].to_list()]
    chosen = sorted(np.argsort(keys, kind="stable")[:limit].tolist())
    return queries[chosen]


def _encode(inputs: EvaluationInputs) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """The corpus and every query tokenized as the gradient assets tokenize them."""
    attribution, corpus, queries = inputs.settings.attribution, inputs.corpus, inputs.queries
    max_length = context_length(inputs.model, attribution.max_length)
    corpus_batch = encode_corpus(corpus["id"].to_list(), corpus["text"].to_list(), inputs.tokenizer, max_length,
                                 attribution.overlength)
    query_batch = encode_queries(queries["id"].to_list(), queries["prompt"].to_list(),
                                 queries["completion"].to_list(), inputs.tokenizer, max_length, attribution.overlength)
    return corpus_batch.examples, query_batch.examples


def build_methods(inputs: EvaluationInputs, sample: pl.DataFrame, corpus_examples: Sequence[TokenizedExample] | None,
                  query_examples: Sequence[TokenizedExample] | None, progress: Callable[[str], None] = print,
                  ) -> tuple[dict[str, MethodScorer], float | None]:
    """Every method not in inputs.methods, for the sampled queries: (name -> scorer, lambda used or None)."""
    from trackstar_pipeline.evaluation.bm25 import bm25_scorer, query_texts

    settings, model, corpus = inputs.settings, inputs.model, inputs.corpus
    methods: dict[str, MethodScorer] = dict(inputs.methods or {})
    corpus_ids, query_ids = corpus["id"].to_list(), sample["id"].to_list()
    gradients, lambda_used = inputs.gradients, None
    if gradients is None and model is not None:
        gradients = gradient_pass(model, corpus_examples, query_examples, settings.attribution, inputs.second_moments,
                                  progress)
    if gradients is not None:
        scorers, lambda_used = trackstar_scorers(gradients, query_ids, settings.attribution, model, corpus_examples,
                                                 query_examples, inputs.second_moments,
                                                 settings.evaluation.projection_dim_sweep, progress)
        for name, scorer in scorers.items():
            methods.setdefault(name, scorer)
    if model is not None and "embed" not in methods:
        from trackstar_pipeline.evaluation.embedding import mean_hidden_states

        progress(f"embedding baseline: layer {settings.evaluation.embed_layer}")
        layer, batch = settings.evaluation.embed_layer, settings.attribution.batch_size
        sampled = set(query_ids)
        evaluated = [example for example in query_examples if example.example_id in sampled]
        methods["embed"] = VectorScorer(
            [e.example_id for e in evaluated], mean_hidden_states(model, evaluated, layer, batch),
            [e.example_id for e in corpus_examples], mean_hidden_states(model, corpus_examples, layer, batch),
            name="embed")
    if "bm25" not in methods:
        methods["bm25"] = bm25_scorer(corpus_ids, corpus["text"].to_list(), query_ids,
                                      query_texts(sample["prompt"].to_list(), sample["completion"].to_list()))
    methods.setdefault("random", random_scorer(query_ids, corpus_ids, settings.evaluation.seed))
    if "trackstar" in methods and "trackstar+bm25" not in methods:
        evaluation = settings.evaluation
        methods["trackstar+bm25"] = FusionScorer([methods["trackstar"], methods["bm25"]], rrf_k=evaluation.rrf_k,
                                                 depth=max(evaluation.top_k, 100), query_ids=query_ids,
                                                 weights=[1.0, evaluation.fusion_bm25_weight], head_method=1,
                                                 head=evaluation.fusion_bm25_head)
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


def _tailpatch(inputs: EvaluationInputs, rankings: Mapping[str, Mapping[str, Mapping[str, Ranking]]],
               query_ids: Sequence[str], corpus_examples: Sequence[TokenizedExample],
               query_examples: Sequence[TokenizedExample], progress: Callable[[str], None],
               ) -> dict[tuple[str, str], TailPatchEffect]:
    """One optimizer step per distinct top proponent of the first tailpatch_queries queries, any method."""
    evaluation = inputs.settings.evaluation
    ks = tuple(evaluation.tailpatch_k)
    if inputs.tailpatch is None or inputs.model is None or not ks:
        return {}
    patched = set(query_ids[: evaluation.tailpatch_queries])
    work = proponent_targets(
        {f"{setting}/{name}": {q: r for q, r in per_query.items() if q in patched}
         for setting, per_method in rankings.items() for name, per_query in per_method.items()},
        max(ks))
    progress(f"tail-patch: {len(work)} distinct proponents for {len(patched)} queries (one step each)")

    def report_steps(done: int, total: int) -> None:
        if done % 200 == 0 or done == total:
            progress(f"tail-patch {done}/{total} proponents")

    return tailpatch_effects(inputs.model, inputs.tailpatch, {e.example_id: e for e in corpus_examples}, work,
                             {e.example_id: e for e in query_examples}, inputs.settings.attribution.batch_size,
                             report_steps)


def evaluate(inputs: EvaluationInputs, output_dir: str | Path, progress: Callable[[str], None] = print,
             ) -> EvaluationResult:
    """Evaluate every method on the open and closed set, write the report folder, return the numbers."""
    started = time.perf_counter()
    settings, corpus, queries = inputs.settings, inputs.corpus, inputs.queries
    evaluation = settings.evaluation
    ground_truth = {query_id: list(ids) for query_id, ids in inputs.ground_truth.items()}
    sample = sample_queries(queries, evaluation.max_eval_queries, evaluation.seed)
    query_ids = sample["id"].to_list()
    progress(f"evaluating {len(query_ids)} of {queries.height} queries against {corpus.height} corpus rows")
    corpus_examples = query_examples = None
    if inputs.model is not None:
        if inputs.tokenizer is None:
            raise ValueError("EvaluationInputs: give `tokenizer` with `model` (to tokenize the corpus and queries)")
        corpus_examples, query_examples = _encode(inputs)
    built, built_lambda = build_methods(inputs, sample, corpus_examples, query_examples, progress)

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
    effects = _tailpatch(inputs, rankings, query_ids, corpus_examples, query_examples, progress)

    counts = {query_id: len(ground_truth.get(query_id, [])) for query_id in query_ids}
    fact_correct = inputs.fact_correct
    sample = sample.with_columns(
        pl.Series("n_ground_truth", [counts[q] for q in query_ids], dtype=pl.Int64),
        pl.Series("bucket", [bucket_of(counts[q]) for q in query_ids], dtype=pl.String),
        pl.Series("correct", [None if fact_correct is None else fact_correct.get(q) for q in query_ids],
                  dtype=pl.Boolean),
    )
    lambda_used = inputs.lambda_used if inputs.lambda_used is not None else built_lambda
    summary = _summary(inputs, sample, ground_truth, rankings, effects, lambda_used)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    result = EvaluationResult(summary, rankings, candidates, effects, sample,
                              dict(zip(corpus["id"].to_list(), corpus["text"].to_list())), ground_truth)
    result.files = write_report(result, Path(output_dir))
    progress(f"evaluation report written to {output_dir}")
    return result


def _summary(inputs: EvaluationInputs, sample: pl.DataFrame, ground_truth: Mapping[str, Sequence[str]],
             rankings: Mapping[str, Mapping[str, Mapping[str, Ranking]]],
             effects: Mapping[tuple[str, str], TailPatchEffect], lambda_used: float | None) -> dict[str, Any]:
    """The evaluation.json payload (issue 5's shape plus splits and provenance)."""
    settings, corpus, queries, model, tailpatch = (inputs.settings, inputs.corpus, inputs.queries, inputs.model,
                                                   inputs.tailpatch)
    fact_correct, fact_recall, table_version = inputs.fact_correct, inputs.fact_recall, inputs.table_version
    ks = tuple(settings.evaluation.tailpatch_k)
    query_ids = sample["id"].to_list()
    attribution = settings.attribution
    if fact_recall is None and fact_correct:
        values = [bool(fact_correct[q]) for q in query_ids if q in fact_correct]
        fact_recall = sum(values) / len(values) if values else None
    info: dict[str, Any] = dict(inputs.model_info or {})
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
