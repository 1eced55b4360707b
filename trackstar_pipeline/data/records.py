"""Load, validate and write the canonical corpus and query records (JSONL or Parquet, local or s3://).

Users bring their own data, so every bad record is reported with its file and line (the row
number, 1-based, for Parquet) and why; the whole file is then rejected, or the bad records are
skipped and listed, per DataSettings.bad_records. Nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl

from trackstar_pipeline.settings import BadRecordPolicy, StorageSettings
from trackstar_pipeline.storage import ObjectStore, parse_s3_uri, read_uri_bytes
from trackstar_pipeline.storage.object_store import local_path_of

CORPUS_SCHEMA = {"id": pl.String, "text": pl.String, "facts": pl.List(pl.List(pl.String))}
QUERY_SCHEMA = {"id": pl.String, "prompt": pl.String, "completion": pl.String, "fact": pl.List(pl.String)}


class InvalidRecordsError(ValueError):
    """A corpus or query file holds bad records; the message lists every one with file and line."""

    def __init__(self, uri: str, problems: list[str]) -> None:
        self.uri = uri
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(
            f"{uri}: {len(problems)} bad record(s); fix them, or set data.bad_records: skip to skip them:\n{listing}"
        )


@dataclass
class LoadedRecords:
    frame: pl.DataFrame
    skipped: list[str] = field(default_factory=list)
    """'file:line: why' for every record left out under the skip policy."""


def _file_format(uri: str) -> str:
    lowered = uri.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith(".parquet"):
        return "parquet"
    raise ValueError(f"{uri}: unknown file type; name it *.jsonl or *.parquet")


def _raw_records(uri: str, storage: StorageSettings | None) -> list[tuple[int, Any, str | None]]:
    """(line, parsed object, parse error) per record; blank JSONL lines are not records."""
    file_format = _file_format(uri)
    data = read_uri_bytes(uri, storage)
    if file_format == "parquet":
        try:
            rows = pl.read_parquet(io.BytesIO(data)).to_dicts()
        except Exception as error:  # polars raises several kinds for a broken file
            raise InvalidRecordsError(uri, [f"{uri}: not a readable Parquet file ({error})"]) from error
        return [(number, row, None) for number, row in enumerate(rows, start=1)]
    records: list[tuple[int, Any, str | None]] = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line), None))
        except json.JSONDecodeError as error:
            records.append((number, None, f"not valid JSON ({error.msg} at column {error.colno})"))
    return records


def _text_field(record: dict, name: str, kind: str) -> str:
    value = record.get(name)
    if value is None:
        raise ValueError(f"'{name}' is missing; every {kind} needs a non-empty '{name}'")
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"'{name}' is empty; every {kind} needs a non-empty '{name}'")
    return value


def _record_id(record: dict) -> str:
    value = record.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("'id' is missing or empty; every record needs a unique string id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"'id' must be a string, got {type(value).__name__}")
    return str(value)


def _fact(value: Any, name: str) -> list[str]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(part, str) and part.strip() for part in value)
    ):
        raise ValueError(f"malformed fact in '{name}': {value!r}; a fact is [subject, relation, object] of non-empty strings")
    return list(value)


def _corpus_row(record: dict) -> dict:
    facts = record.get("facts")
    if facts is None:
        facts = []
    elif not isinstance(facts, (list, tuple)):
        raise ValueError(f"malformed 'facts': {facts!r}; expected a list of [subject, relation, object]")
    return {
        "id": _record_id(record),
        "text": _text_field(record, "text", "corpus record"),
        "facts": [_fact(fact, "facts") for fact in facts],
    }


def _query_row(record: dict) -> dict:
    fact = record.get("fact")
    return {
        "id": _record_id(record),
        "prompt": _text_field(record, "prompt", "query"),
        "completion": _text_field(record, "completion", "query"),
        "fact": None if fact is None else _fact(fact, "fact"),
    }


def _load(
    uri: str,
    parse: Callable[[dict], dict],
    schema: dict,
    on_bad_record: BadRecordPolicy,
    storage: StorageSettings | None,
) -> LoadedRecords:
    if on_bad_record not in ("reject", "skip"):
        raise ValueError(f"on_bad_record={on_bad_record!r}; use 'reject' or 'skip'")
    raw = _raw_records(uri, storage)
    if not raw:
        raise InvalidRecordsError(uri, [f"{uri}: the file holds no records"])
    rows: list[dict] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, record, parse_error in raw:
        try:
            if parse_error is not None:
                raise ValueError(parse_error)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            row = parse(record)
            if row["id"] in first_line:
                raise ValueError(f"duplicate id {row['id']!r} (first seen at line {first_line[row['id']]})")
        except ValueError as error:
            problems.append(f"{uri}:{number}: {error}")
            continue
        first_line[row["id"]] = number
        rows.append(row)
    if problems and on_bad_record == "reject":
        raise InvalidRecordsError(uri, problems)
    if not rows:
        raise InvalidRecordsError(uri, problems + [f"{uri}: no valid records left"])
    return LoadedRecords(frame=pl.DataFrame(rows, schema=schema), skipped=problems)


def load_corpus(
    uri: str, on_bad_record: BadRecordPolicy = "reject", storage: StorageSettings | None = None
) -> LoadedRecords:
    """Corpus records (id, text, facts) from JSONL/Parquet at a path, file:// or s3:// URI."""
    return _load(uri, _corpus_row, CORPUS_SCHEMA, on_bad_record, storage)


def load_queries(
    uri: str, on_bad_record: BadRecordPolicy = "reject", storage: StorageSettings | None = None
) -> LoadedRecords:
    """Query records (id, prompt, completion, fact) from JSONL/Parquet at a path, file:// or s3:// URI."""
    return _load(uri, _query_row, QUERY_SCHEMA, on_bad_record, storage)


def write_records(frame: pl.DataFrame, uri: str, storage: StorageSettings | None = None) -> str:
    """Write a corpus or query frame as JSONL or Parquet (by suffix) to a path or s3:// URI."""
    buffer = io.BytesIO()
    if _file_format(uri) == "parquet":
        frame.write_parquet(buffer)
    else:
        frame.write_ndjson(buffer)
    if uri.startswith("s3://"):
        location = parse_s3_uri(uri)
        settings = StorageSettings(**{**(storage or StorageSettings()).__dict__, "uri": f"s3://{location.bucket}"})
        return ObjectStore(settings).put_bytes(location.prefix, buffer.getvalue())
    path = local_path_of(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return uri


def ground_truth(corpus: pl.DataFrame, queries: pl.DataFrame) -> dict[str, list[str]]:
    """Query id -> ids of the corpus rows whose facts contain the query's fact ([] when none or no fact)."""
    rows_by_fact: dict[tuple[str, ...], list[str]] = {}
    for example_id, facts in zip(corpus["id"].to_list(), corpus["facts"].to_list()):
        for fact in facts or []:
            rows = rows_by_fact.setdefault(tuple(fact), [])
            if not rows or rows[-1] != example_id:
                rows.append(example_id)
    return {
        query_id: list(rows_by_fact.get(tuple(fact), [])) if fact is not None else []
        for query_id, fact in zip(queries["id"].to_list(), queries["fact"].to_list())
    }
