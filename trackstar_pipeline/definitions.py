"""The Dagster code location: every asset, check, resource, schedule and sensor of the pipeline.

Resources are built here, and only here, from one PipelineSettings: file:// or s3:// storage,
cpu or cuda, are configuration. The settings come from $TRACKSTAR_CONFIG (YAML/JSON), else from
$DAGSTER_HOME/trackstar_settings.json (written by `trackstar run`, so `dagster dev` shows the same
store), else the defaults.
"""

from __future__ import annotations

import json
import os

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
    JobDefinition,
    load_assets_from_modules,
    multi_or_in_process_executor,
)

from trackstar_pipeline.assets import corpus, curvature, evaluation, gradients, index, model
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice, VectorStore
from trackstar_pipeline.pipeline_run import resolve_dagster_home
from trackstar_pipeline.settings import PipelineSettings, build_dataclass, load_settings
from trackstar_pipeline.storage import ObjectStore

SETTINGS_FILE = "trackstar_settings.json"
ASSET_MODULES = [corpus, model, gradients, curvature, index, evaluation]


def settings_from_environment() -> PipelineSettings:
    """$TRACKSTAR_CONFIG, else the settings `trackstar run` left in $DAGSTER_HOME, else defaults."""
    if os.environ.get("TRACKSTAR_CONFIG"):
        return load_settings(os.environ["TRACKSTAR_CONFIG"])
    saved = resolve_dagster_home() / SETTINGS_FILE
    if saved.is_file():
        return build_dataclass(PipelineSettings, json.loads(saved.read_text()), where=str(saved))
    return PipelineSettings()


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    """The one place where the environment (local vs S3, cpu vs cuda) picks the resources."""
    store = ObjectStore(settings.storage)
    return {
        "pipeline": PipelineConfig.from_settings(settings),
        "object_store": ObjectStoreResource.from_settings(settings.storage),
        "vector_store": VectorStore.for_store(store),
        "torch_device": TorchDevice(device=settings.attribution.device),
    }


all_assets_job = define_asset_job("trackstar_all", selection=AssetSelection.all(),
                                  description="Every asset; `trackstar run` launches it stage by stage and shard by shard.")

automation_sensor = AutomationConditionSensorDefinition(
    "trackstar_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Materializes new corpus shards' gradients and table rows (eager conditions).",
)


def build_definitions(settings: PipelineSettings) -> Definitions:
    """The code location for one configuration."""
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        resources=build_resources(settings),
        schedules=[index.reoptimize_index_schedule],
        sensors=[corpus.corpus_shard_sensor, automation_sensor],
        jobs=[all_assets_job, index.reoptimize_index_job],
        executor=multi_or_in_process_executor,
    )


def job_for_settings(settings_json: str) -> JobDefinition:
    """The all-assets job for a JSON-encoded PipelineSettings (reconstructable in executor subprocesses)."""
    settings = build_dataclass(PipelineSettings, json.loads(settings_json), where="settings_json")
    return build_definitions(settings).resolve_job_def(all_assets_job.name)


defs = build_definitions(settings_from_environment())
