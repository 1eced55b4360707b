"""The corpus as named shards read one at a time: what evaluation streams instead of one whole-corpus frame.

A `ShardedCorpus` knows its shard names, how to read some columns of one shard, and (optionally)
the stored raw gradients of one shard. The asset reads the stored tokenized shards and gradient
files (storage/artifacts.py: stored_corpus); tests and small callers split a frame (`frame_shards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import torch

FACT_SEPARATOR = "\x1f"
"""Joins a fact's parts into one key (polars cannot join on list columns)."""


def worth_reporting(index: int, total: int) -> bool:
    """Whether shard `index` (0-based) of a pass ends one of its twentieths: about 20 progress lines per pass."""
    return (index + 1) % max(1, total // 20) == 0 or index + 1 == total


@dataclass(frozen=True)
class ShardedCorpus:
    """Named corpus shards; `read(shard, columns)` returns those columns of one shard, rows in corpus order."""

    names: Sequence[str]
    read: Callable[[str, Sequence[str]], pl.DataFrame]
    read_gradients: Callable[[str], tuple[list[str], np.ndarray]] | None = None
    """Shard -> (ids, raw gradients (n, d) float32) at the table's (d, correction); None: none stored."""

    def frames(self, columns: Sequence[str], progress: Callable[[str], None] | None = None,
               label: str = "pass") -> Iterator[pl.DataFrame]:
        """Each shard's given columns in shard order (one shard in memory at a time); `progress` hears about
        every twentieth of the pass."""
        for index, name in enumerate(self.names):
            yield self.read(name, columns)
            if progress is not None and worth_reporting(index, len(self.names)):
                progress(f"{label}: shard {index + 1}/{len(self.names)} done")

    def gradients(self, name: str, ids: Sequence[str]) -> torch.Tensor:
        """The shard's stored raw gradients (n, d) in the order of `ids`."""
        if self.read_gradients is None:
            raise ValueError("this corpus has no stored gradients; give read_gradients (or evaluate with a model)")
        stored_ids, vectors = self.read_gradients(name)  # (n, d)
        if list(stored_ids) != list(ids):
            row = {example_id: i for i, example_id in enumerate(stored_ids)}
            missing = [example_id for example_id in ids if example_id not in row]
            if missing:
                raise KeyError(f"shard {name}: no stored gradient for {len(missing)} rows, e.g. {missing[:3]}; "
                               "re-materialize projected_gradients for this shard")
            vectors = vectors[[row[example_id] for example_id in ids]]
        return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))  # (n, d)


def frame_shards(frame: pl.DataFrame, n_shards: int = 1, gradients: torch.Tensor | np.ndarray | None = None,
                 ) -> ShardedCorpus:
    """A small in-memory corpus (and its raw gradients, rows aligned) cut into n_shards contiguous shards."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if gradients is not None and len(gradients) != frame.height:
        raise ValueError(f"{len(gradients)} gradient rows for a corpus of {frame.height} rows")
    bounds = np.linspace(0, frame.height, n_shards + 1).astype(int)
    parts = {f"shard-{i:05d}": (int(start), int(end)) for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))}
    vectors = None if gradients is None else np.asarray(gradients, dtype=np.float32)

    def read(name: str, columns: Sequence[str]) -> pl.DataFrame:
        start, end = parts[name]
        return frame.slice(start, end - start).select([c for c in columns if c in frame.columns])

    def read_gradients(name: str) -> tuple[list[str], np.ndarray]:
        start, end = parts[name]
        return frame["id"].slice(start, end - start).to_list(), vectors[start:end]

    return ShardedCorpus(list(parts), read, None if vectors is None else read_gradients)


def rows_with_ids(corpus: ShardedCorpus, ids: Sequence[str] | set[str], columns: Sequence[str],
                  progress: Callable[[str], None] | None = None) -> pl.DataFrame:
    """The rows whose id is in `ids` (only those are kept while the shards stream past), in corpus order."""
    wanted = pl.Series(list(set(ids)), dtype=pl.String)
    columns = ["id", *[c for c in columns if c != "id"]]
    parts = [frame.filter(pl.col("id").is_in(wanted.implode()))
             for frame in corpus.frames(columns, progress, "text fetch")]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({c: [] for c in columns})


def fact_key(fact: Sequence[str] | None) -> str | None:
    """One string per fact (None for a missing one), the key ground truth joins on."""
    return None if fact is None else FACT_SEPARATOR.join(str(part) for part in fact)


def facts_by_row(frame: pl.DataFrame) -> pl.DataFrame:
    """(id, key, object) per fact of each row of one shard (rows without facts give none)."""
    if "facts" not in frame.columns:
        return pl.DataFrame(schema={"id": pl.String, "key": pl.String, "object": pl.String})
    exploded = frame.select("id", "facts").explode("facts").drop_nulls("facts")
    return exploded.select(
        "id", pl.col("facts").list.join(FACT_SEPARATOR).alias("key"),
        pl.when(pl.col("facts").list.len() == 3).then(pl.col("facts").list.get(2, null_on_oob=True)).alias("object"))


def streamed_ground_truth(corpus: ShardedCorpus, query_facts: Mapping[str, Sequence[str] | None],
                          progress: Callable[[str], None] | None = None) -> dict[str, list[str]]:
    """Query id -> ids of the corpus rows whose facts contain the query's fact, reading only the fact columns."""
    keys = {query_id: fact_key(fact) for query_id, fact in query_facts.items()}
    wanted = pl.Series([key for key in set(keys.values()) if key is not None], dtype=pl.String)
    rows_by_key: dict[str, list[str]] = {}
    for frame in corpus.frames(["id", "facts"], progress, "ground truth"):
        hits = facts_by_row(frame).filter(pl.col("key").is_in(wanted.implode())).unique(["id", "key"], maintain_order=True)
        for example_id, key in hits.select("id", "key").iter_rows():
            rows_by_key.setdefault(key, []).append(example_id)
    return {query_id: list(rows_by_key.get(key, [])) if key is not None else [] for query_id, key in keys.items()}


def rows_at_positions(corpus: ShardedCorpus, positions: Sequence[int], columns: Sequence[str]) -> pl.DataFrame:
    """The rows at the given corpus positions (0-based, shards in order), in the order of `positions`."""
    wanted = np.asarray(positions, dtype=np.int64)
    parts, offset = [], 0
    for frame in corpus.frames(columns):
        local = wanted[(wanted >= offset) & (wanted < offset + frame.height)] - offset
        if len(local):
            parts.append(frame[np.unique(local).tolist()].with_columns(
                (pl.Series("position", np.unique(local)) + offset)))
        offset += frame.height
    if not parts:
        return pl.DataFrame({c: [] for c in columns})
    found = pl.concat(parts, how="diagonal_relaxed")
    order = pl.DataFrame({"position": wanted}).with_row_index("order")
    return order.join(found, on="position").sort("order").drop("order", "position")


def count_rows(corpus: ShardedCorpus) -> int:
    """The corpus size (reads only the id column)."""
    return sum(frame.height for frame in corpus.frames(["id"]))
