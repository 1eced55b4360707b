"""Split the tokenized corpus into Parquet shards whose membership never depends on the run.

A shard is a Dagster partition, so a partition key must always mean the same examples: the
shard of an example is a pure function of its id (blake2b, never Python's salted hash()), and
jump consistent hashing (Lamping and Veach, 2014) means growing from n to n+1 shards moves
only about 1/(n+1) of the examples, while a fixed shard count never moves any.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Sequence

import polars as pl
from transformers import PreTrainedTokenizerBase

from trackstar_pipeline.storage import ObjectStore

SHARD_SCHEMA = {
    "id": pl.String,
    "text": pl.String,
    "token_ids": pl.List(pl.Int32),
    "facts": pl.List(pl.List(pl.String)),
}


@dataclass(frozen=True)
class ShardInfo:
    shard: int
    key: str
    uri: str
    rows: int


def _jump_consistent_hash(key: int, n_buckets: int) -> int:
    """Lamping-Veach jump hash: a bucket in [0, n_buckets) that rarely changes as n_buckets grows."""
    bucket, jump = -1, 0
    while jump < n_buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) % (1 << 64)
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_of(example_id: str, n_shards: int) -> int:
    """The shard index of an example: a function of its id and the shard count only."""
    if n_shards < 1:
        raise ValueError(f"n_shards={n_shards}; need at least one shard")
    digest = hashlib.blake2b(example_id.encode("utf-8"), digest_size=8).digest()
    return _jump_consistent_hash(int.from_bytes(digest, "big"), n_shards)


def n_shards_for(n_rows: int, shard_size: int) -> int:
    """How many shards hold n_rows at about shard_size rows each (at least one)."""
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}; need at least one row per shard")
    return max(1, math.ceil(n_rows / shard_size))


def shard_name(shard: int) -> str:
    """The partition key of a shard, zero-padded so keys sort in shard order."""
    return f"shard-{shard:05d}"


def tokenized_shard_frame(
    ids: Sequence[str], texts: Sequence[str], facts: Sequence[list] | None, tokenizer: PreTrainedTokenizerBase
) -> pl.DataFrame:
    """Rows (id, text, token_ids, facts); token ids are the text's tokens without special tokens."""
    token_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
    return pl.DataFrame(
        {
            "id": list(ids),
            "text": list(texts),
            "token_ids": token_ids,
            "facts": list(facts) if facts is not None else [[] for _ in ids],
        },
        schema=SHARD_SCHEMA,
    )


def write_shards(
    corpus: pl.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    store: ObjectStore,
    prefix: str,
    n_shards: int,
) -> list[ShardInfo]:
    """Tokenize the corpus and write one Parquet file per shard (empty shards too) under prefix."""
    assignment = [shard_of(example_id, n_shards) for example_id in corpus["id"].to_list()]
    with_shard = corpus.with_columns(pl.Series("_shard", assignment, dtype=pl.Int64))
    facts_present = "facts" in corpus.columns
    infos = []
    for shard in range(n_shards):
        part = with_shard.filter(pl.col("_shard") == shard)
        frame = tokenized_shard_frame(
            part["id"].to_list(), part["text"].to_list(), part["facts"].to_list() if facts_present else None, tokenizer
        )
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        key = f"{prefix.strip('/')}/{shard_name(shard)}.parquet"
        infos.append(ShardInfo(shard=shard, key=key, uri=store.put_bytes(key, buffer.getvalue()), rows=frame.height))
    return infos


def read_shard(store: ObjectStore, key: str) -> pl.DataFrame:
    """One shard's rows as written by write_shards."""
    return pl.read_parquet(io.BytesIO(store.get_bytes(key)))
