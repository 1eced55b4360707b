"""Reading what earlier assets wrote: the corpus and queries, the checkpoint, the optimizer state."""

from __future__ import annotations

import hashlib
import json
import tempfile
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
            return (*world.build_wikidata_world(data.wikidata_path, data.n_corpus, data.n_queries, data.world_seed,
                                                data.wikidata_query_wording), [])
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


def load_tokenized_corpus(store: ObjectStore, shards: list[str]) -> pl.DataFrame:
    """The corpus (id, text, facts, input_ids, loss_start) as the given tokenized shards hold it, in shard order."""
    return pl.concat([layout.get_parquet(store, layout.tokenized_shard_key(shard)) for shard in shards]).rename(
        {"example_id": "id"})


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


def load_curvature_matrix(store: ObjectStore, storage: StorageSettings, key: str) -> Any:
    """A stored R_train, R_eval or R^{-1/2} (layout.R_TRAIN, R_EVAL, INVERSE_SQRT) as a BlockDiagonal.

    The tensors are named after the file (r_train/<block>, ...), one per module block.
    """
    from trackstar_pipeline.attribution.curvature import BlockDiagonal

    tensors, _ = load_curvature_file(store, storage, key)
    return BlockDiagonal.from_tensors(tensors, Path(key).stem)


def save_curvature_matrix(store: ObjectStore, key: str, matrix: Any, samples: int | None = None,
                          extra_metadata: dict[str, str] | None = None) -> tuple[str, int]:
    """Store a BlockDiagonal at key (what load_curvature_matrix reads): (uri, bytes).

    One tensor per block named after the file; the safetensors metadata records the block sizes, the
    number of gradients averaged (R_train, R_eval) and any extra strings (lambda, damping for R^{-1/2}).
    """
    from trackstar_pipeline.attribution.curvature import save_curvature

    metadata = {"block_sizes": json.dumps(list(matrix.sizes)), **(extra_metadata or {})}
    if samples is not None:
        metadata["samples"] = str(samples)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / Path(key).name
        save_curvature(path, matrix.tensors(Path(key).stem), metadata)
        return store.put_file(key, path), path.stat().st_size


def load_inverse_sqrt(store: ObjectStore, storage: StorageSettings) -> Any:
    """The stored R^{-1/2} as a BlockDiagonal (one block per module, or one dense block), or None without curvature."""
    if not layout.get_json(store, layout.CURVATURE_MANIFEST).get("enabled", False):
        return None
    return load_curvature_matrix(store, storage, layout.INVERSE_SQRT)


def checkpoint_curvature_blocks(store: ObjectStore, storage: StorageSettings, attribution: Any) -> tuple[int, ...]:
    """R's block sizes for the stored checkpoint, from its config alone: the model is built on the meta device,
    so no weights are read (an 8B checkpoint costs nothing here)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trackstar_pipeline.attribution.curvature import model_curvature_blocks

    config = AutoConfig.from_pretrained(str(local_model_dir(store, storage)), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model_curvature_blocks(model, attribution)


def stored_corpus(store: ObjectStore, shards: list[str]) -> Any:
    """The tokenized corpus shards and their stored raw gradients as evaluation's ShardedCorpus, read one shard at a
    time (in `shards` order: the registered shards, sorted, which is r_train's sample order)."""
    import io

    from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus

    def read(shard: str, columns: Any) -> pl.DataFrame:
        stored = ["example_id" if column == "id" else column for column in columns]
        data = io.BytesIO(store.get_bytes(layout.tokenized_shard_key(shard)))
        present = pl.read_parquet_schema(data)
        frame = pl.read_parquet(data, columns=[c for c in stored if c in present])  # only what the pass reads
        return frame.rename({"example_id": "id"}, strict=False)

    def read_gradients(shard: str) -> tuple[list[str], Any]:
        return layout.get_vectors(store, layout.train_gradients_prefix(shard))  # (n, d)

    return ShardedCorpus(list(shards), read, read_gradients)


def load_table_gradients(store: ObjectStore, storage: StorageSettings) -> Any:
    """What query_gradients and the curvature assets stored, as evaluation's GradientSource (no gradient pass);
    the corpus's raw gradients come with each shard (stored_corpus)."""
    import torch

    from trackstar_pipeline.evaluation.ablations import GradientSource

    query_ids, queries = layout.get_vectors(store, layout.QUERY_GRADIENTS)  # (Q, d)
    curvature = layout.get_json(store, layout.CURVATURE_MANIFEST).get("enabled", False)
    r_train = load_curvature_matrix(store, storage, layout.R_TRAIN) if curvature else None
    r_eval = load_curvature_matrix(store, storage, layout.R_EVAL) if curvature else None
    return GradientSource(query_ids, torch.from_numpy(queries), r_train, r_eval)  # (Q, d)


def load_query_vectors(store: ObjectStore, storage: StorageSettings, unit_normalize: bool) -> tuple[list[str], Any]:
    """Query ids and their R^{-1/2} g (Q, d) float32 tensor, unit-norm when asked: the transform the table rows got."""
    import torch

    from trackstar_pipeline.attribution.scoring import prepare_vectors

    query_ids, gradients = layout.get_vectors(store, layout.QUERY_GRADIENTS)  # (Q, d)
    return query_ids, prepare_vectors(torch.from_numpy(gradients), load_inverse_sqrt(store, storage), unit_normalize)
