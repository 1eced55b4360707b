"""Attribution quality on worlds the defaults were not tuned on (issue 11): one table per world.

    python benchmarks/quality.py --world 1                      # generated world 1 only
    python benchmarks/quality.py --world 1 --world 2 --world 3 --world wikidata
    python benchmarks/quality.py --world 1 --set training.epochs=15 --set attribution.lambda_mix=0.99
    python benchmarks/quality.py --world path/to/my_world   # corpus.jsonl + queries.jsonl (README schema)

Each world runs the engine end to end, as `trackstar run` does, without the Dagster layer: the
world (data/world_generator.py, or the Wikidata world from data.wikidata_path), adaptive pretraining
(judged on the corpus only), fact recall on the queries, then evaluate() with trackstar, its
ablations (no curvature, R_train only, no optimizer correction), bm25, random and trackstar+bm25,
tail-patch included. It prints fact recall, MRR and tail-patch@1/3/10 for every method, for all
queries and for the queries the model gets right, checks issue 11's targets, and writes
WORK/<world>/summary.json and WORK/<world>/table.md. Pretraining is cached in WORK/<world>/pretrain
(the same corpus and settings are not trained twice). CPU-heavy: tens of minutes per world on 2 cores.

One pretraining run is one draw: recall moves by about 0.05, sometimes 0.17, between training seeds at
one plan, and every attribution figure with it. `--seed 0 --seed 1 --seed 2` runs each world once per
training seed (WORK/seed-S/<world>) and ends with each world's figures and targets across the seeds;
benchmarks/seed_ranges.py prints the same table from folders already run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from fusion_sweep import as_ranking, measured_effects  # benchmarks/ is on sys.path when run as a script

from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.data.records import ground_truth
from trackstar_pipeline.data.world_generator import draw_world_spec
from trackstar_pipeline.evaluation.evaluate import EvaluationInputs, evaluate
from trackstar_pipeline.evaluation.recall_summary import correct_only_summary
from trackstar_pipeline.evaluation.result import EvaluationResult
from trackstar_pipeline.evaluation.tailpatch import PairedDifference, load_tailpatch_setup, paired_tailpatch_difference
from trackstar_pipeline.models import load_model
from trackstar_pipeline.settings import PipelineSettings, load_settings
from trackstar_pipeline.storage.artifacts import load_sources
from trackstar_pipeline.training.pretrain import pretrain
from trackstar_pipeline.training.recall import fact_recall

WIKIDATA_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikidata_facts"
SHOWN = ("trackstar", "bm25", "random", "trackstar+bm25", "trackstar_no_curvature", "trackstar_r_train_only",
         "trackstar_no_optimizer")
COLUMNS = ("mrr", "tailpatch@1", "tailpatch@3", "tailpatch@10")
SWEEP_PREFIXES = ("trackstar_lambda", "trackstar_damping", "trackstar_d")
CURVATURE_SWEEP = {"evaluation.lambda_sweep": [0.5, 0.9, "auto"], "evaluation.damping_sweep": [0.1, 10.0],
                   "evaluation.projection_dim_sweep": [1024, 16384]}
"""--sweep: the curvature and projection recipes compared for the defaults (docs/quality_results.md)."""


def world_files(world: str) -> tuple[str, str] | None:
    """A world given as a folder holding corpus.jsonl|parquet and queries.jsonl|parquet (the README's schema):
    a user's own fact world, or one written by another generator; None for a named or generated world."""
    if world in ("wikidata", "embedded") or world.isdigit():
        return None
    folder = Path(world)
    if not folder.is_dir():
        raise SystemExit(f"--world {world}: not a generated world seed, 'wikidata', 'embedded' or a folder")
    found = []
    for name in ("corpus", "queries"):
        files = [folder / f"{name}.{suffix}" for suffix in ("jsonl", "parquet") if (folder / f"{name}.{suffix}").is_file()]
        if not files:
            raise SystemExit(f"--world {world}: no {name}.jsonl or {name}.parquet in the folder")
        found.append(str(files[0]))
    return found[0], found[1]


def world_settings(world: str, base: PipelineSettings, n_corpus: int, n_queries: int, wikidata: Path) -> PipelineSettings:
    """The benchmark's settings for one world: its data source (a folder's files are used whole: neither
    n_corpus nor n_queries applies to them)."""
    files = world_files(world)
    if files is not None:
        data = replace(base.data, corpus_uri=files[0], queries_uri=files[1], n_queries=n_queries)
    elif world == "wikidata":
        data = replace(base.data, world="wikidata", wikidata_path=str(wikidata), n_corpus=n_corpus, n_queries=n_queries)
    elif world == "embedded":
        data = replace(base.data, world="embedded", n_corpus=n_corpus, n_queries=n_queries)
    else:
        data = replace(base.data, world="generated", world_seed=int(world), n_corpus=n_corpus, n_queries=n_queries)
    return replace(base, data=data)


def run_world(world: str, settings: PipelineSettings, work: Path, pretrain_only: bool = False) -> dict[str, Any] | None:
    """Pretrain (or reuse), measure recall, evaluate; returns evaluation.json's summary plus timings
    (None with pretrain_only: the recall lines are the result, for comparing pretraining settings)."""
    started = time.perf_counter()
    corpus, queries, _ = load_sources(settings.data)
    result = pretrain(corpus, settings.training, work / "pretrain", progress=lambda line: print(f"  {line}", flush=True))
    pretrain_seconds = time.perf_counter() - started
    model, tokenizer = load_model(str(result.model_dir))
    recall = fact_recall(model, tokenizer, queries, corpus)
    print(f"  fact recall {recall.accuracy:.3f}; by mentions "
          + ", ".join(f"{b}: {t.accuracy:.2f}" for b, t in recall.by_bucket.items())
          + f"; probe {result.probe_recall}; pretraining {result.steps} steps, {pretrain_seconds:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if pretrain_only:
        return None
    evaluated = evaluate(EvaluationInputs(
        corpus, queries, ground_truth(corpus, queries), settings, model=model, tokenizer=tokenizer,
        second_moments=load_second_moments(result.optimizer_state_path, model),
        tailpatch=load_tailpatch_setup(result.model_dir, result.optimizer_state_path),
        fact_correct=recall.correct, fact_recall=recall.accuracy), work / "report",
        progress=lambda line: print(f"  {line}", flush=True))
    save_rankings(evaluated, work / "rankings.json")
    summary = dict(evaluated.summary)
    margin = (summary.get("paired_tailpatch", {}).get("open_set", {}).get("trackstar+bm25", {}).get("tailpatch@10")
              or {"mean": None, "half_width": None, "queries": 0})  # not measured, or the same ranking as trackstar
    summary["benchmark"] = {"world": world, "training_seed": settings.training.seed,
                            "fusion_tailpatch_margin": margin,
                            "by_mentions": {b: t.accuracy for b, t in recall.by_bucket.items()},
                            "pretrain_seconds": round(pretrain_seconds, 1), "pretrain_steps": result.steps,
                            "probe_recall": result.probe_recall, "parameters": result.parameters,
                            "seconds": round(time.perf_counter() - started, 1), "load_average": os.getloadavg()}
    return summary


def save_rankings(evaluated: EvaluationResult, path: Path) -> None:
    """The open-set rankings, ground truth, correctness and tail-patch effects, for offline fusion studies
    (benchmarks/fusion_sweep.py) without re-running the world."""
    effects: dict[str, dict[str, float]] = {}
    for (corpus_id, query_id), effect in evaluated.effects.items():
        effects.setdefault(query_id, {})[corpus_id] = effect.delta_prob
    queries = evaluated.queries
    path.write_text(json.dumps({
        "open_set": {method: {q: [c for c, _ in ranking] for q, ranking in per_query.items()}
                     for method, per_query in evaluated.rankings["open_set"].items()},
        "open_set_scores": {method: {q: [float(s) for _, s in ranking] for q, ranking in per_query.items()}
                            for method, per_query in evaluated.rankings["open_set"].items()},
        "ground_truth": {q: evaluated.ground_truth.get(q, []) for q in queries["id"].to_list()},
        "correct": dict(zip(queries["id"].to_list(), queries["correct"].to_list())),
        "effects": effects,
    }))


def fusion_tailpatch_margin(saved: dict[str, Any], k: int = 10) -> PairedDifference:
    """trackstar+bm25's tail-patch@k minus trackstar's, paired per query, from a saved rankings.json:
    the two share most of their top k, so only the paired interval says whether the target's sign is
    more than query-sampling noise."""
    fused, trackstar = (({q: as_ranking(ids) for q, ids in saved["open_set"][method].items()})
                        for method in ("trackstar+bm25", "trackstar"))
    return paired_tailpatch_difference(fused, trackstar, measured_effects(saved), k)


def world_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per method, MRR and tail-patch@1/3/10, for all queries and for correct ones."""
    correct = correct_only_summary(summary) or {"open_set": {}}
    lines = ["| method | " + " | ".join(COLUMNS) + " | " + " | ".join(f"{c} (correct)" for c in COLUMNS) + " |",
             "|---|" + "---:|" * (2 * len(COLUMNS))]
    sweep = sorted(m for m in summary["open_set"] if m.startswith(SWEEP_PREFIXES))
    for method in (*SHOWN, *sweep):
        if method not in summary["open_set"]:
            continue
        cells = [summary["open_set"][method].get(c) for c in COLUMNS]
        cells += [correct["open_set"].get(method, {}).get(c) for c in COLUMNS]
        names = COLUMNS + COLUMNS
        lines.append(f"| {method} | " + " | ".join("–" if v is None else f"{v:+.2e}" if n.startswith("tail") else f"{v:.3f}"
                                                    for n, v in zip(names, cells)) + " |")
    return "\n".join(lines)


def tailpatch10(table: dict[str, dict[str, Any]], method: str) -> float:
    """A method's tail-patch@10 in an open-set summary table (0 when not measured)."""
    return table[method].get("tailpatch@10") or 0.0


def trackstar_targets(table: dict[str, dict[str, Any]], method: str = "trackstar") -> dict[str, bool]:
    """Issue 11's two TrackStar targets, for `method` in trackstar's place (curvature_sweep.py asks per variant)."""
    tp = tailpatch10(table, method)
    return {
        f"{method} tail-patch@10 >= 1.2 x bm25's and > random": tp >= 1.2 * tailpatch10(table, "bm25")
        and tp > tailpatch10(table, "random"),
        f"{method} MRR >= 5 x random": table[method]["mrr"] >= 5 * table["random"]["mrr"],
    }


FUSION_TAILPATCH = "trackstar+bm25 tail-patch@10 >= trackstar's"


def target_checks(summary: dict[str, Any]) -> dict[str, bool]:
    """Issue 11's targets on one world (tail-patch@10 and MRR over all evaluated queries)."""
    table = summary["open_set"]
    tp, mrr = (lambda m: tailpatch10(table, m)), (lambda m: table[m]["mrr"])
    return {
        "fact recall >= 0.5": summary["fact_recall"] >= 0.5,
        **trackstar_targets(table),
        "trackstar+bm25 MRR >= bm25 - 0.02": mrr("trackstar+bm25") >= mrr("bm25") - 0.02,
        FUSION_TAILPATCH: tp("trackstar+bm25") >= tp("trackstar"),
    }


def margin_note(summary: dict[str, Any]) -> str:
    """The fusion tail-patch target's paired margin, as the target line's suffix ('' when not measured)."""
    margin = summary.get("benchmark", {}).get("fusion_tailpatch_margin")
    if not margin or margin.get("mean") is None or margin["mean"] != margin["mean"]:
        return ""
    verdict = "within noise" if PairedDifference(**margin).within_noise else "outside noise"
    return f" (paired difference {margin['mean']:+.1e} ± {margin['half_width']:.1e} over {margin['queries']} queries, {verdict})"


def target_lines(summary: dict[str, Any], checks: dict[str, bool]) -> str:
    """One PASS/FAIL line per target; the fusion tail-patch target's says whether its margin is noise."""
    return "\n".join(f"- {'PASS' if ok else 'FAIL'} {name}" + (margin_note(summary) if name == FUSION_TAILPATCH else "")
                     for name, ok in checks.items())


RANGED = (("fact recall (evaluated queries)", lambda s: s["fact_recall"]),
          ("fact recall (all queries)",  # evaluate keeps it; summaries written before that kept it under benchmark
           lambda s: s.get("fact_recall_all_queries") or s.get("benchmark", {}).get("fact_recall_all_queries")),
          *((f"{method} {column}", lambda s, m=method, c=column: s["open_set"].get(m, {}).get(c))
            for method in ("trackstar", "bm25", "random", "trackstar+bm25") for column in ("mrr", "tailpatch@10")),
          ("trackstar+bm25 minus trackstar tail-patch@10 (paired)",
           lambda s: (s.get("benchmark", {}).get("fusion_tailpatch_margin") or {}).get("mean")))
"""The figures seed_ranges_table spreads over seeds: recall and the figures issue 11's targets compare."""


def seed_ranges_table(summaries: list[dict[str, Any]]) -> str:
    """Markdown: one column per training seed, each figure's range and each target's pass count."""
    seeds = [str(summary.get("benchmark", {}).get("training_seed", "?")) for summary in summaries]
    lines = ["| figure | " + " | ".join(f"seed {seed}" for seed in seeds) + " | range |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for name, figure in RANGED:
        values = [figure(summary) for summary in summaries]
        shown = [v for v in values if v is not None and v == v]  # measured and not NaN
        as_text = (lambda v: f"{v:+.2e}") if "tail" in name else (lambda v: f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join("–" if v is None or v != v else as_text(v) for v in values) + " | "
                     + (f"{as_text(min(shown))} to {as_text(max(shown))}" if shown else "–") + " |")
    checks = [target_checks(summary) for summary in summaries]
    for name in checks[0]:
        passed = [check[name] for check in checks]
        lines.append(f"| target: {name} | " + " | ".join("PASS" if ok else "FAIL" for ok in passed)
                     + f" | {sum(passed)} of {len(passed)} |")
    return "\n".join(lines)


def describe(world: str) -> str:
    if world in ("wikidata", "embedded"):
        return f"{world} world"
    if not world.isdigit():
        return f"world from the files in {world}"
    return "generated world, " + draw_world_spec(int(world)).describe()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", help="generated world seed, 'wikidata', 'embedded' or a folder "
                        "with corpus.jsonl and queries.jsonl (repeatable; default 1, 2, 3 and wikidata)")
    parser.add_argument("--n-corpus", type=int, default=8000)
    parser.add_argument("--n-queries", type=int, default=500)
    parser.add_argument("--wikidata-path", type=Path, default=WIKIDATA_DEFAULT)
    parser.add_argument("--work", type=Path, default=Path(".quality_benchmark"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                        help="settings override, e.g. attribution.lambda_mix=auto")
    parser.add_argument("--pretrain-only", action="store_true",
                        help="stop after pretraining and fact recall (to compare pretraining settings)")
    parser.add_argument("--seed", action="append", type=int,
                        help="training seed (repeatable): each world once per seed, in WORK/seed-S/, then the "
                        "figures' ranges across seeds (default: training.seed, in WORK/)")
    parser.add_argument("--sweep", action="store_true",
                        help="also evaluate trackstar at other lambda, damping and d (CURVATURE_SWEEP); "
                        "--set overrides win")
    args = parser.parse_args(argv)
    # No d sweep unless asked for (it costs a gradient pass per d): --sweep's, or the user's own --set.
    overrides = dict(CURVATURE_SWEEP) if args.sweep else {"evaluation.projection_dim_sweep": []}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    base = load_settings(overrides=overrides)
    summaries: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seed or [None]:
        seeded = base if seed is None else replace(base, training=replace(base.training, seed=seed))
        root = args.work if seed is None else args.work / f"seed-{seed}"
        for world in args.world or ["1", "2", "3", "wikidata"]:
            print(f"== {describe(world)}{'' if seed is None else f', training seed {seed}'}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            work = root / f"world-{Path(world).resolve().name if world_files(world) else world}"
            summary = run_world(world, world_settings(world, seeded, args.n_corpus, args.n_queries, args.wikidata_path),
                                work, args.pretrain_only)
            if summary is None:
                continue
            summaries.setdefault(world, []).append(summary)
            checks = target_checks(summary)
            table = world_table(summary)
            bench = summary["benchmark"]
            text = (f"### {describe(world)}\n\n{summary['n_corpus']} rows, {summary['n_queries']} evaluated queries; "
                    f"training seed {bench['training_seed']}; fact recall {summary['fact_recall']:.3f} (all "
                    f"{summary['n_queries_total']} queries {summary['fact_recall_all_queries']:.3f}); pretraining "
                    f"{bench['pretrain_steps']} steps in {bench['pretrain_seconds']:.0f} s, whole world "
                    f"{bench['seconds']:.0f} s, load average {bench['load_average'][0]:.1f}; overrides "
                    f"{overrides or 'none'}\n\n{table}\n\n" + target_lines(summary, checks) + "\n")
            print(text, flush=True)
            (work / "table.md").write_text(text)
            (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for world, runs in summaries.items():
        if len(runs) > 1:
            print(f"### {describe(world)}: {len(runs)} training seeds\n\n{seed_ranges_table(runs)}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
