"""Search of the LanceDB gradient table, shared by the proponents asset, `trackstar query` and evaluation.

Exact search streams the table once as Arrow record batches and scores every query against each
batch in one matmul with a running top-k, so memory is bounded by the batch size, not the table.
Large tables may carry an IVF index (gradient_index); its nprobes is tuned there until recall@k
against exact search reaches the target, and `AnnParameters` carries that choice to the searches.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from trackstar_pipeline.attribution.scoring import top_k_proponents
from trackstar_pipeline.settings import SearchSettings

# LanceDB reads several fragments ahead of a scan by default, so a scan's resident memory grows with the
# fragment count (shards) up to that cap; one fragment ahead still overlaps I/O with the matmul. Set the
# variable before the first scan of the process to choose otherwise.
os.environ.setdefault("LANCE_DEFAULT_FRAGMENT_READAHEAD", "1")

Ranking = list[tuple[str, float]]
ID_FILTER_CHUNK = 1000
"""Ids per `example_id IN (...)` filter, so a filter string stays small."""


@dataclass(frozen=True)
class AnnParameters:
    """How to query the table's IVF index: what gradient_index measured to reach the recall target."""

    index: str
    nprobes: int
    refine_factor: int
    recall: float
    recall_k: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def table_batches(table: Any, columns: Sequence[str], batch_rows: int, where: str | None = None) -> Iterator[pa.RecordBatch]:
    """The table's rows as Arrow record batches of at most batch_rows rows (one streaming scan)."""
    if batch_rows <= 0:
        raise ValueError(f"search.batch_rows must be positive, got {batch_rows}")
    query = table.search().select(list(columns)).limit(None)
    if where is not None:
        query = query.where(where)
    for batch in query.to_batches(batch_rows):
        if batch.num_rows:
            yield batch


def batch_vectors(batch: pa.RecordBatch, column: str = "vector") -> torch.Tensor:
    """The fixed-size-list vector column of one batch as a (b, d) tensor in its stored dtype (float16)."""
    vectors = batch.column(column)
    flat = vectors.flatten().to_numpy(zero_copy_only=False)  # (b * d,)
    with warnings.catch_warnings():  # Arrow's buffer is read-only; the tensor is only read (converted on its device)
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(flat.reshape(batch.num_rows, vectors.type.list_size))  # (b, d)


def _id_filter(ids: Sequence[str]) -> str:
    quoted = ", ".join("'" + str(i).replace("'", "''") + "'" for i in ids)
    return f"example_id IN ({quoted})"


def rows_with_ids(table: Any, ids: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """The table rows whose example_id is one of ids (filtered in LanceDB, a scalar index serves it when present)."""
    unique = list(dict.fromkeys(ids))
    parts = [table.search().where(_id_filter(unique[start:start + ID_FILTER_CHUNK])).select(list(columns)).limit(None).to_arrow()
             for start in range(0, len(unique), ID_FILTER_CHUNK)]
    return pa.concat_tables(parts) if parts else pa.table({name: pa.array([], pa.string()) for name in columns})


def exact_top_k(table: Any, query_vectors: torch.Tensor, k: int, search: SearchSettings,
                device: torch.device | str = "cpu") -> list[Ranking]:
    """Exact top-k rows by dot product per query: one streamed pass over the table per block of queries."""
    rankings: list[Ranking] = []
    for start in range(0, query_vectors.shape[0], search.query_block):
        queries = query_vectors[start:start + search.query_block].to(device, torch.float32)  # (q, d)
        blocks = ((batch.column("example_id"), batch_vectors(batch))
                  for batch in table_batches(table, ["example_id", "vector"], search.batch_rows))
        rankings.extend(top_k_proponents(queries, blocks, k))
    return rankings


def ann_top_k(table: Any, query_vectors: torch.Tensor, k: int, ann: AnnParameters) -> list[Ranking]:
    """Top-k per query through the IVF index (all queries in one LanceDB call), re-ranked by the stored vectors."""
    vectors = query_vectors.detach().to("cpu", torch.float32).numpy()  # (Q, d)
    search = (table.search(list(vectors) if len(vectors) > 1 else vectors[0]).metric("dot")
              .select(["example_id", "_distance"]).limit(k).nprobes(ann.nprobes))
    if ann.refine_factor > 0:
        search = search.refine_factor(ann.refine_factor)
    hits = search.to_arrow()
    query_index = hits["query_index"].to_numpy() if "query_index" in hits.column_names else np.zeros(hits.num_rows, int)
    scores = 1.0 - hits["_distance"].to_numpy(zero_copy_only=False)  # LanceDB's dot distance is 1 - q.x
    rankings: list[Ranking] = [[] for _ in range(len(vectors))]
    for q, example_id, score in zip(query_index.tolist(), hits["example_id"].to_pylist(), scores.tolist()):
        rankings[q].append((example_id, score))
    return [sorted(ranking, key=lambda item: -item[1])[:k] for ranking in rankings]


def search_table(table: Any, query_vectors: np.ndarray | torch.Tensor, k: int, search: SearchSettings = SearchSettings(),
                 device: torch.device | str = "cpu", ann: AnnParameters | None = None,
                 with_text: bool = False) -> list[list[dict[str, Any]]]:
    """Per query, the k rows with the largest dot product: [{"id", "score"(, "text")}, ...] in descending score.

    Exact batched search unless `ann` (gradient_index's tuned parameters) is given and the table has its index.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    queries = query_vectors if isinstance(query_vectors, torch.Tensor) else torch.from_numpy(np.asarray(query_vectors))
    queries = queries.reshape(-1, queries.shape[-1])  # (Q, d)
    use_ann = ann is not None and any(index.columns == ["vector"] for index in table.list_indices())
    rankings = ann_top_k(table, queries, k, ann) if use_ann else exact_top_k(table, queries, k, search, device)
    texts: dict[str, str] = {}
    if with_text:
        found = rows_with_ids(table, [i for ranking in rankings for i, _ in ranking], ["example_id", "text"])
        texts = dict(zip(found["example_id"].to_pylist(), found["text"].to_pylist()))
    return [[{"id": i, "score": s, **({"text": texts.get(i)} if with_text else {})} for i, s in ranking]
            for ranking in rankings]


def recall_at_k(found: Sequence[Ranking], exact: Sequence[Ranking], k: int) -> float:
    """Mean share of each query's exact top-k that the approximate top-k also returned."""
    shares = [len({i for i, _ in a[:k]} & {i for i, _ in e[:k]}) / max(1, min(k, len(e))) for a, e in zip(found, exact)]
    return float(np.mean(shares)) if shares else 1.0


def score_candidate_sets(table: Any, query_vectors: Mapping[str, np.ndarray | torch.Tensor],
                         candidates: Mapping[str, Sequence[str]], search: SearchSettings = SearchSettings(),
                         device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Dot products of each query with its own candidate rows, in the given order: one streamed pass over the table.

    Only rows whose id is some query's candidate are converted and scored; a candidate absent from
    the table is an error naming it.
    """
    query_ids = [query_id for query_id in candidates if len(candidates[query_id])]
    missing_queries = [query_id for query_id in query_ids if query_id not in query_vectors]
    if missing_queries:
        raise KeyError(f"no query vector for {len(missing_queries)} queries with candidates, e.g. {missing_queries[:3]}")
    scores = {query_id: np.full(len(candidates[query_id]), np.nan) for query_id in candidates}
    if not query_ids:
        return scores
    slots: dict[str, list[tuple[int, int]]] = {}  # candidate id -> [(query row, position in its list)]
    for row, query_id in enumerate(query_ids):
        for position, candidate in enumerate(candidates[query_id]):
            slots.setdefault(candidate, []).append((row, position))
    queries = torch.stack([torch.as_tensor(np.asarray(query_vectors[q])) for q in query_ids]).to(device, torch.float32)  # (Q, d)
    wanted = pa.array(list(slots), pa.string())
    for batch in table_batches(table, ["example_id", "vector"], search.batch_rows):
        hit = batch.filter(pc.is_in(batch.column("example_id"), value_set=wanted))
        if not hit.num_rows:
            continue
        block = (queries @ batch_vectors(hit).to(device, torch.float32).T).cpu().numpy()  # (Q, m)
        for column, candidate in enumerate(hit.column("example_id").to_pylist()):
            for row, position in slots[candidate]:
                scores[query_ids[row]][position] = block[row, column]
    absent = [c for c, places in slots.items() if np.isnan(scores[query_ids[places[0][0]]][places[0][1]])]
    if absent:
        raise KeyError(f"{len(absent)} candidate ids are not in the gradient table, e.g. {absent[:3]}; "
                       "materialize gradient_table for every shard")
    return scores


class TableCandidateScores:
    """Closed-set scores from the table for evaluation's scorers: `prefetch` scores every (query, candidate) pair

    in one streamed pass; calling it afterwards answers from that result (a query not prefetched costs one pass).
    """

    def __init__(self, table: Any, query_vectors: Mapping[str, np.ndarray], search: SearchSettings = SearchSettings(),
                 device: torch.device | str = "cpu") -> None:
        self.table, self.query_vectors, self.search, self.device = table, query_vectors, search, device
        self._scores: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def prefetch(self, candidates: Mapping[str, Sequence[str]]) -> None:
        """Score every query's candidates not yet scored, in one pass over the table."""
        todo = {q: list(ids) for q, ids in candidates.items() if ids and (q, tuple(ids)) not in self._scores}
        if todo:
            found = score_candidate_sets(self.table, self.query_vectors, todo, self.search, self.device)
            self._scores.update({(q, tuple(todo[q])): found[q] for q in todo})

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        key = (query_id, tuple(candidate_ids))
        if not candidate_ids:
            return np.zeros(0)
        if key not in self._scores:
            self.prefetch({query_id: list(candidate_ids)})
        return self._scores[key]  # (C,)
