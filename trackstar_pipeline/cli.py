"""The `trackstar` command: score plain files, run the whole Dagster graph, query the table.

Each subcommand only parses arguments into the typed settings and calls one engine or pipeline
function; heavy imports happen inside the subcommand so `trackstar --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from trackstar_pipeline.settings import PipelineSettings, SettingsError, load_settings


def _lambda_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lambda must be a number in [0, 1] or 'auto', got {text!r}")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--lambda must be in [0, 1], got {value}")
    return value


def _attribution_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map the shared attribution flags onto dotted settings keys (only those given)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "projection_dim", None) is not None:
        overrides["attribution.projection_dim"] = args.projection_dim
    if getattr(args, "no_curvature", False):
        overrides["attribution.curvature"] = False
    if getattr(args, "lambda_mix", None) is not None:
        overrides["attribution.lambda_mix"] = args.lambda_mix
    if getattr(args, "batch_size", None) is not None:
        overrides["attribution.batch_size"] = args.batch_size
    if getattr(args, "device", None) is not None:
        overrides["attribution.device"] = args.device
    if getattr(args, "seed", None) is not None:
        overrides["attribution.projection_seed"] = args.seed
    return overrides


def _add_attribution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projection-dim", type=int, help="total projected dimension d (0: exact gradients)")
    parser.add_argument("--no-curvature", action="store_true", help="skip the R^{-1/2} correction")
    parser.add_argument("--lambda", dest="lambda_mix", type=_lambda_value, help="R mix weight in [0,1] or 'auto'")
    parser.add_argument("--batch-size", type=int, help="examples per gradient batch")
    parser.add_argument("--device", help="auto, cpu or cuda[:n]")
    parser.add_argument("--seed", type=int, help="projection seed")
    parser.add_argument("--config", type=Path, help="YAML/JSON settings file (see README)")


def _settings(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> PipelineSettings:
    return load_settings(args.config, {**_attribution_overrides(args), **(extra or {})})


def _command_score(args: argparse.Namespace) -> int:
    from trackstar_pipeline.attribution.score_files import score_files

    settings = _settings(args)
    summary = score_files(
        model_dir=args.model,
        corpus_path=args.corpus,
        queries_path=args.queries,
        output_path=args.output,
        settings=settings.attribution,
        top_k=args.top_k,
        optimizer_state_path=args.optimizer_state,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _command_run(args: argparse.Namespace) -> int:
    from trackstar_pipeline.pipeline_run import resolve_dagster_home, run_pipeline

    extra: dict[str, Any] = {}
    if args.corpus:
        extra["data.corpus_uri"] = args.corpus
    if args.queries:
        extra["data.queries_uri"] = args.queries
    if args.model:
        extra["training.model_uri"] = args.model
    if args.optimizer_state:
        extra["training.optimizer_state_uri"] = args.optimizer_state
    if args.storage:
        extra["storage.uri"] = args.storage
    settings = _settings(args, extra)
    dagster_home = resolve_dagster_home(args.dagster_home)
    report_path = run_pipeline(
        settings,
        dagster_home=dagster_home,
        progress=lambda message: print(message, flush=True),
        parallel_shards=args.parallel_shards,
        in_process=args.executor == "in-process",
    )
    print()
    print(_headline(settings))
    print(f"\nevaluation report: {report_path}")
    print(f"explore the runs and lineage: DAGSTER_HOME={dagster_home} dagster dev")
    return 0


def _headline(settings: PipelineSettings) -> str:
    """The headline metrics table of the report `trackstar run` just wrote."""
    from trackstar_pipeline.storage.layout import REPORTS
    from trackstar_pipeline.evaluation.report import headline_table
    from trackstar_pipeline.storage import ObjectStore

    summary = json.loads(ObjectStore(settings.storage).get_bytes(f"{REPORTS}/evaluation.json"))
    return headline_table(summary)


def _command_query(args: argparse.Namespace) -> int:
    from trackstar_pipeline.pipeline_run import query_table

    extra = {"storage.uri": args.storage} if args.storage else {}
    settings = _settings(args, extra)
    proponents = query_table(settings, prompt=args.prompt, completion=args.completion, k=args.k)
    for rank, proponent in enumerate(proponents, start=1):
        print(f"{rank:3d}  {proponent['score']:+.4f}  {proponent['id']}  {proponent.get('text', '')[:100]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackstar", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="attribute queries to a corpus, plain files in and out")
    score.add_argument("--model", required=True, help="save_pretrained directory with its tokenizer")
    score.add_argument("--corpus", required=True, help="corpus JSONL/Parquet (id, text, facts)")
    score.add_argument("--queries", required=True, help="queries JSONL/Parquet (id, prompt, completion, fact)")
    score.add_argument("--optimizer-state", help="optimizer.pt or .safetensors second moments")
    score.add_argument("--top-k", type=int, required=True, help="proponents kept per query")
    score.add_argument("--output", required=True, help="scores JSONL, one line per query")
    _add_attribution_flags(score)
    score.set_defaults(handler=_command_score)

    run = commands.add_parser("run", help="materialize the whole Dagster graph (embedded default)")
    run.add_argument("--corpus", help="corpus URI (local, file:// or s3://); default: embedded fact world")
    run.add_argument("--queries", help="queries URI")
    run.add_argument("--model", help="save_pretrained directory URI; default: pretrain one")
    run.add_argument("--optimizer-state", help="optimizer state URI for --model")
    run.add_argument("--storage", help="store URI: file://./.trackstar (default) or s3://bucket/prefix")
    run.add_argument("--dagster-home", type=Path,
                     help="instance folder for runs and lineage; default: $DAGSTER_HOME, else ./.dagster_home")
    run.add_argument("--executor", choices=["in-process", "multiprocess"], default="in-process",
                     help="in-process (fastest on one machine) or multiprocess (a process per step)")
    run.add_argument("--parallel-shards", type=int, default=1, help="shard runs launched at once")
    _add_attribution_flags(run)
    run.set_defaults(handler=_command_run)

    query = commands.add_parser("query", help="top proponents for one prompt from the materialized table")
    query.add_argument("--prompt", required=True)
    query.add_argument("--completion", required=True)
    query.add_argument("-k", type=int, default=10)
    query.add_argument("--storage", help="store URI used by `trackstar run`")
    _add_attribution_flags(query)
    query.set_defaults(handler=_command_query)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as error:
        parser.exit(2, f"trackstar: configuration error: {error}\n")
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Bad input is reported as one readable line; TRACKSTAR_DEBUG=1 shows the traceback.
        if os.environ.get("TRACKSTAR_DEBUG"):
            raise
        parser.exit(1, f"trackstar: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
