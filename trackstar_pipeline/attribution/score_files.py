"""`trackstar score`: attribute queries to a corpus from plain files, no Dagster and no object store.

Steps: load the model and tokenizer, encode corpus and queries, take corrected projected gradients,
build R from a sample of corpus gradients (R_train) and the query gradients (R_eval), whiten and
unit-normalize, and write the exact top-k proponents per query as JSONL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from trackstar_pipeline.attribution.curvature import inverse_sqrt_from_gradients, model_curvature_blocks
from trackstar_pipeline.attribution.device import resolve_device
from trackstar_pipeline.attribution.examples import context_length, encode_corpus, encode_queries
from trackstar_pipeline.attribution.gradients import collect_gradients, gradient_dim
from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.attribution.scoring import prepare_vectors, top_k_proponents
from trackstar_pipeline.data.records import load_corpus, load_queries
from trackstar_pipeline.models import load_model
from trackstar_pipeline.settings import AttributionSettings

SCORE_BLOCK = 4096
"""Training vectors scored per block; bounds the (Q, block) score matrix."""


def _columns(path: str | Path, names: tuple[str, ...], kind: str) -> dict[str, list[str]]:
    """The named columns of a canonical corpus or queries file (JSONL or Parquet), validated by DATA's loader."""
    loader = load_corpus if kind == "corpus" else load_queries
    frame = loader(str(path)).frame
    return {name: [str(value) for value in frame[name].to_list()] for name in names}


def score_files(model_dir, corpus_path, queries_path, output_path, settings: AttributionSettings, top_k: int,
                optimizer_state_path=None, progress: Callable[[str], None] = print) -> dict:
    """Score every query against the corpus and write `{"query_id", "proponents": [{"id", "score"}]}` lines.

    model_dir: save_pretrained directory with its tokenizer (local or s3://). corpus_path /
    queries_path: canonical JSONL or Parquet; bad records are rejected with their file and line. optimizer_state_path: optimizer.pt or
    safetensors second moments; without it gradients are not optimizer-corrected. Returns a summary.
    """
    started = time.perf_counter()
    device = resolve_device(settings.device)
    model, tokenizer = load_model(str(model_dir), device=device)
    dim = gradient_dim(model, settings)
    block_sizes = model_curvature_blocks(model, settings) if settings.curvature else None  # refuses a block too large
    max_length = context_length(model, settings.max_length)
    corpus = _columns(corpus_path, ("id", "text"), "corpus")
    queries = _columns(queries_path, ("id", "prompt", "completion"), "queries")
    corpus_batch = encode_corpus(corpus["id"], corpus["text"], tokenizer, max_length, settings.overlength)
    query_batch = encode_queries(queries["id"], queries["prompt"], queries["completion"], tokenizer, max_length,
                                 settings.overlength)
    moments = None
    if optimizer_state_path is not None:
        moments = load_second_moments(optimizer_state_path, model)
    else:
        progress("no optimizer state given: gradients are not divided by sqrt(V)")
    progress(f"{len(corpus_batch.examples)} corpus and {len(query_batch.examples)} query examples, d={dim}")

    def report(kind: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(f"{kind} gradients {done}/{total}")

    query_vectors = collect_gradients(model, query_batch.examples, settings, moments, device, report("query"))
    corpus_vectors = collect_gradients(model, corpus_batch.examples, settings, moments, device, report("corpus"))
    inverse_sqrt, lambda_used = inverse_sqrt_from_gradients(corpus_vectors, query_vectors, settings, progress,
                                                           block_sizes=block_sizes)
    prepared_queries = prepare_vectors(query_vectors, inverse_sqrt, settings.unit_normalize)
    ids = [example.example_id for example in corpus_batch.examples]
    blocks = ((ids[start: start + SCORE_BLOCK],
               prepare_vectors(corpus_vectors[start: start + SCORE_BLOCK], inverse_sqrt, settings.unit_normalize))
              for start in range(0, len(ids), SCORE_BLOCK))
    proponents = top_k_proponents(prepared_queries, blocks, top_k)
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as handle:
        for example, ranked in zip(query_batch.examples, proponents):
            line = {"query_id": example.example_id,
                    "proponents": [{"id": example_id, "score": score} for example_id, score in ranked]}
            handle.write(json.dumps(line) + "\n")
    progress(f"wrote {len(proponents)} queries to {output}")
    return {"output": str(output), "queries": len(query_batch.examples), "corpus": len(corpus_batch.examples),
            "projection_dim": dim, "curvature": settings.curvature, "lambda": lambda_used,
            "optimizer_state": None if optimizer_state_path is None else str(optimizer_state_path),
            "truncated_corpus": len(corpus_batch.truncated_ids), "truncated_queries": len(query_batch.truncated_ids),
            "seconds": round(time.perf_counter() - started, 3)}
