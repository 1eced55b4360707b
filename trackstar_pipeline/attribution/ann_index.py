"""The gradient table's IVF index: built only for large tables, its nprobes tuned to a measured recall.

Exact batched search (table_search.exact_top_k) costs one streamed pass per block of queries, so an
index pays only when the table is large (SearchSettings.ann_min_rows, measured in benchmarks/scale.py).
After each build, a seeded sample of query vectors is searched exactly and through the index with
growing nprobes until recall@k reaches the target; that choice is what later searches use.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from trackstar_pipeline.attribution.table_search import AnnParameters, ann_top_k, exact_top_k, recall_at_k
from trackstar_pipeline.settings import SearchSettings
from trackstar_pipeline.storage import ObjectStore, layout


def index_accelerator() -> str | None:
    """'cuda' when a GPU and pylance (which LanceDB hands GPU index training to) are both present."""
    if not torch.cuda.is_available():
        return None
    try:
        import lance  # noqa: F401
    except ImportError:
        return None
    return "cuda"


def index_config(search: SearchSettings, rows: int, dim: int, accelerator: str | None) -> tuple[Any, str]:
    """The LanceDB index config for this table size and a one-line description of it."""
    from lancedb.index import IvfFlat, IvfPq

    partitions = search.ann_partitions or max(1, rows // search.ann_partition_rows)
    if search.ann_index == "ivf_pq":
        if dim % 16:
            raise ValueError(f"search.ann_index=ivf_pq needs a vector dim divisible by 16 (d={dim}); use ivf_flat")
        return (IvfPq(distance_type="dot", num_partitions=partitions, num_sub_vectors=dim // 16, accelerator=accelerator),
                f"IVF_PQ ({partitions} partitions, {dim // 16} sub-vectors)")
    return IvfFlat(distance_type="dot", num_partitions=partitions, accelerator=accelerator), f"IVF_FLAT ({partitions} partitions)"


def sample_queries(query_vectors: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """A seeded sample of count query vectors (all when fewer): the recall probe."""
    if query_vectors.shape[0] <= count:
        return query_vectors
    rows = np.sort(np.random.default_rng(seed).choice(query_vectors.shape[0], size=count, replace=False))
    return query_vectors[torch.from_numpy(rows)]  # (count, d)


def tune_nprobes(table: Any, queries: torch.Tensor, partitions: int, search: SearchSettings, description: str,
                 device: torch.device | str = "cpu",
                 progress: Callable[[str], None] = print) -> tuple[AnnParameters, list[dict[str, float]]]:
    """The smallest power-of-two nprobes (up to every partition) whose recall@k reaches the target, and the sweep.

    When even nprobes = partitions misses the target, that last setting is returned: the caller's asset
    check fails and says so.
    """
    k = search.ann_recall_k
    exact = exact_top_k(table, queries, k, search, device)
    sweep: list[dict[str, float]] = []
    nprobes = 1
    while True:
        nprobes = min(nprobes, partitions)
        candidate = AnnParameters(description, nprobes, search.ann_refine_factor, 0.0, k)
        started = time.perf_counter()
        found = ann_top_k(table, queries, k, candidate)
        seconds = time.perf_counter() - started
        recall = recall_at_k(found, exact, k)
        sweep.append({"nprobes": nprobes, "recall": recall, "seconds_per_query": seconds / max(1, len(queries))})
        progress(f"ANN recall@{k} = {recall:.3f} at nprobes={nprobes} (refine_factor={search.ann_refine_factor})")
        if recall >= search.ann_recall_target or nprobes >= partitions:
            return AnnParameters(description, nprobes, search.ann_refine_factor, recall, k), sweep
        nprobes *= 2


def save_ann_parameters(store: ObjectStore, ann: AnnParameters | None, extra: dict[str, Any]) -> str:
    """Record the tuned index parameters (or that there is no index) where every search reads them."""
    return layout.put_json(store, layout.ANN_INDEX_MANIFEST, {"ann": ann.to_json() if ann else None, **extra})


def load_ann_parameters(store: ObjectStore) -> AnnParameters | None:
    """The tuned parameters gradient_index stored; None (exact search) when it built no index or has not run."""
    if not store.exists(layout.ANN_INDEX_MANIFEST):
        return None
    stored = layout.get_json(store, layout.ANN_INDEX_MANIFEST).get("ann")
    return AnnParameters(**stored) if stored else None
