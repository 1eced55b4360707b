"""Does bfloat16 collection change attribution? float32 vs bfloat16 TrackStar on a trained run's store.

Run: python benchmarks/precision_quality.py --store ./.trackstar [--queries 200] [--corpus 0]

Reads what `trackstar run` wrote under --store (corpus, queries, model checkpoint, optimizer state),
then for precision float32 and bfloat16 in turn computes the full TrackStar score with the default
attribution settings: factored-optimizer-corrected projected gradients of the corpus and the queries
(`collect_gradients`), R^{-1/2} from them (`inverse_sqrt_from_gradients`), unit norm, dot products.
Prints each precision's collection time, the per-example cosine between the two precisions' raw
vectors, the top-10 proponent overlap per query, and MRR / recall@10 against the fact ground truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from trackstar_pipeline.attribution.curvature import inverse_sqrt_from_gradients
from trackstar_pipeline.attribution.examples import encode_corpus, encode_queries
from trackstar_pipeline.attribution.gradients import collect_gradients, module_dims
from trackstar_pipeline.attribution.scoring import prepare_vectors
from trackstar_pipeline.data.records import ground_truth
from trackstar_pipeline.evaluation.metrics import mrr, recall_at_k
from trackstar_pipeline.settings import AttributionSettings, StorageSettings
from trackstar_pipeline.storage import ObjectStore, layout
from trackstar_pipeline.storage.artifacts import load_checkpoint, load_optimizer_moments

PRECISIONS = ("float32", "bfloat16")
TOP = 100  # proponents ranked per query for MRR (the evaluation's top_k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".trackstar"), help="a `trackstar run` store folder")
    parser.add_argument("--queries", type=int, default=200, help="first N queries (0: all)")
    parser.add_argument("--corpus", type=int, default=0, help="first N corpus rows (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    storage = StorageSettings(uri=f"file://{args.store.resolve()}")
    store = ObjectStore(storage)
    corpus = layout.get_parquet(store, layout.CORPUS_SOURCE)
    queries = layout.get_parquet(store, layout.QUERIES)
    corpus = corpus.head(args.corpus) if args.corpus else corpus
    queries = queries.head(args.queries) if args.queries else queries
    model, tokenizer = load_checkpoint(store, storage)
    base = AttributionSettings(device="cpu")
    moments = load_optimizer_moments(store, storage, model, base.optimizer_correction)
    context = model.config.max_position_embeddings
    corpus_examples = encode_corpus(corpus["id"].to_list(), corpus["text"].to_list(), tokenizer, context,
                                    "truncate").examples
    query_examples = encode_queries(queries["id"].to_list(), queries["prompt"].to_list(),
                                    queries["completion"].to_list(), tokenizer, context, "truncate").examples
    truth = ground_truth(corpus, queries)
    print(f"store {args.store}: {len(corpus_examples)} corpus rows, {len(query_examples)} queries, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, d={base.projection_dim}, "
          f"{torch.get_num_threads()} threads")

    raw, top10, metrics = {}, {}, {}
    corpus_ids = corpus["id"].to_list()
    for name in PRECISIONS:
        settings = dataclasses.replace(base, precision=name)
        start = time.perf_counter()
        query_vectors = collect_gradients(model, query_examples, settings, moments)  # (Q, d)
        corpus_vectors = collect_gradients(model, corpus_examples, settings, moments)  # (N, d)
        seconds = time.perf_counter() - start
        raw[name] = torch.cat([query_vectors, corpus_vectors])  # (Q + N, d)
        inverse, _ = inverse_sqrt_from_gradients(corpus_vectors, query_vectors, settings,
                                                 block_sizes=module_dims(model, settings))
        scores = (prepare_vectors(query_vectors, inverse, True) @ prepare_vectors(corpus_vectors, inverse, True).T)
        values, indices = scores.topk(TOP, dim=1)  # (Q, TOP)
        rankings = {query_id: [(corpus_ids[i], float(v)) for i, v in zip(row_indices.tolist(), row_values.tolist())]
                    for query_id, row_indices, row_values in zip(queries["id"].to_list(), indices, values)}
        top10[name] = [set(row[:10].tolist()) for row in indices]
        metrics[name] = (mrr(rankings, truth), recall_at_k(rankings, truth, 10))
        print(f"{name:9s}: collection {seconds:6.1f} s ({len(raw[name]) / seconds:.1f} examples/s); "
              f"MRR {metrics[name][0].value:.4f}, recall@10 {metrics[name][1].value:.4f} "
              f"over {metrics[name][0].n_queries} queries with ground truth")
    cosines = torch.nn.functional.cosine_similarity(raw["float32"], raw["bfloat16"], dim=1)
    overlaps = torch.tensor([len(a & b) for a, b in zip(top10["float32"], top10["bfloat16"])], dtype=torch.float)
    print(f"raw vectors float32 vs bfloat16: per-example cosine min {cosines.min():.5f}, mean {cosines.mean():.5f}")
    print(f"top-10 proponent overlap (of 10): mean {overlaps.mean():.2f}, min {overlaps.min():.0f}, "
          f"queries with all 10 equal {(overlaps == 10).float().mean():.1%}")
    print(f"MRR bfloat16 - float32: {metrics['bfloat16'][0].value - metrics['float32'][0].value:+.4f}; "
          f"recall@10: {metrics['bfloat16'][1].value - metrics['float32'][1].value:+.4f}")


if __name__ == "__main__":
    main()
