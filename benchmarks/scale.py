"""Proponent search at scale: batched exact search vs a per-query table scan, the IVF index, and peak memory.

Run: python benchmarks/scale.py [--rows 100000 1000000] [--dim 4096] [--queries 500] [--dir /tmp/trackstar_scale]

A synthetic gradient table (unit float16 vectors around 1024 random directions, as gradients of related
examples cluster) is written under --dir, grown to each size in --rows in turn, and deleted at the end
(1M x 4096 is 8 GB). At each size, interleaved --repeats times, fresh subprocesses time:
  scan:       today's baseline, one LanceDB flat scan per query (`bypass_vector_index`), on --scan-queries
              queries (per-query time, so it extrapolates to all of them);
  exact:      `table_search.exact_top_k` with all --queries at once (streamed Arrow batches, running top-k);
  candidates: `table_search.score_candidate_sets`, evaluation's closed set (200 queries x 300 candidates);
and report per-query seconds, the ratio scan / exact, and each process's peak RSS (VmHWM). At the sizes in
--ann-rows it builds the IVF index (--ann-index), tunes nprobes to recall@10 >= 0.95 on 50 queries
(ann_index.tune_nprobes, as gradient_index does), and reports build time, recall and latency per query.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trackstar_pipeline.settings import SearchSettings

CHUNK = 50_000
CENTERS = 1024
K = 10


def synthetic_rows(start: int, stop: int, dim: int) -> np.ndarray:
    """Rows start..stop of the table, reproducible per chunk: unit(center + noise) as float16, (n, d)."""
    centers = np.random.default_rng(0).standard_normal((CENTERS, dim)).astype(np.float32)  # (C, d)
    rng = np.random.default_rng(1 + start)
    rows = centers[rng.integers(0, CENTERS, stop - start)] + 1.5 * rng.standard_normal((stop - start, dim), np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)  # (n, d)


def query_vectors(count: int, dim: int) -> np.ndarray:
    """Queries drawn like the rows (seeded apart from them): (Q, d) float32."""
    return synthetic_rows(10**9, 10**9 + count, dim).astype(np.float32)


def grow_table(path: Path, rows: int, dim: int) -> None:
    """Append synthetic rows until the table holds `rows` (one add per 50k rows)."""
    from trackstar_pipeline.storage.vector_table import table_rows
    from trackstar_pipeline.resources import VectorStore

    store = VectorStore(uri=str(path))
    have = store.open_table().count_rows() if (path / "gradients.lance").exists() else 0
    started = time.perf_counter()
    for start in range(have, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        ids = [f"e{i}" for i in range(start, stop)]
        data = table_rows(ids, f"s{start // CHUNK}", [f"text {i}" for i in range(start, stop)],
                          synthetic_rows(start, stop, dim))
        store.open_or_create_table(data.schema)[0].add(data)
    print(f"table grown {have} -> {rows} rows x {dim} in {time.perf_counter() - started:.0f} s", flush=True)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(mode: str, path: str, queries_path: str, count: int, batch_rows: int) -> dict:
    """One measurement in this (fresh) process: seconds per query and the process's peak RSS."""
    from trackstar_pipeline.attribution.table_search import exact_top_k, score_candidate_sets
    from trackstar_pipeline.resources import VectorStore

    torch.set_num_threads(2)
    table = VectorStore(uri=path).open_table()
    queries = np.load(queries_path)[:count]  # (Q, d)
    search = SearchSettings(batch_rows=batch_rows)
    started = time.perf_counter()
    if mode == "scan":  # the previous search_table: one flat scan of the table per query
        for vector in queries:
            table.search(vector).metric("dot").select(["example_id", "_distance"]).limit(K).bypass_vector_index().to_arrow()
    elif mode == "exact":
        exact_top_k(table, torch.from_numpy(queries), K, search)
    else:  # closed-set candidates: 300 random row ids per query
        rows = table.count_rows()
        rng = np.random.default_rng(0)
        candidates = {f"q{q}": [f"e{i}" for i in rng.choice(rows, 300, replace=False)] for q in range(len(queries))}
        score_candidate_sets(table, {f"q{q}": v for q, v in enumerate(queries)}, candidates, search)
    seconds = time.perf_counter() - started
    return {"seconds_per_query": seconds / len(queries), "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def measure(mode: str, path: Path, queries_path: Path, count: int, batch_rows: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--worker", mode, str(path), str(queries_path), str(count),
                             str(batch_rows)], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def ann(path: Path, queries: np.ndarray, index: str, partition_rows: int) -> dict:
    """Build the IVF index, tune nprobes to recall@10 >= 0.95 on 50 queries, time single and batched queries."""
    from trackstar_pipeline.attribution import ann_index
    from trackstar_pipeline.attribution.table_search import ann_top_k
    from trackstar_pipeline.resources import VectorStore

    table = VectorStore(uri=str(path)).open_table()
    rows, dim = table.count_rows(), table.schema.field("vector").type.list_size
    search = SearchSettings(ann_index=index, ann_partition_rows=partition_rows)
    config, description = ann_index.index_config(search, rows, dim, ann_index.index_accelerator())
    started = time.perf_counter()
    table.create_index("vector", config=config, replace=True)
    build = time.perf_counter() - started
    print(f"  {description} built in {build:.0f} s", flush=True)
    probe = torch.from_numpy(queries[:50])
    chosen, sweep = ann_index.tune_nprobes(table, probe, config.num_partitions, search, description,
                                           progress=lambda line: print("  " + line, flush=True))
    started = time.perf_counter()
    for vector in probe[:20]:
        ann_top_k(table, vector[None], K, chosen)
    single = (time.perf_counter() - started) / 20
    started = time.perf_counter()
    ann_top_k(table, torch.from_numpy(queries), K, chosen)
    batched = (time.perf_counter() - started) / len(queries)
    for name in [i.name for i in table.list_indices() if i.columns == ["vector"]]:
        table.drop_index(name)
    return {"index": description, "build_seconds": build, "nprobes": chosen.nprobes, "recall_at_10": chosen.recall,
            "refine_factor": chosen.refine_factor, "single_query_seconds": single, "batched_seconds_per_query": batched,
            "sweep": sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--scan-queries", type=int, default=3, help="queries timed for the per-query scan")
    parser.add_argument("--candidate-queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=SearchSettings().batch_rows)
    parser.add_argument("--ann-rows", type=int, nargs="*", default=[100_000], help="sizes at which to build the index")
    parser.add_argument("--ann-index", choices=["ivf_flat", "ivf_pq"], default="ivf_flat")
    parser.add_argument("--partition-rows", type=int, default=SearchSettings().ann_partition_rows)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/trackstar_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the table afterwards")
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    path, queries_path = args.dir / "lancedb", args.dir / "queries.npy"
    queries = query_vectors(args.queries, args.dim)
    np.save(queries_path, queries)
    results = {}
    try:
        for rows in sorted(args.rows):
            grow_table(path, rows, args.dim)
            runs = []
            for repeat in range(args.repeats):  # interleaved, so background load hits every mode alike
                run = {"scan": measure("scan", path, queries_path, args.scan_queries, args.batch_rows),
                       "exact": measure("exact", path, queries_path, args.queries, args.batch_rows),
                       "candidates": measure("candidates", path, queries_path, args.candidate_queries, args.batch_rows)}
                run["ratio"] = run["scan"]["seconds_per_query"] / run["exact"]["seconds_per_query"]
                print(f"{rows} rows, repeat {repeat + 1}: scan {run['scan']['seconds_per_query']:.3f} s/query, "
                      f"exact batched {run['exact']['seconds_per_query']:.4f} s/query ({args.queries} queries), "
                      f"ratio {run['ratio']:.1f}x; candidates {run['candidates']['seconds']:.1f} s; peak RSS MiB "
                      f"scan {run['scan']['peak_rss_mib']:.0f} exact {run['exact']['peak_rss_mib']:.0f} "
                      f"candidates {run['candidates']['peak_rss_mib']:.0f}", flush=True)
                runs.append(run)
            results[rows] = {"runs": runs}
            if rows in args.ann_rows:
                results[rows]["ann"] = ann(path, queries, args.ann_index, args.partition_rows)
                print(f"  ANN: {json.dumps({k: v for k, v in results[rows]['ann'].items() if k != 'sweep'})}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    sizes = sorted(results)
    if len(sizes) > 1:
        small, large = results[sizes[0]]["runs"], results[sizes[-1]]["runs"]
        for mode in ("exact", "candidates"):
            ratio = max(r[mode]["peak_rss_mib"] for r in large) / max(r[mode]["peak_rss_mib"] for r in small)
            print(f"peak RSS of {mode} at {sizes[-1]} rows / at {sizes[0]} rows: {ratio:.2f}")
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))))
    else:
        main()
