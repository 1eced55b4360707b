"""Where the corpus and queries come from: the user's files (both) or the embedded world (neither)."""

import pytest

from trackstar_pipeline.storage.artifacts import load_sources, split_into_shards
from trackstar_pipeline.data.records import write_records
from trackstar_pipeline.data.world import generate_fact_world
from trackstar_pipeline.settings import DataSettings


def test_user_files_are_loaded_and_split_stably(tmp_path):
    corpus, queries = generate_fact_world(40, 5, seed=3)
    write_records(corpus, str(tmp_path / "corpus.jsonl"))
    write_records(queries, str(tmp_path / "queries.parquet"))
    data = DataSettings(corpus_uri=str(tmp_path / "corpus.jsonl"), queries_uri=str(tmp_path / "queries.parquet"), shard_size=15)
    loaded_corpus, loaded_queries, skipped = load_sources(data)
    assert loaded_corpus["id"].to_list() == corpus["id"].to_list() and skipped == []
    assert loaded_queries["completion"].to_list() == queries["completion"].to_list()
    shards = split_into_shards(loaded_corpus, data.shard_size)
    assert list(shards) == ["shard-00000", "shard-00001", "shard-00002"]
    assert sorted(i for frame in shards.values() for i in frame["id"]) == sorted(corpus["id"])
    assert {k: v["id"].to_list() for k, v in split_into_shards(loaded_corpus.reverse(), 15).items()} == \
        {k: sorted(v["id"].to_list(), reverse=True) for k, v in shards.items()}


def test_corpus_without_queries_is_refused(tmp_path):
    with pytest.raises(ValueError, match="data.corpus_uri is set but data.queries_uri is not"):
        load_sources(DataSettings(corpus_uri=str(tmp_path / "corpus.jsonl")))


def test_generated_world_is_chosen_by_settings():
    from trackstar_pipeline.data.world_generator import generate_world

    corpus, queries, skipped = load_sources(DataSettings(world="generated", world_seed=7, n_corpus=300, n_queries=20))
    expected_corpus, expected_queries = generate_world(7, 300, 20)
    assert corpus.equals(expected_corpus) and queries.equals(expected_queries) and skipped == []
