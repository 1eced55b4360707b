"""Loaders: good files load in both formats; every kind of bad record is reported with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from trackstar_pipeline.data.records import (
    InvalidRecordsError,
    LoadedRecords,
    ground_truth,
    load_corpus,
    load_queries,
    write_records,
)

GOOD_CORPUS = [
    {"id": "a", "text": "Ann was born in Rome.", "facts": [["Ann", "born_in", "Rome"]]},
    {"id": "b", "text": "Nothing happened."},
    {"id": "c", "text": "Ann lives in Oslo, and Bo was born in Rome.",
     "facts": [["Ann", "lives_in", "Oslo"], ["Bo", "born_in", "Rome"]]},
]
GOOD_QUERIES = [
    {"id": "q1", "prompt": "Ann was born in", "completion": " Rome", "fact": ["Ann", "born_in", "Rome"]},
    {"id": "q2", "prompt": "Zed likes", "completion": " tea"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_good_corpus_jsonl_loads_with_canonical_columns(tmp_path: Path) -> None:
    loaded = load_corpus(str(write_jsonl(tmp_path / "corpus.jsonl", GOOD_CORPUS)))
    assert isinstance(loaded, LoadedRecords)
    assert loaded.skipped == []
    assert loaded.frame.columns == ["id", "text", "facts"]
    assert loaded.frame["id"].to_list() == ["a", "b", "c"]
    assert loaded.frame["facts"].to_list()[1] == []
    assert loaded.frame["facts"].to_list()[2][1] == ["Bo", "born_in", "Rome"]


def test_good_queries_load_and_missing_fact_is_null(tmp_path: Path) -> None:
    loaded = load_queries(f"file://{write_jsonl(tmp_path / 'queries.jsonl', GOOD_QUERIES)}")
    assert loaded.frame.columns == ["id", "prompt", "completion", "fact"]
    assert loaded.frame["fact"].to_list() == [["Ann", "born_in", "Rome"], None]
    assert loaded.frame["completion"].to_list() == [" Rome", " tea"]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_write_then_load_round_trips(tmp_path: Path, suffix: str) -> None:
    corpus = load_corpus(str(write_jsonl(tmp_path / "in.jsonl", GOOD_CORPUS))).frame
    queries = load_queries(str(write_jsonl(tmp_path / "q.jsonl", GOOD_QUERIES))).frame
    write_records(corpus, str(tmp_path / f"out/corpus.{suffix}"))
    write_records(queries, str(tmp_path / f"out/queries.{suffix}"))
    assert load_corpus(str(tmp_path / f"out/corpus.{suffix}")).frame.equals(corpus)
    assert load_queries(str(tmp_path / f"out/queries.{suffix}")).frame.equals(queries)


BAD_CORPUS_CASES = [
    ({"text": "no id"}, "'id' is missing"),
    ({"id": "", "text": "empty id"}, "'id' is missing or empty"),
    ({"id": "a", "text": "again"}, "duplicate id 'a' (first seen at line 1)"),
    ({"id": "x"}, "'text' is missing"),
    ({"id": "x", "text": "   "}, "'text' is empty"),
    ({"id": "x", "text": 3}, "'text' must be a string"),
    ({"id": "x", "text": "t", "facts": [["Ann", "born_in"]]}, "malformed fact"),
    ({"id": "x", "text": "t", "facts": [["Ann", "", "Rome"]]}, "malformed fact"),
    ({"id": "x", "text": "t", "facts": "Ann born_in Rome"}, "malformed 'facts'"),
    ('{"id": "x", "text": ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("bad, message", BAD_CORPUS_CASES)
def test_each_bad_corpus_record_is_rejected_with_file_and_line(tmp_path: Path, bad, message: str) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [GOOD_CORPUS[0], bad, GOOD_CORPUS[1]])
    with pytest.raises(InvalidRecordsError) as caught:
        load_corpus(str(path))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:2: ")
    assert message in caught.value.problems[0]
    assert "bad_records: skip" in str(caught.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "q", "completion": " x"}, "'prompt' is missing"),
        ({"id": "q", "prompt": "p", "completion": ""}, "'completion' is empty"),
        ({"id": "q", "prompt": "", "completion": " x"}, "'prompt' is empty"),
        ({"id": "q", "prompt": "p", "completion": " x", "fact": ["a", "b"]}, "malformed fact in 'fact'"),
        ({"id": "q1", "prompt": "p", "completion": " x"}, "duplicate id 'q1'"),
    ],
)
def test_each_bad_query_record_is_rejected_with_file_and_line(tmp_path: Path, bad, message: str) -> None:
    path = write_jsonl(tmp_path / "queries.jsonl", [GOOD_QUERIES[0], bad])
    with pytest.raises(InvalidRecordsError) as caught:
        load_queries(str(path))
    assert caught.value.problems == [caught.value.problems[0]]
    assert caught.value.problems[0].startswith(f"{path}:2: ") and message in caught.value.problems[0]


def test_reject_lists_every_bad_record_and_skip_counts_them(tmp_path: Path) -> None:
    rows = [GOOD_CORPUS[0], {"id": "x"}, "", GOOD_CORPUS[1], "not json", {"id": "a", "text": "dup"}]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(InvalidRecordsError) as caught:
        load_corpus(str(path))
    lines = [problem.split(": ")[0] for problem in caught.value.problems]
    assert lines == [f"{path}:2", f"{path}:5", f"{path}:6"]  # the blank line 3 is not a record
    for line in lines:
        assert line in str(caught.value)

    loaded = load_corpus(str(path), on_bad_record="skip")
    assert loaded.frame["id"].to_list() == ["a", "b"]
    assert loaded.skipped == caught.value.problems


def test_parquet_bad_rows_are_reported_by_row_number(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": ["a", "b", "a"], "text": ["one", "", "three"]})
    path = tmp_path / "corpus.parquet"
    frame.write_parquet(path)
    with pytest.raises(InvalidRecordsError) as caught:
        load_corpus(str(path))
    assert [p.split(": ")[0] for p in caught.value.problems] == [f"{path}:2", f"{path}:3"]
    assert "'text' is empty" in caught.value.problems[0] and "duplicate id 'a'" in caught.value.problems[1]


def test_empty_file_and_all_bad_under_skip_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InvalidRecordsError, match="holds no records"):
        load_corpus(str(empty))
    all_bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x"}])
    with pytest.raises(InvalidRecordsError, match="no valid records left"):
        load_corpus(str(all_bad), on_bad_record="skip")


def test_unknown_suffix_and_missing_file_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"corpus\.csv: unknown file type"):
        load_corpus(str(tmp_path / "corpus.csv"))
    with pytest.raises(Exception, match="missing.jsonl"):
        load_corpus(str(tmp_path / "missing.jsonl"))


def test_ground_truth_maps_each_query_to_rows_stating_its_fact(tmp_path: Path) -> None:
    corpus = load_corpus(str(write_jsonl(tmp_path / "c.jsonl", GOOD_CORPUS))).frame
    queries = load_queries(str(write_jsonl(tmp_path / "q.jsonl", GOOD_QUERIES))).frame
    assert ground_truth(corpus, queries) == {"q1": ["a"], "q2": []}


@pytest.mark.s3
def test_s3_round_trip(s3_server, tmp_path: Path) -> None:
    storage = s3_server.storage()
    corpus = load_corpus(str(write_jsonl(tmp_path / "c.jsonl", GOOD_CORPUS))).frame
    uri = f"{storage.uri}/data/corpus.parquet"
    write_records(corpus, uri, storage)
    assert load_corpus(uri, storage=storage).frame.equals(corpus)
