"""The evaluation entry point: every method, both settings, all metrics, one report folder.

    inputs = EvaluationInputs(
        corpus, queries, ground_truth, settings,    # corpus: a ShardedCorpus (or a small frame)
        gradients=load_table_gradients(store, ...),  # the stored query gradients and R_train / R_eval
        model=model, tokenizer=tokenizer,           # for the new passes (no optimizer, other d), embed, tail-patch
        second_moments=moments,                     # optimizer correction (None: no_optimizer skipped)
        tailpatch=load_tailpatch_setup(model_dir),  # None: tail-patch columns are null
        fact_correct=fact_recall(...).correct,      # query id -> model predicts it (the correctness split)
        methods={"trackstar": PrecomputedScorer(...)},  # optional overrides, e.g. the LanceDB proponents
    )
    result = evaluate(inputs, output_dir)

The corpus streams shard by shard (`corpus_shards.ShardedCorpus`: id, text, facts and the stored
raw gradients of one shard at a time); a plain frame is one shard. Memory stays flat in the
corpus size: only per-query state survives a shard. The passes, each reading only the columns it needs:
1. ground truth, when not given: the fact column;
2. statistics: BM25's document frequencies and the row count (text);
3. closed-set candidates (closed_set.py): which query objects occur (facts), then BM25's top and
   the same-completion and random draws (text, facts);
4. the main pass (stream.py): every built method scores each shard once for all evaluated
   queries, keeping a running top-k and the candidates' scores; a new gradient pass first
   computes its R_train sample's rows (fetched by position) and every query;
5. the fusion's exact re-rank (evaluation.fusion_rerank): the texts of its TrackStar's pooled rows,
   then their exact gradients (attribution/exact_rerank.py);
6. texts (and tail-patch examples) only for the ids the report shows or patches.
Methods not given in `methods` are built here: trackstar and its ablations from the stored raw
gradients (`ablations.trackstar_methods`; without stored `gradients` a new pass computes them),
bm25, embed (mean hidden states of settings.evaluation.embed_layer), random, and trackstar+bm25
(reciprocal rank fusion). Without a model only the given methods, the gradient methods of stored
`gradients`, bm25, random and the fusion are evaluated.

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

from trackstar_pipeline.attribution.curvature import curvature_train_sample
from trackstar_pipeline.attribution.examples import TokenizedExample, context_length, encode_corpus, encode_queries
from trackstar_pipeline.attribution.exact_rerank import MIN_ROWS, Alignments, exact_gradient_bytes, update_alignments
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.attribution.projection import stable_seed
from trackstar_pipeline.evaluation.ablations import (
    GradientSource,
    gradient_pass,
    lambda_method_name,
    trackstar_methods,
)
from trackstar_pipeline.evaluation.bm25 import Bm25Method, corpus_bm25, query_texts
from trackstar_pipeline.evaluation.closed_set import build_candidate_sets, rank_candidates
from trackstar_pipeline.evaluation.corpus_shards import (
    ShardedCorpus,
    count_rows,
    frame_shards,
    rows_at_positions,
    rows_with_ids,
    streamed_ground_truth,
)
from trackstar_pipeline.evaluation.metrics import bucket_of, group_queries, ranking_metrics
from trackstar_pipeline.evaluation.report import EXPLORER_TOP, write_report
from trackstar_pipeline.evaluation.reranked import Align, ExactRerankScorer, checked_rerank
from trackstar_pipeline.evaluation.result import EvaluationResult
from trackstar_pipeline.evaluation.scorers import (FusionScorer, MethodScorer, Ranking, checked_follow,
                                                  checked_head_pool, checked_near_tie)
from trackstar_pipeline.evaluation.stream import RandomMethod, ShardMethod, VectorMethod, stream_methods
from trackstar_pipeline.evaluation.tailpatch import (
    TailPatchEffect,
    TailPatchSetup,
    paired_against,
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
FUSION_DEPTH = 100
"""Each method's top this many feed trackstar+bm25 (at least top_k)."""


@dataclass(frozen=True)
class EvaluationInputs:
    """Everything evaluate() reads: the data, the settings, and what earlier steps already computed."""

    corpus: ShardedCorpus | pl.DataFrame
    """The corpus by shard (id, text, facts; stored raw gradients per shard); a frame is one shard."""
    queries: pl.DataFrame
    ground_truth: Mapping[str, Sequence[str]] | None
    """Query id -> corpus ids; None: from the corpus's fact column, read per shard."""
    settings: PipelineSettings
    gradients: GradientSource | None = None
    """Stored raw query gradients at the table's (d, correction) with R_train / R_eval, the corpus's read per
    shard; None: computed from `model`."""
    model: nn.Module | None = None
    tokenizer: Any = None
    second_moments: SecondMoments | None = None
    tailpatch: TailPatchSetup | None = None
    fact_correct: Mapping[str, bool] | None = None
    fact_recall: float | None = None
    """The model's recall over all the queries, not only the evaluated sample: evaluation.json keeps it as
    fact_recall_all_queries. Its fact_recall is over the evaluated queries (from fact_correct), the ones every
    metric is over; without fact_correct it falls back to this."""
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


class _Encoder:
    """Tokenizes corpus rows and queries as the gradient assets do."""

    def __init__(self, inputs: EvaluationInputs) -> None:
        self.tokenizer, self.attribution = inputs.tokenizer, inputs.settings.attribution
        self.max_length = context_length(inputs.model, self.attribution.max_length)

    def corpus(self, frame: pl.DataFrame) -> list[TokenizedExample]:
        return encode_corpus(frame["id"].to_list(), frame["text"].to_list(), self.tokenizer, self.max_length,
                             self.attribution.overlength).examples

    def queries(self, queries: pl.DataFrame) -> list[TokenizedExample]:
        return encode_queries(queries["id"].to_list(), queries["prompt"].to_list(), queries["completion"].to_list(),
                              self.tokenizer, self.max_length, self.attribution.overlength).examples


def _model_methods(inputs: EvaluationInputs, corpus: ShardedCorpus, n_corpus: int, query_ids: Sequence[str],
                   encoder: _Encoder | None, query_examples: Sequence[TokenizedExample] | None,
                   fused_trackstar: str, progress: Callable[[str], None],
                   ) -> tuple[dict[str, ShardMethod], dict[str, str], float | None]:
    """TrackStar, its ablations, the d sweep and embed: (name -> streamed method, alias -> name, lambda used).

    fused_trackstar: the TrackStar ranking trackstar+bm25 takes (lambda_method_name), streamed with the others."""
    settings, model = inputs.settings, inputs.model
    attribution = settings.attribution
    new_pass = None
    if model is not None:
        sample_cache: list[list[TokenizedExample]] = []

        def sample_examples() -> list[TokenizedExample]:
            """The R_train sample's rows (curvature_train_sample's rule over the corpus order), tokenized once."""
            if not sample_cache:
                positions = curvature_train_sample(n_corpus, attribution.curvature_train_samples,
                                                   attribution.projection_seed).tolist()
                sample_cache.append(encoder.corpus(rows_at_positions(corpus, positions, ["id", "text"])))
            return sample_cache[0]

        def new_pass(variant_settings, moments) -> GradientSource:
            return gradient_pass(model, query_examples, sample_examples, variant_settings, moments, progress)

    gradients = inputs.gradients
    if gradients is None and new_pass is not None:
        gradients = new_pass(attribution, inputs.second_moments)
    methods: dict[str, ShardMethod] = {}
    aliases: dict[str, str] = {}
    lambda_used = None
    if gradients is not None:
        evaluation = settings.evaluation
        lambdas = tuple(evaluation.lambda_sweep)
        if fused_trackstar.startswith("trackstar_lambda"):
            lambdas += (evaluation.fusion_trackstar_lambda,)  # the fusion's TrackStar, streamed with the others
        built, aliases, lambda_used = trackstar_methods(gradients, query_ids, attribution, new_pass,
                                                        inputs.second_moments, evaluation.projection_dim_sweep,
                                                        lambdas, evaluation.damping_sweep)
        methods.update(built)
    if model is not None:
        from trackstar_pipeline.evaluation.embedding import mean_hidden_states

        progress(f"embedding baseline: layer {settings.evaluation.embed_layer}")
        layer, batch = settings.evaluation.embed_layer, attribution.batch_size
        row = {example.example_id: example for example in query_examples}
        queries = mean_hidden_states(model, [row[q] for q in query_ids], layer, batch)  # (Q_eval, H)
        methods["embed"] = VectorMethod("embed", queries, lambda shard: shard.cached(
            "embed", lambda: mean_hidden_states(model, shard.examples, layer, batch)))  # (n, H)
    return methods, aliases, lambda_used


def _rerank_pool(inputs: EvaluationInputs, progress: Callable[[str], None]) -> int:
    """evaluation.fusion_rerank, or 0 (saying why) without a model or when its exact gradients pass the budget:
    a model too large for the re-rank still gets its evaluation, with the projected order."""
    evaluation = inputs.settings.evaluation
    if evaluation.fusion_rerank == 0:
        return 0
    if inputs.model is None:
        progress("trackstar+bm25: the exact re-rank (evaluation.fusion_rerank) needs the model; fusing the "
                 "projected order")
        return 0
    row = exact_gradient_bytes(inputs.model, inputs.settings.attribution)
    if MIN_ROWS * row > evaluation.rerank_memory_mb * 2**20:
        progress(f"trackstar+bm25: no exact re-rank; one exact gradient of this model takes {row / 2**20:.0f} MiB and "
                 f"evaluation.rerank_memory_mb ({evaluation.rerank_memory_mb}) must hold {MIN_ROWS}; fusing the "
                 "projected order")
        return 0
    return evaluation.fusion_rerank


def _exact_alignment(inputs: EvaluationInputs, corpus: ShardedCorpus, encoder: _Encoder,
                     query_examples: Sequence[TokenizedExample], progress: Callable[[str], None]) -> Align:
    """update_alignments bound to this evaluation: the pooled rows' texts in one corpus pass, then exact gradients."""
    queries = {example.example_id: example for example in query_examples}
    evaluation = inputs.settings.evaluation

    def align(pools: Mapping[str, Sequence[str]]) -> Alignments:
        wanted = {corpus_id for ids in pools.values() for corpus_id in ids}
        progress(f"exact re-rank: {len(wanted)} distinct rows pooled by {len(pools)} queries")
        texts = rows_with_ids(corpus, wanted, ["text"], progress)

        def examples(ids: Sequence[str]) -> list[TokenizedExample]:
            return encoder.corpus(texts.filter(pl.col("id").is_in(pl.Series(list(ids), dtype=pl.String).implode())))

        reported, started = [0], time.perf_counter()

        def report(done: int, total: int) -> None:
            if done == total or done >= reported[0] + total / 10:  # about every tenth
                reported[0] = done
                progress(f"exact re-rank: {done}/{total} (query, row) pairs, {time.perf_counter() - started:.0f} s")

        return update_alignments(inputs.model, queries, pools, examples, inputs.settings.attribution,
                                 inputs.second_moments, evaluation.rerank_memory_mb * 2**20, report)

    return align


def build_methods(inputs: EvaluationInputs, corpus: ShardedCorpus, sample: pl.DataFrame,
                  ground_truth: Mapping[str, Sequence[str]], progress: Callable[[str], None] = print,
                  ) -> tuple[dict[str, MethodScorer], dict[str, list[str]], int, float | None]:
    """Every method (given ones kept, the rest streamed), the closed-set candidates, the corpus size, lambda used."""
    settings = inputs.settings
    evaluation = settings.evaluation
    # the fusion's arguments are checked here, before any corpus pass, not when it is built at the end
    checked_head_pool(evaluation.fusion_bm25_head, evaluation.fusion_bm25_head_pool, evaluation.fusion_bm25_head_ratio)
    checked_follow(evaluation.fusion_bm25_follow, evaluation.fusion_page_size)
    checked_near_tie(evaluation.fusion_bm25_near_tie)
    checked_rerank(evaluation.fusion_rerank, evaluation.rerank_memory_mb)
    rerank = _rerank_pool(inputs, progress)
    fused_trackstar = lambda_method_name(settings.attribution, evaluation.fusion_trackstar_lambda)
    given: dict[str, MethodScorer] = dict(inputs.methods or {})
    query_ids = sample["id"].to_list()
    bm25 = None
    if "bm25" not in given:
        bm25 = corpus_bm25(corpus, query_texts(sample["prompt"].to_list(), sample["completion"].to_list()),
                           evaluation.bm25_split_sentences, progress)
        n_corpus = bm25.statistics.n_rows
    else:
        n_corpus = count_rows(corpus)
    encoder = _Encoder(inputs) if inputs.model is not None else None
    query_examples = encoder.queries(inputs.queries) if encoder is not None else None
    streamed, aliases, lambda_used = _model_methods(inputs, corpus, n_corpus, query_ids, encoder, query_examples,
                                                    fused_trackstar, progress)
    if bm25 is not None:
        streamed["bm25"] = Bm25Method(bm25)
    streamed.setdefault("random", RandomMethod(query_ids, evaluation.seed))
    streamed = {name: method for name, method in streamed.items() if name not in given}
    bm25_top = bm25 if bm25 is not None else given["bm25"].top_k(evaluation.closed_set_bm25)
    candidates = build_candidate_sets(corpus, sample, ground_truth, bm25_top, evaluation.closed_set_bm25,
                                      evaluation.closed_set_same_completion, evaluation.closed_set_random,
                                      evaluation.seed, progress)
    depth = max(evaluation.top_k, FUSION_DEPTH)
    found = stream_methods(corpus, list(streamed.values()), query_ids, depth, candidates,
                           encoder.corpus if encoder is not None else None, progress)
    methods: dict[str, MethodScorer] = {**found, **given}
    methods.update({alias: methods[target] for alias, target in aliases.items() if alias not in given})
    if "trackstar" in methods and "trackstar+bm25" not in methods:
        if fused_trackstar not in methods:
            progress(f"trackstar+bm25 fuses 'trackstar': {fused_trackstar} (evaluation.fusion_trackstar_lambda) "
                     "needs the stored raw gradients or the model, and neither was given")
            fused_trackstar = "trackstar"
        fused: MethodScorer = methods[fused_trackstar]
        if rerank > 0:
            fused = ExactRerankScorer(fused, rerank, _exact_alignment(inputs, corpus, encoder, query_examples, progress))
            fused_trackstar = f"{fused_trackstar} (its top {rerank} re-ranked exactly)"
        methods["trackstar+bm25"] = FusionScorer([fused, methods["bm25"]], rrf_k=evaluation.rrf_k,
                                                 depth=depth, query_ids=query_ids,
                                                 weights=[1.0, evaluation.fusion_bm25_weight], head_method=1,
                                                 head=evaluation.fusion_bm25_head,
                                                 head_pool=evaluation.fusion_bm25_head_pool,
                                                 head_pool_ratio=evaluation.fusion_bm25_head_ratio,
                                                 follow=evaluation.fusion_bm25_follow, page=evaluation.fusion_page_size,
                                                 names=[fused_trackstar, "bm25"], near_tie=evaluation.fusion_bm25_near_tie)
    return methods, candidates, n_corpus, lambda_used


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
               query_ids: Sequence[str], texts: pl.DataFrame, progress: Callable[[str], None],
               ) -> dict[tuple[str, str], TailPatchEffect]:
    """One optimizer step per distinct top proponent of the first tailpatch_queries queries, any method."""
    evaluation = inputs.settings.evaluation
    ks = tuple(evaluation.tailpatch_k)
    if not ks:
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

    encoder = _Encoder(inputs)
    proponents = encoder.corpus(texts.filter(pl.col("id").is_in(pl.Series(list(work), dtype=pl.String).implode())))
    queries = encoder.queries(inputs.queries.filter(pl.col("id").is_in(pl.Series(list(patched),
                                                                                 dtype=pl.String).implode())))
    return tailpatch_effects(inputs.model, inputs.tailpatch, {e.example_id: e for e in proponents}, work,
                             {e.example_id: e for e in queries}, inputs.settings.attribution.batch_size, report_steps)


def _shown_ids(rankings: Mapping[str, Mapping[str, Mapping[str, Ranking]]], ground_truth: Mapping[str, Sequence[str]],
               query_ids: Sequence[str], depth: int) -> set[str]:
    """The corpus ids whose text the report shows or tail-patch steps on: each ranking's top `depth`, ground truth."""
    shown = {corpus_id for per_method in rankings.values() for per_query in per_method.values()
             for ranking in per_query.values() for corpus_id, _ in ranking[:depth]}
    return shown | {corpus_id for q in query_ids for corpus_id in ground_truth.get(q, [])[:EXPLORER_TOP]}


def evaluate(inputs: EvaluationInputs, output_dir: str | Path, progress: Callable[[str], None] = print,
             ) -> EvaluationResult:
    """Evaluate every method on the open and closed set, write the report folder, return the numbers."""
    started = time.perf_counter()
    settings, queries = inputs.settings, inputs.queries
    evaluation = settings.evaluation
    corpus = frame_shards(inputs.corpus) if isinstance(inputs.corpus, pl.DataFrame) else inputs.corpus
    if inputs.model is not None and inputs.tokenizer is None:
        raise ValueError("EvaluationInputs: give `tokenizer` with `model` (to tokenize the corpus and queries)")
    sample = sample_queries(queries, evaluation.max_eval_queries, evaluation.seed)
    query_ids = sample["id"].to_list()
    if inputs.ground_truth is None:
        ground_truth = streamed_ground_truth(corpus, dict(zip(query_ids, sample["fact"].to_list())), progress)
    else:
        ground_truth = {query_id: list(ids) for query_id, ids in inputs.ground_truth.items()}
    progress(f"evaluating {len(query_ids)} of {queries.height} queries against {len(corpus.names)} corpus shards")
    built, candidates, n_corpus, built_lambda = build_methods(inputs, corpus, sample, ground_truth, progress)

    open_set = {name: _restrict(scorer.top_k(evaluation.top_k), query_ids) for name, scorer in built.items()}
    closed_set = {name: _restrict(rank_candidates(scorer, candidates, evaluation.top_k), query_ids)
                  for name, scorer in built.items()}
    rankings = {"open_set": open_set, "closed_set": closed_set}
    patching = inputs.tailpatch is not None and inputs.model is not None
    depth = max(EXPLORER_TOP, max(evaluation.tailpatch_k, default=0) if patching else 0)
    texts = rows_with_ids(corpus, _shown_ids(rankings, ground_truth, query_ids, depth), ["text"], progress)
    effects = _tailpatch(inputs, rankings, query_ids, texts, progress) if patching else {}

    counts = {query_id: len(ground_truth.get(query_id, [])) for query_id in query_ids}
    fact_correct = inputs.fact_correct
    sample = sample.with_columns(
        pl.Series("n_ground_truth", [counts[q] for q in query_ids], dtype=pl.Int64),
        pl.Series("bucket", [bucket_of(counts[q]) for q in query_ids], dtype=pl.String),
        pl.Series("correct", [None if fact_correct is None else fact_correct.get(q) for q in query_ids],
                  dtype=pl.Boolean),
    )
    lambda_used = inputs.lambda_used if inputs.lambda_used is not None else built_lambda
    summary = _summary(inputs, n_corpus, sample, ground_truth, rankings, effects, lambda_used)
    fusion = built.get("trackstar+bm25")
    if isinstance(fusion, FusionScorer) and fusion.names:
        summary["fusion_methods"] = list(fusion.names)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    result = EvaluationResult(summary, rankings, candidates, effects, sample,
                              dict(zip(texts["id"].to_list(), texts["text"].to_list())), ground_truth)
    result.files = write_report(result, Path(output_dir))
    progress(f"evaluation report written to {output_dir}")
    return result


def _summary(inputs: EvaluationInputs, n_corpus: int, sample: pl.DataFrame, ground_truth: Mapping[str, Sequence[str]],
             rankings: Mapping[str, Mapping[str, Mapping[str, Ranking]]],
             effects: Mapping[tuple[str, str], TailPatchEffect], lambda_used: float | None) -> dict[str, Any]:
    """The evaluation.json payload (issue 5's shape plus splits and provenance)."""
    settings, queries, model, tailpatch = inputs.settings, inputs.queries, inputs.model, inputs.tailpatch
    fact_correct, fact_recall, table_version = inputs.fact_correct, inputs.fact_recall, inputs.table_version
    ks = tuple(settings.evaluation.tailpatch_k)
    query_ids = sample["id"].to_list()
    attribution = settings.attribution
    recall_all_queries = fact_recall
    if fact_correct:
        values = [bool(fact_correct[q]) for q in query_ids if q in fact_correct]
        fact_recall = sum(values) / len(values) if values else fact_recall
    info: dict[str, Any] = dict(inputs.model_info or {})
    if model is not None:
        info.setdefault("architecture", type(model).__name__)
        info.setdefault("parameters", int(sum(p.numel() for p in model.parameters())))
    numeric_lambda = lambda_used if lambda_used is not None else (
        attribution.lambda_mix if isinstance(attribution.lambda_mix, float) else None)
    summary: dict[str, Any] = {
        "n_queries": len(query_ids),
        "n_queries_total": queries.height,
        "n_corpus": n_corpus,
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
        "fact_recall_all_queries": recall_all_queries,
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
    if effects:
        summary["paired_tailpatch"] = {setting: paired_against(per_method, effects, ks)
                                       for setting, per_method in rankings.items()}
    return summary
