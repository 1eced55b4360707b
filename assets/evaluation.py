"""Proponents per query (TrackStar from the LanceDB table; BM25 baseline) and the evaluation report."""

import polars as pl
import torch
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from trackstar_pipeline.assets import layout
from trackstar_pipeline.assets.loading import load_inverse_sqrt
from trackstar_pipeline.assets.preview import markdown_table
from trackstar_pipeline.assets.search import search_table
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, VectorStore


def rankings_frame(rankings: dict[str, list[tuple[str, float]]]) -> pl.DataFrame:
    """Long form (query_id, rank, example_id, score) of per-query rankings."""
    rows = [(query_id, rank, example_id, float(score))
            for query_id, ranking in rankings.items() for rank, (example_id, score) in enumerate(ranking, start=1)]
    return pl.DataFrame(rows, schema={"query_id": pl.String, "rank": pl.Int32, "example_id": pl.String, "score": pl.Float64},
                        orient="row")


def read_rankings(frame: pl.DataFrame) -> dict[str, list[tuple[str, float]]]:
    """Inverse of rankings_frame (ranks kept in order)."""
    rankings: dict[str, list[tuple[str, float]]] = {}
    for query_id, _, example_id, score in frame.sort("query_id", "rank").iter_rows():
        rankings.setdefault(query_id, []).append((example_id, score))
    return rankings


def _result(uri: str, size: int, frame: pl.DataFrame, extra: dict) -> MaterializeResult:
    return MaterializeResult(metadata={"uri": MetadataValue.url(uri), "bytes": size, "rows": frame.height,
                                       "queries": frame["query_id"].n_unique() if frame.height else 0, **extra,
                                       "preview": MetadataValue.md(markdown_table(frame.filter(pl.col("rank") <= 3), rows=9))})


@asset(group_name="evaluation", kinds={"lancedb", "parquet"}, deps=["gradient_table", "gradient_index", "query_gradients", "curvature_inverse_sqrt"])
def proponents(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
               vector_store: VectorStore) -> MaterializeResult:
    """Top-k training examples per query: unit-norm R^{-1/2} g of the query searched (exactly) in the table."""
    from trackstar_pipeline.attribution.scoring import prepare_vectors

    settings, store = pipeline.settings, object_store.store
    query_ids, gradients = layout.get_vectors(store, layout.QUERY_GRADIENTS)  # (Q, d)
    inverse = load_inverse_sqrt(store, object_store.storage_settings())
    vectors = prepare_vectors(torch.from_numpy(gradients), inverse, settings.attribution.unit_normalize).numpy()  # (Q, d)
    table = vector_store.open_table()
    hits = search_table(table, vectors, settings.evaluation.top_k, exact=True)
    frame = rankings_frame({q: [(h["id"], h["score"]) for h in found] for q, found in zip(query_ids, hits)})
    uri, size = layout.put_parquet(store, layout.PROPONENTS, frame)
    return _result(uri, size, frame, {"table_version": int(table.version), "top_k": settings.evaluation.top_k})


@asset(group_name="evaluation", kinds={"parquet"}, deps=["corpus_shards", "queries"])
def bm25_proponents(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """The BM25 baseline's top-k per query (prompt + completion text against every registered shard)."""
    from trackstar_pipeline.evaluation.bm25 import bm25_scorer, query_texts

    settings, store = pipeline.settings, object_store.store
    shards = sorted(context.instance.get_dynamic_partitions("corpus_shards"))
    corpus = pl.concat([layout.get_parquet(store, layout.tokenized_shard_key(s)).select("example_id", "text") for s in shards])
    frame_q = layout.get_parquet(store, layout.QUERIES)
    scorer = bm25_scorer(corpus["example_id"].to_list(), corpus["text"].to_list(), frame_q["id"].to_list(),
                         query_texts(frame_q["prompt"].to_list(), frame_q["completion"].to_list()))
    frame = rankings_frame(scorer.top_k(settings.evaluation.top_k))
    uri, size = layout.put_parquet(store, layout.BM25_PROPONENTS, frame)
    return _result(uri, size, frame, {"corpus_rows": corpus.height, "top_k": settings.evaluation.top_k})
