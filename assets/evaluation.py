"""Proponents per query (TrackStar from the LanceDB table; BM25 baseline) and the evaluation report."""

import base64
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import (
    load_checkpoint,
    load_optimizer_moments,
    load_query_vectors,
    load_table_gradients,
    local_model_dir,
    stored_corpus,
)
from trackstar_pipeline.assets.partitions import registered_shards
from trackstar_pipeline.assets.preview import markdown_table
from trackstar_pipeline.attribution.ann_index import load_ann_parameters
from trackstar_pipeline.attribution.table_search import TableCandidateScores, search_table
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice, VectorStore
from trackstar_pipeline.storage import materialize_local


def _query_vectors(pipeline: PipelineConfig, object_store: ObjectStoreResource) -> tuple[list[str], np.ndarray]:
    """Query ids and their unit-norm R^{-1/2} g (Q, d): the same transform the table rows got."""
    query_ids, vectors = load_query_vectors(object_store.store, object_store.storage_settings(),
                                            pipeline.settings.attribution.unit_normalize)
    return query_ids, vectors.numpy()  # (Q, d)


def _result(uri: str, size: int, frame: pl.DataFrame, extra: dict) -> MaterializeResult:
    return MaterializeResult(metadata={"uri": MetadataValue.url(uri), "bytes": size, "rows": frame.height,
                                       "queries": frame["query_id"].n_unique() if frame.height else 0, **extra,
                                       "preview": MetadataValue.md(markdown_table(frame.filter(pl.col("rank") <= 3), rows=9))})


@asset(group_name="evaluation", kinds={"lancedb", "parquet"}, deps=["gradient_table", "gradient_index", "query_gradients", "curvature_inverse_sqrt"])
def proponents(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
               vector_store: VectorStore, torch_device: TorchDevice) -> MaterializeResult:
    """Top-k training examples per query: unit-norm R^{-1/2} g of the queries searched in the table, all at once
    (exact batched search, or the IVF index with gradient_index's tuned nprobes on tables that have one)."""
    settings, store = pipeline.settings, object_store.store
    query_ids, vectors = _query_vectors(pipeline, object_store)
    table = vector_store.open_table()
    ann = load_ann_parameters(store)
    hits = search_table(table, vectors, settings.evaluation.top_k, settings.search, torch_device.torch_device, ann)
    frame = layout.rankings_frame({q: [(h["id"], h["score"]) for h in found] for q, found in zip(query_ids, hits)})
    uri, size = layout.put_parquet(store, layout.PROPONENTS, frame)
    return _result(uri, size, frame, {"table_version": int(table.version), "top_k": settings.evaluation.top_k,
                                      "search": f"ANN {ann.index}, nprobes={ann.nprobes}" if ann else "exact"})


@asset(group_name="evaluation", kinds={"parquet"}, deps=["corpus_shards", "queries"])
def bm25_proponents(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """The BM25 baseline's top-k per query (prompt + completion text against every registered shard, streamed:
    one pass for document frequencies, one scoring all queries per shard with a running top-k)."""
    from trackstar_pipeline.evaluation.bm25 import bm25_top_k, query_texts

    settings, store = pipeline.settings, object_store.store
    corpus = stored_corpus(store, registered_shards(context.instance))
    frame_q = layout.get_parquet(store, layout.QUERIES)
    top = bm25_top_k(corpus, frame_q["id"].to_list(),
                     query_texts(frame_q["prompt"].to_list(), frame_q["completion"].to_list()), settings.evaluation.top_k,
                     settings.evaluation.bm25_split_sentences)
    frame = layout.rankings_frame(top)
    uri, size = layout.put_parquet(store, layout.BM25_PROPONENTS, frame)
    return _result(uri, size, frame, {"corpus_shards": len(corpus.names), "top_k": settings.evaluation.top_k,
                                      "bm25_split_sentences": settings.evaluation.bm25_split_sentences})


@asset(group_name="evaluation", kinds={"html", "json"}, pool="gpu",
       deps=["proponents", "gradient_table", "query_gradients", "projected_gradients", "r_train", "r_eval",
             "curvature_inverse_sqrt", "corpus_shards", "queries", "model_checkpoint", "optimizer_state"])
def evaluation_report(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
                      vector_store: VectorStore, torch_device: TorchDevice) -> MaterializeResult:
    """MRR, Recall@10 and tail-patch for TrackStar (from the table), its ablations and baselines; report under reports/.

    The corpus streams shard by shard (memory flat in its size). The ablations that share the table's
    projection read the stored raw gradients and R_train / R_eval; only no-optimizer and the other d of
    the sweep take a new gradient pass.
    """
    from trackstar_pipeline.evaluation.evaluate import EvaluationInputs, evaluate
    from trackstar_pipeline.evaluation.report import headline_table
    from trackstar_pipeline.evaluation.scorers import PrecomputedScorer
    from trackstar_pipeline.evaluation.tailpatch import load_tailpatch_setup
    from trackstar_pipeline.training.recall import fact_recall

    settings, store, storage = pipeline.settings, object_store.store, object_store.storage_settings()
    corpus = stored_corpus(store, registered_shards(context.instance))
    queries_frame = layout.get_parquet(store, layout.QUERIES)
    model, tokenizer = load_checkpoint(store, storage, device=torch_device.torch_device)
    manifest = layout.get_json(store, layout.MODEL_MANIFEST)
    optimizer_path = (materialize_local(store.uri_for(manifest["optimizer_state_key"]), storage)
                      if manifest.get("optimizer_state_key") else None)
    try:
        tailpatch = load_tailpatch_setup(local_model_dir(store, storage), optimizer_path)
    except (FileNotFoundError, ValueError) as error:
        context.log.warning(f"tail-patch skipped: {error}")
        tailpatch = None
    table = vector_store.open_table()
    query_ids, vectors = _query_vectors(pipeline, object_store)
    table_scores = TableCandidateScores(table, dict(zip(query_ids, vectors)), settings.search, torch_device.torch_device)
    trackstar = PrecomputedScorer(layout.read_rankings(layout.get_parquet(store, layout.PROPONENTS)), candidates=table_scores)
    recall = fact_recall(model, tokenizer, queries_frame)
    curvature = layout.get_json(store, layout.CURVATURE_MANIFEST)
    moments = load_optimizer_moments(store, storage, model, settings.attribution.optimizer_correction)
    with tempfile.TemporaryDirectory() as scratch:
        inputs = EvaluationInputs(
            corpus, queries_frame, None, settings,
            gradients=load_table_gradients(store, storage), model=model, tokenizer=tokenizer,
            second_moments=moments, tailpatch=tailpatch, fact_correct=recall.correct, fact_recall=recall.accuracy,
            methods={"trackstar": trackstar}, model_info={"source": manifest["source"], "version": manifest["model_version"]},
            table_version=int(table.version), lambda_used=curvature.get("lambda_used"),
        )
        result = evaluate(inputs, Path(scratch), progress=context.log.info)
        store.upload_dir(Path(scratch), layout.REPORTS)
        plot = next((p for kind, p in result.files.items() if kind == "metrics_plot"), None)
        image = f"\n\n![metrics by method](data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()})" if plot else ""
    headline = headline_table(result.summary)
    return MaterializeResult(metadata={
        "uri": MetadataValue.url(store.uri_for(f"{layout.REPORTS}/report.md")),
        "explorer": MetadataValue.url(store.uri_for(f"{layout.REPORTS}/explorer.html")),
        "queries": result.summary["n_queries"], "corpus_rows": result.summary["n_corpus"],
        "fact_recall": result.summary["fact_recall"], "fact_recall_all_queries": result.summary["fact_recall_all_queries"],
        "table_version": int(table.version),
        "trackstar_mrr": result.summary["open_set"]["trackstar"]["mrr"],
        "report": MetadataValue.md(headline + image),
    })
