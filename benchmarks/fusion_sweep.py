"""trackstar+bm25 fusion rules compared offline, from the rankings and tail-patch effects quality.py saved.

    python benchmarks/fusion_sweep.py /tmp/q/bench/world-1 /tmp/q/bench/world-2 ...

Each folder's rankings.json (benchmarks/quality.py writes it) holds the open-set top-100 of trackstar
and bm25 per evaluated query, the ground truth and the measured one-step effects (Δp) of every
proponent that was in some method's top 10 for a tail-patched query. Every rule is applied with
the engine's own `fusion_scores` and measured with the engine's `ranking_metrics` and
`tailpatch_metrics`, so the figures are the ones `evaluate` would report. A fused top 10 can hold a
proponent whose effect was never measured (it was in no method's top 10): tailpatch_metrics skips
it, and the `measured` column says which share of the fused top-10 entries had an effect, so a rule
that leans on unmeasured proponents shows it.

A `hindsight` line per world bounds the rules that lead with a ground-truth row and keep TrackStar's
order for the rest: when even the best measured ground-truth row in place of TrackStar's 10th lowers
tail-patch@10, no such rule holds both "fusion MRR >= BM25's - 0.02" and "fusion tail-patch@10 >=
TrackStar's". Only mixing in further BM25 rows that move the model more than TrackStar's own can then
pass, which happens on some worlds (world 1 in session 6) and not on others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from trackstar_pipeline.evaluation.ablations import lambda_method_name
from trackstar_pipeline.evaluation.metrics import ranking_metrics
from trackstar_pipeline.evaluation.scorers import fusion_scores
from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect, paired_tailpatch_difference, tailpatch_metrics
from trackstar_pipeline.settings import AttributionSettings, EvaluationSettings

RULES: list[tuple[str, float, float, int, int, float, int]] = [
    # (label, bm25 weight, rrf_k, bm25 head, pool the head is picked from in trackstar's order,
    #  least share of BM25's top score a pool row needs (rules with a share > 0 need saved scores),
    #  how many of BM25's top rows follow the fused first 10 when it left them out)
    ("rrf k=60 (old default)", 1.0, 60, 0, 0, 0.0, 0),
    ("bm25 head 1 + trackstar", 0.0, 60, 1, 1, 0.0, 0),
    ("bm25 head 2 + trackstar", 0.0, 60, 2, 2, 0.0, 0),
    ("bm25 head 1 + rrf k=60", 1.0, 60, 1, 1, 0.0, 0),
    ("bm25 head 1 + rrf k=60 w=0.5 (session-5 default)", 0.5, 60, 1, 1, 0.0, 0),
    ("bm25 head 1 + rrf k=10", 1.0, 10, 1, 1, 0.0, 0),
    ("rrf k=2 w=2", 2.0, 2, 0, 0, 0.0, 0),
    ("bm25 head 1 of top 2 + trackstar", 0.0, 60, 1, 2, 0.0, 0),
    ("bm25 head 1 of top 3 + trackstar", 0.0, 60, 1, 3, 0.0, 0),
    ("bm25 head 1 of top 5 + trackstar", 0.0, 60, 1, 5, 0.0, 0),
    ("bm25 head 1 of top 2 + rrf k=60 w=0.5", 0.5, 60, 1, 2, 0.0, 0),
    ("bm25 head 1 of top 3 + rrf k=60 w=0.5", 0.5, 60, 1, 3, 0.0, 0),
    ("bm25 head 1 of top 5 + rrf k=60 w=0.5", 0.5, 60, 1, 5, 0.0, 0),
    ("bm25 head 1 + rrf k=60 w=0.25", 0.25, 60, 1, 1, 0.0, 0),
    ("bm25 head 1 of top 2 + rrf k=60 w=0.25", 0.25, 60, 1, 2, 0.0, 0),
    ("bm25 head 1 of top 3 + rrf k=60 w=0.25", 0.25, 60, 1, 3, 0.0, 0),
    ("bm25 head 1 of top 5 within 0.95 of its top + rrf k=60 w=0.25", 0.25, 60, 1, 5, 0.95, 0),
    ("bm25 head 1 of top 5 within 0.9 of its top + rrf k=60 w=0.25", 0.25, 60, 1, 5, 0.9, 0),
    ("bm25 head 1 of top 5 within 0.8 of its top + rrf k=60 w=0.25", 0.25, 60, 1, 5, 0.8, 0),
    ("bm25 head 1 of top 10 within 0.9 of its top + rrf k=60 w=0.25", 0.25, 60, 1, 10, 0.9, 0),
    ("bm25 head 1 of top 5 within 0.9 of its top + rrf k=60 w=0.5", 0.5, 60, 1, 5, 0.9, 0),
    ("bm25 head 1 of top 5 within 0.9 of its top + trackstar", 0.0, 60, 1, 5, 0.9, 0),
    ("bm25 head 1 + rrf k=60 w=0.5, bm25's top 5 follow the first 10 (session-8 default)", 0.5, 60, 1, 1, 0.0, 5),
    ("bm25 head 1 + rrf k=60 w=0.5, bm25's top 10 follow the first 10", 0.5, 60, 1, 1, 0.0, 10),
    # session 10: models that know their facts (packed pretraining), where TrackStar's top 10 often holds BM25's head
    ("bm25 head 1 + trackstar, follow 5", 0.0, 60, 1, 1, 0.0, 5),
    ("bm25 head 1 + rrf k=60 w=0.25, follow 5", 0.25, 60, 1, 1, 0.0, 5),
    ("bm25 head 1 of top 5 within 0.95 of its top + trackstar, follow 5", 0.0, 60, 1, 5, 0.95, 5),
    ("bm25 head 1 of top 10 within 0.9 of its top + trackstar, follow 5", 0.0, 60, 1, 10, 0.9, 5),
    ("bm25 head 1 of top 5 within 0.95 of its top + rrf k=60 w=0.25, follow 5", 0.25, 60, 1, 5, 0.95, 5),
    ("bm25 head 1 of top 5 within 0.95 of its top + rrf k=60 w=0.5, follow 5", 0.5, 60, 1, 5, 0.95, 5),
]


COMPONENTS = ("trackstar", "trackstar_r_train_only", "trackstar_no_curvature")
"""TrackStar rankings the default rule is also replayed with (session 15: the fusion's component)."""

SECOND_ROW_RULES: list[tuple[str, Callable[[list[str], dict[str, int]], bool]]] = [
    # session 14: BM25's second row moves up to second place on the default's ranking, for the queries where the
    # trigger (BM25's top ids, TrackStar's rank of each id in its top 100) holds; paragraph worlds lose MRR
    # where BM25's first row is wrong and its second right
    ("default, BM25's second row second", lambda bm25, trackstar_rank: True),
    ("default, BM25's second row second when TrackStar's top 100 lacks BM25's first",
     lambda bm25, trackstar_rank: bm25[0] not in trackstar_rank),
    ("default, BM25's second row second when TrackStar ranks it above BM25's first",
     lambda bm25, trackstar_rank: len(bm25) > 1 and trackstar_rank.get(bm25[1], 999) < trackstar_rank.get(bm25[0], 999)),
]


def with_second_row(saved: dict[str, Any], rankings: dict[str, list[tuple[str, float]]],
                    trigger: Callable[[list[str], dict[str, int]], bool]) -> dict[str, list[tuple[str, float]]]:
    """rankings with BM25's second row moved to second place where trigger holds (the first place kept)."""
    bm25, trackstar = saved["open_set"]["bm25"], saved["open_set"]["trackstar"]
    result = {}
    for query_id, ranking in rankings.items():
        ids = [corpus_id for corpus_id, _ in ranking]
        trackstar_rank = {corpus_id: rank for rank, corpus_id in enumerate(trackstar[query_id])}
        if len(bm25[query_id]) > 1 and trigger(bm25[query_id], trackstar_rank) and bm25[query_id][1] not in ids[:2]:
            ids = ids[:1] + [bm25[query_id][1]] + [corpus_id for corpus_id in ids[1:] if corpus_id != bm25[query_id][1]]
        result[query_id] = as_ranking(ids)
    return result


def fused(saved: dict[str, Any], bm25_weight: float, rrf_k: float, head: int, head_pool: int,
          head_pool_ratio: float = 0.0, follow: int = 0, component: str = "trackstar",
          near_tie: float = 0.0) -> dict[str, list[tuple[str, float]]]:
    """The rule's fused ranking per query, BM25 first (it leads), the TrackStar `component` at weight 1."""
    bm25, trackstar = saved["open_set"]["bm25"], saved["open_set"][component]
    bm25_scores = saved.get("open_set_scores", {}).get("bm25", {})
    result = {}
    for query_id in trackstar:
        totals = fusion_scores([bm25[query_id], trackstar[query_id]], [bm25_weight, 1.0], rrf_k, head,
                               max(head, head_pool), bm25_scores.get(query_id), head_pool_ratio, follow,
                               near_tie=near_tie)
        result[query_id] = sorted(totals.items(), key=lambda item: -item[1])[:100]
    return result


def default_component(saved: dict[str, Any]) -> str:
    """The TrackStar ranking evaluate's default fusion takes (evaluation.fusion_trackstar_lambda), if this run saved it."""
    name = lambda_method_name(AttributionSettings(), EvaluationSettings().fusion_trackstar_lambda)
    return name if name in saved["open_set"] else "trackstar"


def default_fusion(saved: dict[str, Any], component: str | None = None,
                   near_tie: float | None = None) -> dict[str, list[tuple[str, float]]]:
    """The ranking evaluate's trackstar+bm25 gives at the default evaluation settings (another component or
    near_tie if given). A run saved without BM25's scores (before session 7) is replayed without the near tie."""
    defaults = EvaluationSettings()
    if near_tie is None:
        near_tie = defaults.fusion_bm25_near_tie if "open_set_scores" in saved else 0.0
    return fused(saved, defaults.fusion_bm25_weight, defaults.rrf_k, defaults.fusion_bm25_head,
                 defaults.fusion_bm25_head_pool, defaults.fusion_bm25_head_ratio, defaults.fusion_bm25_follow,
                 component or default_component(saved), near_tie)


def rule_rankings(saved: dict[str, Any]) -> Iterator[tuple[str, dict[str, list[tuple[str, float]]]]]:
    """(label, fused ranking per query): the default, then every rule of RULES this run can replay (fusing the
    table's trackstar, as they were measured), the default with each other TrackStar ranking saved, then
    SECOND_ROW_RULES on the default."""
    component, default = default_component(saved), default_fusion(saved)
    yield f"default (session 18: fuses {component}, BM25's near tie leads)", default
    if "open_set_scores" in saved:
        yield "default without BM25's near tie (session 15)", default_fusion(saved, near_tie=0.0)
    for label, weight, rrf_k, head, head_pool, ratio, follow in RULES:
        if ratio > 0 and "open_set_scores" not in saved:
            continue  # rankings.json from before quality.py saved scores
        yield label, fused(saved, weight, rrf_k, head, head_pool, ratio, follow)
    for other in COMPONENTS:
        if other in saved["open_set"] and other != component:
            yield f"the default's rule, fusing {other}", default_fusion(saved, other)
    for label, trigger in SECOND_ROW_RULES:
        yield label, with_second_row(saved, default, trigger)


def measured_effects(saved: dict[str, Any]) -> dict[tuple[str, str], TailPatchEffect]:
    """(corpus id, query id) -> the saved Δp (rankings.json keeps Δp only)."""
    return {(corpus_id, query_id): TailPatchEffect(delta, 0.0)
            for query_id, per in saved["effects"].items() for corpus_id, delta in per.items()}


def measure(saved: dict[str, Any], effects: dict[tuple[str, str], TailPatchEffect],
            rankings: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    """MRR over all evaluated queries, tail-patch@10 over the tail-patched ones, and the measured share."""
    patched = {query_id: rankings[query_id] for query_id in saved["effects"]}
    top = [(corpus_id, query_id) for query_id, ranking in patched.items() for corpus_id, _ in ranking[:10]]
    return {"mrr": ranking_metrics(rankings, saved["ground_truth"])["mrr"],
            "tailpatch@10": tailpatch_metrics(patched, effects, (10,))["tailpatch@10"],
            "measured": sum(pair in effects for pair in top) / max(1, len(top))}


def top_share(saved: dict[str, Any], head: int) -> float:
    """Share of queries with ground truth whose BM25 top `head` holds one: with that head the fused MRR can
    fall below BM25's by at most (1 - this share) / (head + 1) (such a query's first hit is at worst
    pushed to rank head + 1)."""
    truth = {q: set(ids) for q, ids in saved["ground_truth"].items() if ids}
    hits = [bool(truth[q] & set(saved["open_set"]["bm25"][q][:head])) for q in truth]
    return sum(hits) / max(1, len(hits))


def hindsight_bounds(saved: dict[str, Any]) -> tuple[float, float, int]:
    """What no rule that leads with a ground-truth row and keeps TrackStar's other rows can beat, measured
    with hindsight: the mean change of tail-patch@10 against TrackStar's when each tail-patched query
    (whose TrackStar top 10 holds no ground-truth row) leads with (a) its ground-truth row of largest measured effect in place of TrackStar's
    10th, (b) BM25's first row in place of TrackStar's least effective top-10 row. Queries whose TrackStar top
    10 already holds a ground-truth row change nothing. Returns (a, b, queries counted)."""
    trackstar, bm25 = saved["open_set"]["trackstar"], saved["open_set"]["bm25"]
    best_truth, drop_least, counted = [], [], 0
    for query_id, effect in saved["effects"].items():
        top, truth = trackstar[query_id][:10], set(saved["ground_truth"].get(query_id, []))
        if len(top) < 10 or not all(corpus_id in effect for corpus_id in top) or bm25[query_id][0] not in effect:
            continue
        counted += 1
        if truth & set(top):
            best_truth.append(0.0)
            drop_least.append(0.0)
            continue
        measured_truth = [effect[corpus_id] for corpus_id in truth if corpus_id in effect]
        best_truth.append((max(measured_truth) - effect[top[9]]) / 10 if measured_truth else 0.0)
        drop_least.append((effect[bm25[query_id][0]] - min(effect[corpus_id] for corpus_id in top)) / 10)
    if not counted:
        return float("nan"), float("nan"), 0
    return sum(best_truth) / counted, sum(drop_least) / counted, counted


def as_ranking(ids: list[str]) -> list[tuple[str, float]]:
    return [(corpus_id, float(-rank)) for rank, corpus_id in enumerate(ids)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worlds", nargs="+", type=Path, help="quality.py work folders holding rankings.json")
    args = parser.parse_args(argv)
    print("| world | rule | MRR | bm25 MRR - 0.02 | tail-patch@10 | trackstar's | minus trackstar's (95% CI) | "
          "measured | both targets |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for folder in args.worlds:
        saved = json.loads((folder / "rankings.json").read_text())
        effects = measured_effects(saved)
        trackstar = {q: as_ranking(ids) for q, ids in saved["open_set"]["trackstar"].items()}
        base = {name: measure(saved, effects, {q: as_ranking(ids) for q, ids in saved["open_set"][name].items()})
                for name in ("bm25", "trackstar")}
        bounds = ", ".join(f"top {h}: {top_share(saved, h):.1%} (head {h}'s MRR loss bound "
                           f"{(1 - top_share(saved, h)) / (h + 1):.3f})" for h in (1, 2))
        print(f"| {folder.parent.name}/{folder.name} | BM25 has a ground-truth row in its {bounds} | | | | | | | |")
        best_truth, drop_least, counted = hindsight_bounds(saved)
        print(f"| {folder.parent.name}/{folder.name} | hindsight, {counted} queries: best measured ground-truth row "
              f"instead of TrackStar's 10th {best_truth:+.1e}; BM25's first instead of TrackStar's least effective "
              f"{drop_least:+.1e} | | | | | | | |")
        for label, rankings in rule_rankings(saved):
            row = measure(saved, effects, rankings)
            difference = paired_tailpatch_difference(rankings, trackstar, effects, 10)
            ok = row["mrr"] >= base["bm25"]["mrr"] - 0.02 and row["tailpatch@10"] >= base["trackstar"]["tailpatch@10"]
            print(f"| {folder.parent.name}/{folder.name} | {label} | {row['mrr']:.3f} | {base['bm25']['mrr'] - 0.02:.3f} | "
                  f"{row['tailpatch@10']:+.2e} | {base['trackstar']['tailpatch@10']:+.2e} | "
                  f"{difference.mean:+.1e} ± {difference.half_width:.1e} | {row['measured']:.0%} | {'PASS' if ok else 'fail'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
