"""Shard membership is a pure function of the example id, and shards round-trip through storage."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from trackstar_pipeline.data.shards import (
    _jump_consistent_hash,
    n_shards_for,
    read_shard,
    shard_name,
    shard_of,
    write_shards,
)
from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer
from trackstar_pipeline.data.world import generate_fact_world
from trackstar_pipeline.storage import ObjectStore

IDS = [f"c{i:06d}" for i in range(2000)]


def test_same_ids_same_shards_in_a_fresh_interpreter() -> None:
    """Stable across processes: Python's salted hash() would fail this."""
    here = [shard_of(example_id, 7) for example_id in IDS[:50]]
    code = "from trackstar_pipeline.data.shards import shard_of; print([shard_of(f'c{i:06d}', 7) for i in range(50)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(here) == there.strip()


def test_adding_rows_never_moves_existing_ones() -> None:
    before = {example_id: shard_of(example_id, 5) for example_id in IDS[:1000]}
    after = {example_id: shard_of(example_id, 5) for example_id in IDS}
    assert all(after[example_id] == shard for example_id, shard in before.items())


def test_growing_the_shard_count_moves_few_rows_and_only_to_the_new_shard() -> None:
    moved = [(shard_of(i, 8), shard_of(i, 9)) for i in IDS]
    changed = [(old, new) for old, new in moved if old != new]
    assert all(new == 8 for _, new in changed)
    assert 0 < len(changed) < 2 * len(IDS) / 9


def test_assignment_is_balanced_and_matches_the_reference_formula() -> None:
    counts = pl.Series([shard_of(i, 4) for i in IDS]).value_counts()["count"].to_list()
    assert min(counts) > 400 and max(counts) < 600
    key = int.from_bytes(hashlib.blake2b(b"c000000", digest_size=8).digest(), "big")
    assert shard_of("c000000", 4) == _jump_consistent_hash(key, 4)
    assert [_jump_consistent_hash(k, 1) for k in range(5)] == [0] * 5
    with pytest.raises(ValueError, match="at least one shard"):
        shard_of("x", 0)


def test_n_shards_for_and_names() -> None:
    assert n_shards_for(5000, 1000) == 5 and n_shards_for(5001, 1000) == 6 and n_shards_for(0, 10) == 1
    assert shard_name(3) == "shard-00003"


def test_write_shards_round_trips_token_ids_and_text(tmp_path: Path) -> None:
    corpus, _ = generate_fact_world(200, 10, seed=0)
    tokenizer = train_bpe_tokenizer(corpus["text"].to_list(), 400)
    store = ObjectStore.from_uri(f"file://{tmp_path}")
    infos = write_shards(corpus, tokenizer, store, "corpus_shards", n_shards=3)
    assert [info.shard for info in infos] == [0, 1, 2] and sum(info.rows for info in infos) == 200
    frames = [read_shard(store, info.key) for info in infos]
    for info, frame in zip(infos, frames):
        assert frame.columns == ["id", "text", "token_ids", "facts"]
        assert all(shard_of(example_id, 3) == info.shard for example_id in frame["id"].to_list())
        for text, token_ids in zip(frame["text"].to_list(), frame["token_ids"].to_list()):
            assert tokenizer.decode(token_ids) == " " + text  # the tokenizer's prefix space comes back
    merged = pl.concat(frames).sort("id")
    assert merged["id"].to_list() == sorted(corpus["id"].to_list())
    assert merged.select("id", "facts").equals(corpus.sort("id").select("id", "facts"))
