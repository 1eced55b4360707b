"""Reading what earlier assets wrote: the corpus and queries, the checkpoint, the optimizer state."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from trackstar_pipeline.storage import layout
from trackstar_pipeline.settings import DataSettings, StorageSettings
from trackstar_pipeline.storage import ObjectStore, materialize_local


def load_sources(data: DataSettings, storage: StorageSettings | None = None) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """(corpus, queries, skipped records) from the configured URIs, or the seeded fact world when none is given."""
    from trackstar_pipeline.data import records, world

    if (data.corpus_uri is None) != (data.queries_uri is None):
        given, missing = ("corpus_uri", "queries_uri") if data.corpus_uri else ("queries_uri", "corpus_uri")
        raise ValueError(f"data.{given} is set but data.{missing} is not; give both (--corpus and --queries) "
                         "or neither (the embedded fact world)")
    if data.corpus_uri is None:
        if data.world == "wikidata":
            if not data.wikidata_path:
                raise ValueError("data.world='wikidata' needs data.wikidata_path (the S-TEST/LAMA folder)")
            return (*world.build_wikidata_world(data.wikidata_path, data.n_corpus, data.n_queries, data.world_seed), [])
        if data.world == "generated":
            from trackstar_pipeline.data.world_generator import generate_world

            return (*generate_world(data.world_seed, data.n_corpus, data.n_queries), [])
        return (*world.generate_fact_world(data.n_corpus, data.n_queries, data.world_seed), [])
    corpus = records.load_corpus(data.corpus_uri, on_bad_record=data.bad_records, storage=storage)
    queries = records.load_queries(data.queries_uri, on_bad_record=data.bad_records, storage=storage)
    return corpus.frame, queries.frame, corpus.skipped + queries.skipped


def split_into_shards(corpus: pl.DataFrame, shard_size: int) -> dict[str, pl.DataFrame]:
    """Stable assignment (DATA's hash of the example id) into about N / shard_size shards, keyed by shard name."""
    from trackstar_pipeline.data.shards import n_shards_for, shard_name, shard_of

    n_shards = n_shards_for(corpus.height, shard_size)
    assigned = corpus.with_columns(
        pl.Series("shard", [shard_name(shard_of(i, n_shards)) for i in corpus["id"].to_list()], dtype=pl.String)
    )
    return {str(key[0]): part.drop("shard") for key, part in sorted(assigned.partition_by("shard", as_dict=True).items())}


def local_model_dir(store: ObjectStore, storage: StorageSettings) -> Path:
    """The stored checkpoint as a local folder (the folder itself for file://, a cache copy for s3://)."""
    return materialize_local(store.uri_for(layout.MODEL_DIR), storage)


def load_checkpoint(store: ObjectStore, storage: StorageSettings, device: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) of the materialized model_checkpoint, in eval mode."""
    from trackstar_pipeline.models import load_model

    model, tokenizer = load_model(str(local_model_dir(store, storage)), device=device)
    model.eval()
    return model, tokenizer


def load_optimizer_moments(store: ObjectStore, storage: StorageSettings, model: Any, correction: str) -> Any:
    """The optimizer's second moments for the stored checkpoint; None when none was given or correction is 'none'."""
    from trackstar_pipeline.attribution.optimizer_state import load_second_moments

    if correction == "none":
        return None
    manifest = layout.get_json(store, layout.MODEL_MANIFEST)
    key = manifest.get("optimizer_state_key")
    if not key:
        return None
    return load_second_moments(materialize_local(store.uri_for(key), storage), model)


def _hash_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes to a hashlib digest in 1 MiB blocks."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def tree_digest(directory: Path) -> str:
    """A content hash of every file under a folder (the checkpoint's data version)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        _hash_file(digest, path)
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """A content hash of one file (the optimizer state's data version)."""
    digest = hashlib.sha256()
    _hash_file(digest, path)
    return digest.hexdigest()[:16]


def load_curvature_file(store: ObjectStore, storage: StorageSettings, key: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a stored curvature safetensors file."""
    from trackstar_pipeline.attribution.curvature import load_curvature

    return load_curvature(materialize_local(store.uri_for(key), storage))


def load_inverse_sqrt(store: ObjectStore, storage: StorageSettings) -> Any:
    """The stored R^{-1/2} (d, d), or None when the pipeline runs without curvature."""
    if not layout.get_json(store, layout.CURVATURE_MANIFEST).get("enabled", False):
        return None
    tensors, _ = load_curvature_file(store, storage, layout.INVERSE_SQRT)
    return tensors["inverse_sqrt"]
