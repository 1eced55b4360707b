"""Peak memory of the evaluation step against corpus size: the streamed evaluate() at --rows sizes.

Run: python benchmarks/evaluation_memory.py [--rows 100000 1000000] [--dim 1024] [--queries 200]
                                            [--shard-rows 10000] [--repeats 2] [--dir /tmp/trackstar_eval_memory]

Model-free, so it fits a CPU: synthetic stored shards (per shard a Parquet of id + a short text, and the
raw gradients as float32 (n, d) .npy, what projected_gradients stores), --queries query gradients with
R_train / R_eval in 8 module blocks. evaluate() then runs what the asset runs without a model: the
statistics pass (BM25 document frequencies), the closed-set candidate pass (BM25 top, same-completion
and random draws), the main pass (trackstar from the stored gradients, standing in for the table's,
no_curvature, no_unit_norm, r_train_only, bm25, random; then trackstar+bm25), the text fetch and the
report. Not measured: the new-pass ablations (no_optimizer, the d sweep), embed and tail-patch (they
need a model; their per-shard state is the same kind as the stored ablations'), and ground-truth
metrics (the synthetic rows state no facts).

Each size runs in a fresh process (interleaved --repeats times) that reports its peak RSS (VmHWM), the
RSS before evaluate() and the seconds; the script prints the ratio of the largest size to the smallest
(issue 10's target: <= 1.5). The data for the largest size is written once under --dir (1M x 1024
float32 is 4 GB) and deleted at the end; smaller sizes read its first shards.
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
import polars as pl
import torch

from scale import peak_rss_mib

VOCABULARY = 20_000
BLOCKS = 8


def synthetic_texts(rng: np.random.Generator, count: int) -> list[str]:
    """Short texts of 6-14 Zipf-distributed words (w0 most frequent), like a fact corpus's sentences."""
    lengths = rng.integers(6, 15, count)
    words = np.minimum(rng.zipf(1.3, lengths.sum()), VOCABULARY) - 1
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(f"w{w}" for w in row) for row in np.split(words, cuts)]


def write_data(path: Path, rows: int, shard_rows: int, dim: int, queries: int) -> None:
    """Shards shard-00000... of shard_rows rows (Parquet + .npy), then queries.parquet and queries.npy."""
    path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, start in enumerate(range(0, rows, shard_rows)):
        name = f"shard-{index:05d}"
        if (path / f"{name}.npy").exists():
            continue
        rng = np.random.default_rng(index)
        count = min(shard_rows, rows - start)
        ids = [f"e{i}" for i in range(start, start + count)]
        pl.DataFrame({"id": ids, "text": synthetic_texts(rng, count)}).write_parquet(path / f"{name}.parquet")
        np.save(path / f"{name}.npy", rng.standard_normal((count, dim), dtype=np.float32))  # (n, d)
    rng = np.random.default_rng(10**6)
    texts = synthetic_texts(rng, queries)
    prompts = [" ".join(text.split()[:-1]) for text in texts]
    pl.DataFrame({"id": [f"q{i}" for i in range(queries)], "prompt": prompts,
                  "completion": [" " + text.split()[-1] for text in texts], "fact": [None] * queries},
                 schema={"id": pl.String, "prompt": pl.String, "completion": pl.String, "fact": pl.List(pl.String)},
                 ).write_parquet(path / "queries.parquet")
    np.save(path / "queries.npy", rng.standard_normal((queries, dim), dtype=np.float32))  # (Q, d)
    print(f"data for {rows} rows x {dim} written in {time.perf_counter() - started:.0f} s", flush=True)


def worker(path: str, rows: int, shard_rows: int) -> dict:
    """evaluate() over the first `rows` rows in this (fresh) process: seconds and peak RSS."""
    import tempfile

    from trackstar_pipeline.attribution.curvature import sampled_curvature_moments
    from trackstar_pipeline.evaluation.ablations import GradientSource
    from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus
    from trackstar_pipeline.evaluation.evaluate import EvaluationInputs, evaluate
    from trackstar_pipeline.settings import load_settings

    torch.set_num_threads(2)
    folder = Path(path)
    names = [f"shard-{i:05d}" for i in range(rows // shard_rows)]

    def read(name: str, columns) -> pl.DataFrame:
        return pl.read_parquet(folder / f"{name}.parquet", columns=[c for c in columns if c in ("id", "text")])

    def read_gradients(name: str) -> tuple[list[str], np.ndarray]:
        return read(name, ["id"])["id"].to_list(), np.load(folder / f"{name}.npy")  # (n, d)

    queries = pl.read_parquet(folder / "queries.parquet")
    query_gradients = torch.from_numpy(np.load(folder / "queries.npy"))  # (Q, d)
    dim = query_gradients.shape[1]
    settings = load_settings(overrides={"attribution.projection_dim": dim, "evaluation.max_eval_queries": 0,
                                        "evaluation.projection_dim_sweep": []})
    sample = torch.from_numpy(np.load(folder / "shard-00000.npy")[:settings.attribution.curvature_train_samples])
    r_train, r_eval = sampled_curvature_moments(sample, query_gradients, settings.attribution,
                                                block_sizes=[dim // BLOCKS] * BLOCKS)
    gradients = GradientSource(queries["id"].to_list(), query_gradients, r_train, r_eval)
    corpus = ShardedCorpus(names, read, read_gradients)
    before = peak_rss_mib()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = evaluate(EvaluationInputs(corpus, queries, None, settings, gradients=gradients), out,
                          progress=lambda line: None)
    return {"rows": result.summary["n_corpus"], "seconds": time.perf_counter() - started,
            "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(), "methods": len(result.summary["methods"])}


def measure(path: Path, rows: int, shard_rows: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--worker", str(path), str(rows), str(shard_rows)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/trackstar_eval_memory"))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic data (default: delete it)")
    args = parser.parse_args()
    if any(rows % args.shard_rows for rows in args.rows):
        parser.error(f"every --rows must be a multiple of --shard-rows ({args.shard_rows})")
    try:
        write_data(args.dir, max(args.rows), args.shard_rows, args.dim, args.queries)
        results: dict[int, list[dict]] = {rows: [] for rows in args.rows}
        for repeat in range(args.repeats):
            for rows in args.rows:
                found = measure(args.dir, rows, args.shard_rows)
                results[rows].append(found)
                print(f"repeat {repeat + 1}: {rows} rows: peak RSS {found['peak_rss_mib']:.0f} MiB "
                      f"(before evaluate {found['rss_before_mib']:.0f} MiB), {found['seconds']:.0f} s, "
                      f"{found['methods']} methods", flush=True)
        small, large = min(args.rows), max(args.rows)
        ratios = [b["peak_rss_mib"] / a["peak_rss_mib"] for a, b in zip(results[small], results[large])]
        print(f"peak RSS {large} / {small} rows, per repeat: " + ", ".join(f"{r:.2f}" for r in ratios)
              + " (target <= 1.5)")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
