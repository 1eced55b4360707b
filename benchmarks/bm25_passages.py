"""BM25 over passage rows, whole against by their best sentence (evaluation.bm25_split_sentences), at 100k and 1M rows.

Run: python benchmarks/bm25_passages.py [--rows 100000 1000000] [--queries 200] [--shard-rows 10000] [--repeats 2]
                                        [--split N]   (default: evaluation.bm25_split_sentences)
                                        [--pronoun-share S]   (default 0)

Model-free. The corpus is generated shard by shard as it is read (nothing is written or held whole): rows of 1
to 6 sentences, each sentence 5-12 Zipf-distributed words with a capital first word and a period, so five
sixths of the rows have 2 or more sentences (two thirds 3 or more) and are split at --split. Each (rows,
split) pair runs in a fresh process, which does what evaluation's BM25 does: the statistics pass, then one
scoring pass over every shard for all queries with a running top-100. It reports its seconds and peak RSS
(VmHWM). The script prints, per size, the split mode's time over the whole-row mode's (the cost of sentence
splitting and of scoring more, shorter documents), and per mode the largest size's peak RSS over the
smallest's (memory flat in the corpus size: about 1).

With --pronoun-share S, that share of the sentences after a row's first open with "He" or "She" instead of a
capitalised word, as in a biography: split rows then score each such sentence after its anchors (the row's first
and last earlier sentences that name someone, training/sentences.py), which adds a pronoun search per sentence and
repeats the anchors' words once per pronoun sentence. At 0 the rows are the same as before the option existed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from scale import peak_rss_mib
from trackstar_pipeline.settings import EvaluationSettings

VOCABULARY = 20_000


def generated_passages(seed: int, count: int, pronoun_share: float = 0.0) -> list[str]:
    """count rows of 1-6 sentences of 5-12 Zipf words, reproducible from seed; pronoun_share of the sentences
    after a row's first open with a pronoun (their own random stream, so the words do not depend on it)."""
    rng = np.random.default_rng(seed)
    sentences_per_row = rng.integers(1, 7, count)
    lengths = rng.integers(5, 13, sentences_per_row.sum())
    words = np.minimum(rng.zipf(1.3, lengths.sum()), VOCABULARY) - 1
    bounds = np.cumsum(sentences_per_row)
    sentence_words = np.split(words, np.cumsum(lengths)[:-1])
    openers = np.array([f"W{row[0]}" for row in sentence_words], dtype=object)
    if pronoun_share > 0:
        later = np.ones(len(openers), dtype=bool)
        later[np.r_[0, bounds[:-1]]] = False  # a row's first sentence names its subject
        pronouns = np.random.default_rng([seed, 1]).random(len(openers)) < pronoun_share
        openers[later & pronouns] = np.where(np.random.default_rng([seed, 2]).random((later & pronouns).sum()) < 0.5,
                                             "He", "She")
    sentences = [f"{opener} " + " ".join(f"w{w}" for w in row[1:]) + "."
                 for opener, row in zip(openers, sentence_words)]
    return [" ".join(sentences[start:end]) for start, end in zip(np.r_[0, bounds[:-1]], bounds)]


def worker(rows: int, split_sentences: int, queries: int, shard_rows: int, pronoun_share: float) -> dict:
    """One measurement in this (fresh) process."""
    import polars as pl

    from trackstar_pipeline.evaluation.bm25 import bm25_top_k
    from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus

    starts = list(range(0, rows, shard_rows))
    names = [f"shard-{i:05d}" for i in range(len(starts))]

    def read(name: str, columns: list[str]) -> pl.DataFrame:
        index = int(name.split("-")[1])
        count = min(shard_rows, rows - starts[index])
        frame = pl.DataFrame({"id": [f"r{starts[index] + i:08d}" for i in range(count)],
                              "text": generated_passages(index, count, pronoun_share)})
        return frame.select([c for c in columns if c in frame.columns])

    query_texts = [" ".join(text.split()[:8]) for text in generated_passages(10**6, queries)]
    before = peak_rss_mib()
    started = time.perf_counter()
    top = bm25_top_k(ShardedCorpus(names, read), [f"q{i}" for i in range(queries)], query_texts, 100,
                     split_sentences)
    seconds = time.perf_counter() - started
    assert len(top) == queries and all(len(ranking) == 100 for ranking in top.values())
    return {"rows": rows, "split": split_sentences, "seconds": seconds, "peak_mib": peak_rss_mib(),
            "before_mib": before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--split", type=int, default=EvaluationSettings().bm25_split_sentences,
                        help="the sentence threshold compared with whole rows (0)")
    parser.add_argument("--pronoun-share", type=float, default=0.0,
                        help="share of a row's later sentences that open with He/She (0: none)")
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.queries, args.shard_rows,
                                args.pronoun_share)))
        return 0
    results: dict[tuple[int, int], list[dict]] = {}
    for repeat in range(args.repeats):
        for rows in args.rows:
            for split in (0, args.split):  # interleaved, so background load slows both modes alike
                out = subprocess.run([sys.executable, __file__, "--worker", str(rows), str(split), "--queries",
                                      str(args.queries), "--shard-rows", str(args.shard_rows),
                                      "--pronoun-share", str(args.pronoun_share)],
                                     check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                results.setdefault((rows, split), []).append(result)
                print(f"repeat {repeat + 1}: {rows:>9,} rows, split_sentences {split}: {result['seconds']:.1f} s, "
                      f"peak RSS {result['peak_mib']:.0f} MiB (before BM25 {result['before_mib']:.0f})", flush=True)
    best = {key: min(runs, key=lambda r: r["seconds"]) for key, runs in results.items()}
    for rows in args.rows:
        split, whole = best[(rows, args.split)]["seconds"], best[(rows, 0)]["seconds"]
        print(f"{rows:>9,} rows: split {args.split} / whole time {split / whole:.2f}x ({split:.1f} s / {whole:.1f} s, "
              f"best of {args.repeats})")
    small, large = min(args.rows), max(args.rows)
    for split in (0, args.split):
        peak = [max(r["peak_mib"] for r in results[(rows, split)]) for rows in (small, large)]
        print(f"split_sentences {split}: peak RSS at {large:,} rows / at {small:,} rows = {peak[1] / peak[0]:.2f} "
              f"({peak[1]:.0f} / {peak[0]:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
