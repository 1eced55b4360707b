"""How well each score orders TrackStar's top 100 by the one-step effect its rows have, and what the fusion gains.

    python benchmarks/rerank_study.py RUN_FOLDER --world W [--n-corpus N] [--queries 40] [--pool 100]

RUN_FOLDER is one world's folder that benchmarks/quality.py wrote (rankings.json and pretrain/model);
--world and --n-corpus are the ones that run was given, so the same corpus is loaded. For the first
--queries tail-patched queries it measures the one-step effect (tail-patch Δp, the engine's
tailpatch_effects) of every row in the fused TrackStar ranking's top --pool, then prints:

- the mean Spearman correlation, within each query's pool, of the measured effects with: the projected
  TrackStar score the run ranked by; the exact cosine with V^{-1/2} on both sides (TrackStar's geometry,
  unprojected, no R); and the exact alignment cos(g_q, V^{-1/2} g_m) that evaluation.fusion_rerank uses;
- tail-patch@10 minus TrackStar's (paired, 95% half-width) for the pool re-ranked by each score, and
  for BM25's first row followed by each re-ranked pool (the fusion's page at BM25 weight 0).

docs/quality_results.md (session 19) gives its output on a saved run beside the session's first measurement,
which used TrackStar's λ-auto ranking as the pool (this script takes the fused one, R_train only).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from quality import WIKIDATA_DEFAULT, world_settings  # benchmarks/ is on sys.path when run as a script
from scipy.stats import spearmanr

from trackstar_pipeline.attribution.examples import context_length, encode_corpus, encode_queries
from trackstar_pipeline.attribution.exact_rerank import update_alignments
from trackstar_pipeline.attribution.gradients import collect_gradients
from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.evaluation.ablations import lambda_method_name
from trackstar_pipeline.evaluation.tailpatch import load_tailpatch_setup, tailpatch_effects
from trackstar_pipeline.models import load_model
from trackstar_pipeline.settings import load_settings
from trackstar_pipeline.storage.artifacts import load_sources


def paired(lists: dict[str, list[str]], baseline: dict[str, list[str]], effects: dict[tuple[str, str], float]) -> str:
    """Mean tail-patch@10 difference to the baseline's over the queries, with its 95% half-width."""
    differences = np.array([np.mean([effects[(c, q)] for c in lists[q][:10]])
                            - np.mean([effects[(c, q)] for c in baseline[q][:10]]) for q in lists])
    return f"{differences.mean():+.2e} ± {1.96 * differences.std(ddof=1) / np.sqrt(len(differences)):.2e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--world", required=True)
    parser.add_argument("--n-corpus", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--pool", type=int, default=100)
    args = parser.parse_args(argv)
    base = load_settings()
    settings = world_settings(args.world, base, args.n_corpus, 500, WIKIDATA_DEFAULT)
    attribution = settings.attribution
    corpus, queries, _ = load_sources(settings.data)
    saved = json.loads((args.run / "rankings.json").read_text())
    component = lambda_method_name(attribution, settings.evaluation.fusion_trackstar_lambda)
    ranked, scored = saved["open_set"][component], saved["open_set_scores"][component]
    query_ids = list(saved["effects"])[:args.queries]
    pools = {q: ranked[q][:args.pool] for q in query_ids}
    model_dir = args.run / "pretrain" / "model"
    model, tokenizer = load_model(str(model_dir))
    moments = load_second_moments(model_dir / "optimizer.pt", model)
    length = context_length(model, attribution.max_length)
    wanted = sorted({c for pool in pools.values() for c in pool} | {saved["open_set"]["bm25"][q][0] for q in query_ids})
    rows = corpus.filter(pl.col("id").is_in(wanted))
    rows_by_id = {e.example_id: e for e in encode_corpus(rows["id"].to_list(), rows["text"].to_list(), tokenizer,
                                                          length, attribution.overlength).examples}
    asked = queries.filter(pl.col("id").is_in(query_ids))
    query_by_id = {e.example_id: e for e in encode_queries(asked["id"].to_list(), asked["prompt"].to_list(),
                                                           asked["completion"].to_list(), tokenizer, length,
                                                           attribution.overlength).examples}
    print(f"{args.run}: {len(query_ids)} queries, pools of {args.pool} from {component}; measuring "
          f"{sum(map(len, pools.values()))} one-step effects", flush=True)
    work: dict[str, list[str]] = {}
    for q in query_ids:
        for c in pools[q] + [saved["open_set"]["bm25"][q][0]]:
            work.setdefault(c, []).append(q)
    measured = tailpatch_effects(model, load_tailpatch_setup(model_dir, model_dir / "optimizer.pt"), rows_by_id, work,
                                 query_by_id, attribution.batch_size)
    effects = {pair: effect.delta_prob for pair, effect in measured.items()}
    alignment = update_alignments(model, query_by_id, pools, lambda ids: [rows_by_id[i] for i in ids], attribution,
                                  moments, 2**30)
    exact = replace(attribution, projection_dim=0)
    both_query = torch.nn.functional.normalize(collect_gradients(model, [query_by_id[q] for q in query_ids], exact,
                                                                 moments), dim=1)  # (Q, D)
    both: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    pooled = sorted({c for pool in pools.values() for c in pool})
    for start in range(0, len(pooled), 64):
        batch = pooled[start:start + 64]
        vectors = torch.nn.functional.normalize(collect_gradients(model, [rows_by_id[c] for c in batch], exact, moments),
                                                dim=1)  # (B, D)
        cosines = (vectors @ both_query.T).tolist()  # (B, Q)
        for i, c in enumerate(batch):
            for j, q in enumerate(query_ids):
                if c in pools[q]:
                    both[q][c] = cosines[i][j]
    scores = {"projected (the run's order)": {q: dict(zip(ranked[q], scored[q])) for q in query_ids},
              "exact, V^-1/2 on both sides": both, "exact alignment (fusion_rerank)": alignment}
    baseline = {q: saved["open_set"]["trackstar"][q][:10] for q in query_ids}
    for q in query_ids:  # TrackStar's own top 10 was measured by the run
        for c in baseline[q]:
            effects.setdefault((c, q), saved["effects"][q][c])
    print(f"\n| score | Spearman with the effect, in the pool | pool re-ranked: tail-patch@10 - TrackStar's | "
          f"BM25's first + re-ranked pool |\n|---|---:|---:|---:|")
    for name, by_query in scores.items():
        rho = np.nanmean([spearmanr([by_query[q][c] for c in pools[q]], [effects[(c, q)] for c in pools[q]])[0]
                          for q in query_ids])
        order = {q: sorted(pools[q], key=lambda c: -by_query[q][c]) for q in query_ids}
        head = {q: saved["open_set"]["bm25"][q][0] for q in query_ids}
        fused = {q: [head[q]] + [c for c in order[q] if c != head[q]][:9] for q in query_ids}
        print(f"| {name} | {rho:.3f} | {paired(order, baseline, effects)} | {paired(fused, baseline, effects)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
