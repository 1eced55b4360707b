"""Where each asset keeps its objects in the store (one place, so assets and `trackstar query` agree)."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trackstar_pipeline.storage import ObjectStore

CORPUS_SOURCE = "corpus/source/corpus.parquet"
SHARD_SOURCES = "corpus/sources/"          # one canonical-schema Parquet per shard; the sensor watches it
QUERIES = "queries/queries.parquet"
MODEL_DIR = "model/checkpoint"
OPTIMIZER_STATE = "model/optimizer_state"  # + the source file's suffix (.pt or .safetensors)
MODEL_MANIFEST = "model/manifest.json"
QUERY_GRADIENTS = "gradients/queries"
R_TRAIN = "curvature/r_train.safetensors"
R_EVAL = "curvature/r_eval.safetensors"
INVERSE_SQRT = "curvature/inverse_sqrt.safetensors"
CURVATURE_MANIFEST = "curvature/manifest.json"
ANN_INDEX_MANIFEST = "index/manifest.json"  # the IVF index's tuned nprobes and measured recall (or none)
PROPONENTS = "proponents/trackstar.parquet"
BM25_PROPONENTS = "proponents/bm25.parquet"
REPORTS = "reports"


def shard_source_key(shard: str) -> str:
    return f"{SHARD_SOURCES}{shard}.parquet"


def shard_key_of(source_key: str) -> str | None:
    """The partition key a landing-zone object stands for (None for anything else)."""
    name = source_key[len(SHARD_SOURCES) :] if source_key.startswith(SHARD_SOURCES) else ""
    return name[: -len(".parquet")] if name.endswith(".parquet") and "/" not in name else None


def discover_shards(store: ObjectStore) -> list[str]:
    """Partition keys of every shard file in the store's landing zone (corpus/sources/)."""
    keys = (shard_key_of(key) for key in store.list_keys(SHARD_SOURCES))
    return sorted(key for key in keys if key is not None)


def shard_changes(known: set[str], found: list[str]) -> tuple[list[str], list[str]]:
    """(new, gone): shard files not yet registered, and registered shards whose file was removed."""
    return [key for key in found if key not in known], sorted(known - set(found))


def tokenized_shard_key(shard: str) -> str:
    return f"corpus/tokenized/{shard}.parquet"


def train_gradients_prefix(shard: str) -> str:
    return f"gradients/train/{shard}"


def put_parquet(store: ObjectStore, key: str, frame: pl.DataFrame) -> tuple[str, int]:
    """Write a frame as one Parquet object; returns (uri, bytes)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    data = buffer.getvalue()
    return store.put_bytes(key, data), len(data)


def get_parquet(store: ObjectStore, key: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(store.get_bytes(key)))


def put_json(store: ObjectStore, key: str, value: Any) -> str:
    return store.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())


def get_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def put_vectors(store: ObjectStore, prefix: str, ids: list[str], vectors: np.ndarray, extra: dict[str, Any]) -> tuple[str, int]:
    """Vectors as `<prefix>/vectors.npy` plus a JSON manifest with ids, shape and norms; returns (uri, bytes)."""
    if vectors.shape[0] != len(ids):
        raise ValueError(f"{prefix}: {vectors.shape[0]} vectors for {len(ids)} example ids")
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    data = buffer.getvalue()
    uri = store.put_bytes(f"{prefix}/vectors.npy", data)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1) if len(ids) else np.zeros(0)
    manifest = {
        "rows": len(ids),
        "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "dtype": str(vectors.dtype),
        "example_ids": ids,
        "norms": norm_summary(norms),
        **extra,
    }
    put_json(store, f"{prefix}/manifest.json", manifest)
    return uri, len(data)


def get_vectors(store: ObjectStore, prefix: str) -> tuple[list[str], np.ndarray]:
    manifest = get_json(store, f"{prefix}/manifest.json")
    vectors = np.load(io.BytesIO(store.get_bytes(f"{prefix}/vectors.npy")), allow_pickle=False)
    return list(manifest["example_ids"]), vectors


def norm_summary(norms: np.ndarray) -> dict[str, float]:
    """min/mean/max of a norm vector plus how many are not finite (what a reviewer checks first)."""
    if norms.size == 0:
        return {"min": 0.0, "mean": 0.0, "max": 0.0, "non_finite": 0}
    finite = norms[np.isfinite(norms)]
    return {
        "min": float(finite.min()) if finite.size else float("nan"),
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "max": float(finite.max()) if finite.size else float("nan"),
        "non_finite": int(norms.size - finite.size),
    }


def rankings_frame(rankings: dict[str, list[tuple[str, float]]]) -> pl.DataFrame:
    """Long form (query_id, rank, example_id, score) of per-query rankings (how proponents are stored)."""
    rows = [(query_id, rank, example_id, float(score))
            for query_id, ranking in rankings.items() for rank, (example_id, score) in enumerate(ranking, start=1)]
    return pl.DataFrame(rows, schema={"query_id": pl.String, "rank": pl.Int32, "example_id": pl.String, "score": pl.Float64},
                        orient="row")


def read_rankings(frame: pl.DataFrame) -> dict[str, list[tuple[str, float]]]:
    """Inverse of rankings_frame (ranks kept in order)."""
    rankings: dict[str, list[tuple[str, float]]] = {}
    for query_id, _, example_id, score in frame.sort("query_id", "rank").iter_rows():
        rankings.setdefault(query_id, []).append((example_id, score))
    return rankings


def pretrain_workdir(store: ObjectStore) -> Path:
    """A per-store scratch folder outside the store that survives an interruption, so pretraining resumes
    from its checkpoint (a store on S3 cannot hold a live training folder)."""
    digest = hashlib.sha256(store.uri_for("").encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "trackstar-pretrain" / digest
