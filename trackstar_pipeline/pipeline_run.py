"""`trackstar run` and `trackstar query`: the whole asset graph materialized in a persistent DAGSTER_HOME.

The runs are ordinary Dagster runs of the code location in definitions.py, so `dagster dev` (with
the same DAGSTER_HOME) shows them, their materializations, checks and lineage afterwards. This
module and definitions.py/cli.py are the only places in trackstar_pipeline/ that import Dagster.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from trackstar_pipeline.settings import PipelineSettings, settings_to_dict
from trackstar_pipeline.storage import ObjectStore

Progress = Callable[[str], None]

INSTANCE_YAML = """\
# Written by `trackstar run`. Steps in a pool wait for a free slot: gpu (one per GPU) and
# lancedb (1: concurrent merge_inserts of the same new keys can duplicate rows).
concurrency:
  pools:
    granularity: op
    default_limit: 1
telemetry:
  enabled: false
"""

DEFAULT_DAGSTER_HOME = Path(".dagster_home")


def resolve_dagster_home(given: Path | str | None = None) -> Path:
    """The instance folder: `given` (--dagster-home), else $DAGSTER_HOME, else ./.dagster_home; absolute."""
    if given is not None:
        return Path(given).expanduser().resolve()
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]).expanduser().resolve()
    return DEFAULT_DAGSTER_HOME.resolve()


@dataclass(frozen=True)
class Stage:
    """Assets `trackstar run` materializes in one run (per_shard: one run per corpus shard)."""

    assets: tuple[str, ...]
    per_shard: bool


def pipeline_stages(settings: PipelineSettings) -> list[Stage]:
    """The asset graph in topological order, cut into as few alternating unpartitioned/per-shard stages as it allows.

    An asset joins the current stage as soon as everything it depends on is in an earlier stage or
    the current one; when no asset of the current kind is ready, the kind switches.
    """
    from trackstar_pipeline.definitions import build_definitions

    graph = build_definitions(settings).resolve_asset_graph()
    order = [key for key in graph.toposorted_asset_keys if graph.get(key).is_materializable]
    parents = {key: set(graph.get(key).parent_keys) & set(order) for key in order}
    done: set = set()
    stages: list[Stage] = []
    per_shard = False
    while len(done) < len(order):
        current: list = []
        while True:  # grow the stage until no asset of its kind is ready
            ready = [key for key in order if key not in done and key not in current
                     and graph.get(key).is_partitioned == per_shard and parents[key] <= done | set(current)]
            if not ready:
                break
            current.extend(ready)
        if current:
            stages.append(Stage(tuple(key.to_user_string() for key in current), per_shard))
            done |= set(current)
        per_shard = not per_shard
    return stages


def prepare_instance(settings: PipelineSettings, dagster_home: Path) -> Any:
    """A persistent instance at dagster_home with the concurrency pools set, and the settings saved beside it."""
    import torch
    from dagster import DagsterInstance

    from trackstar_pipeline.definitions import SETTINGS_FILE

    dagster_home = dagster_home.resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    (dagster_home / SETTINGS_FILE).write_text(json.dumps(settings_to_dict(settings), indent=2))
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.event_log_storage.set_concurrency_slots("gpu", max(1, torch.cuda.device_count()))
    instance.event_log_storage.set_concurrency_slots("lancedb", 1)
    return instance


def register_shards(instance: Any, store: ObjectStore) -> list[str]:
    """What the shard sensor does, applied now: add partitions for new shard files, drop removed ones."""
    from trackstar_pipeline.assets.partitions import corpus_shards_partitions, registered_shards
    from trackstar_pipeline.storage import layout

    found = layout.discover_shards(store)
    new, gone = layout.shard_changes(set(registered_shards(instance)), found)
    if new:
        instance.add_dynamic_partitions(corpus_shards_partitions.name, new)
    for key in gone:
        instance.delete_dynamic_partition(corpus_shards_partitions.name, key)
    return found


def materialize_assets(instance: Any, settings: PipelineSettings, assets: Sequence[str], partition: str | None = None,
                       in_process: bool = False, log_level: str = "INFO") -> Any:
    """One run of the code location's asset job for the given assets (and shard)."""
    from dagster import AssetKey, build_reconstructable_job, execute_job

    job = build_reconstructable_job("trackstar_pipeline.definitions", "job_for_settings",
                                    reconstructable_args=(json.dumps(settings_to_dict(settings)),))
    from trackstar_pipeline.definitions import execution_run_config

    tags = {"dagster/partition": partition} if partition else {}
    run_config = {**execution_run_config(settings, in_process), "loggers": {"console": {"config": {"log_level": log_level}}}}
    with execute_job(job, instance, run_config=run_config, tags=tags,
                     asset_selection=[AssetKey(name) for name in assets]) as result:
        if not result.success:
            failures = [event.event_specific_data.error.message.strip()
                        for event in result.all_events if event.is_step_failure]
            where = f"[{partition}]" if partition else ""
            raise RuntimeError(f"run {result.run_id} for {list(assets)}{where} failed: {' | '.join(failures) or 'see dagster dev'}")
        return result.run_id


def _materialize_in_new_process(dagster_home: str, settings_json: str, assets: Sequence[str], partition: str,
                                in_process: bool) -> str:
    """One shard's run from a fresh process (Dagster's execute_job is not safe to call from threads)."""
    from dagster import DagsterInstance

    from trackstar_pipeline.settings import PipelineSettings, build_dataclass

    settings = build_dataclass(PipelineSettings, json.loads(settings_json))
    return materialize_assets(DagsterInstance.from_config(dagster_home), settings, assets, partition, in_process)


def materialize_shards(dagster_home: Path, settings: PipelineSettings, assets: Sequence[str], shards: Sequence[str],
                       parallel: int = 1, in_process: bool = False) -> Iterator[str]:
    """Runs `assets` for every shard, `parallel` runs at a time (each in its own process); yields shards as they finish."""
    from dagster import DagsterInstance

    if parallel <= 1:
        instance = DagsterInstance.from_config(str(Path(dagster_home).resolve()))
        for shard in shards:
            materialize_assets(instance, settings, assets, partition=shard, in_process=in_process)
            yield shard
        return
    arguments = (str(Path(dagster_home).resolve()), json.dumps(settings_to_dict(settings)), list(assets))
    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_materialize_in_new_process, *arguments, shard, in_process): shard for shard in shards}
        for future in as_completed(futures):
            future.result()
            yield futures[future]


def run_pipeline(settings: PipelineSettings, dagster_home: Path | None = None, progress: Progress = print,
                 parallel_shards: int = 1, in_process: bool = False) -> str:
    """Materializes every asset (stages from the asset graph) for every shard; returns the report's path or URI.

    dagster_home: the instance folder; None means $DAGSTER_HOME, else ./.dagster_home.
    """
    from trackstar_pipeline.storage import layout

    dagster_home = resolve_dagster_home(dagster_home)
    instance = prepare_instance(settings, dagster_home)
    store = ObjectStore(settings.storage)
    store.check_reachable()
    stages = pipeline_stages(settings)
    started_at = time.time()
    shards: list[str] | None = None
    for number, stage in enumerate(stages, start=1):
        names = ", ".join(stage.assets)
        if not stage.per_shard:
            progress(f"[{number}/{len(stages)}] {names}")
            materialize_assets(instance, settings, stage.assets, in_process=in_process)
            continue
        if shards is None:  # the first per-shard stage: what the shard sensor does, applied now
            shards = register_shards(instance, store)
            progress(f"      {len(shards)} corpus shard(s) registered")
        progress(f"[{number}/{len(stages)}] for each of {len(shards)} shard(s): {names}")
        for done, shard in enumerate(materialize_shards(dagster_home, settings, stage.assets, shards, parallel_shards,
                                                        in_process), 1):
            progress(f"      {shard} done ({done}/{len(shards)})")
    for line in step_time_lines(step_times(instance, started_at), time.time() - started_at):
        progress(line)
    report = store.uri_for(f"{layout.REPORTS}/report.md")
    return report[len("file://"):] if report.startswith("file://") else report


def step_times(instance: Any, since: float) -> dict[str, float]:
    """Seconds each asset's steps took in the runs created since `since` (summed over shards), from Dagster's
    own step records, so the figures are the ones `dagster dev` shows."""
    from datetime import datetime, timezone

    from dagster import RunsFilter

    totals: dict[str, float] = {}
    for run in instance.get_runs(RunsFilter(created_after=datetime.fromtimestamp(since, tz=timezone.utc))):
        for stats in instance.get_run_step_stats(run.run_id):
            if stats.start_time is not None and stats.end_time is not None:
                totals[stats.step_key] = totals.get(stats.step_key, 0.0) + stats.end_time - stats.start_time
    return totals


def step_time_lines(totals: dict[str, float], wall_seconds: float) -> list[str]:
    """The per-asset time table `trackstar run` prints at the end, slowest first."""
    lines = [f"time per asset (summed over shards; wall {wall_seconds:.0f} s in all):"]
    lines += [f"  {name:<24} {seconds:8.1f} s" for name, seconds in sorted(totals.items(), key=lambda item: -item[1])]
    return lines


def query_table(settings: PipelineSettings, prompt: str, completion: str, k: int = 10) -> list[dict[str, Any]]:
    """The k training examples whose stored vectors best match this prompt/completion's gradient."""
    import torch

    from trackstar_pipeline.storage.artifacts import load_checkpoint, load_inverse_sqrt, load_optimizer_moments
    from trackstar_pipeline.attribution.ann_index import load_ann_parameters
    from trackstar_pipeline.attribution.table_search import search_table
    from trackstar_pipeline.attribution.device import resolve_device
    from trackstar_pipeline.attribution.examples import context_length, encode_queries
    from trackstar_pipeline.attribution.gradients import collect_gradients
    from trackstar_pipeline.attribution.scoring import prepare_vectors
    from trackstar_pipeline.storage.vector_table import open_store_table

    attribution, store = settings.attribution, ObjectStore(settings.storage)
    device = resolve_device(attribution.device)
    model, tokenizer = load_checkpoint(store, settings.storage, device=device)
    encoded = encode_queries(["query"], [prompt], [completion], tokenizer,
                             context_length(model, attribution.max_length), attribution.overlength)
    moments = load_optimizer_moments(store, settings.storage, model, attribution.optimizer_correction)
    gradient = collect_gradients(model, encoded.examples, attribution, second_moments=moments, device=device)  # (1, d)
    vector = prepare_vectors(gradient, load_inverse_sqrt(store, settings.storage), attribution.unit_normalize)  # (1, d)
    table = open_store_table(store)
    return search_table(table, vector.to(torch.float32), k, settings.search, device, load_ann_parameters(store),
                        with_text=True)[0]
