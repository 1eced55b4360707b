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
    AssetsDefinition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
    define_asset_job,
    in_process_executor,
    JobDefinition,
    load_assets_from_modules,
    multi_or_in_process_executor,
)

from trackstar_pipeline.assets import corpus, curvature, evaluation, gradients, index, model
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice, VectorStore
from trackstar_pipeline.pipeline_run import resolve_dagster_home
from trackstar_pipeline.settings import ExecutionSettings, PipelineSettings, build_dataclass, load_settings
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


def gpu_op_names(assets: list) -> list[str]:
    """Ops of the assets in the 'gpu' pool (read from the graph, not listed by hand)."""
    return sorted({item.op.name for item in assets if isinstance(item, AssetsDefinition) and item.op.pool == "gpu"})


def k8s_executor_config(execution: ExecutionSettings, gpu_ops: list[str]) -> dict:
    """k8s_job_executor config from the settings; the GPU ops' pods get the GPU limit as their dagster-k8s/config."""
    config: dict = {"per_step_k8s_config": {}}
    optional = {"job_namespace": execution.k8s_namespace, "job_image": execution.k8s_image,
                "max_concurrent": execution.max_concurrent}
    config.update({key: value for key, value in optional.items() if value is not None})
    if execution.k8s_env_config_maps:
        config["env_config_maps"] = list(execution.k8s_env_config_maps)
    if execution.k8s_env_secrets:
        config["env_secrets"] = list(execution.k8s_env_secrets)
    if execution.k8s_gpus_per_step > 0:
        limits = {execution.k8s_gpu_resource: str(execution.k8s_gpus_per_step)}
        config["per_step_k8s_config"] = {op: {"container_config": {"resources": {"limits": limits}}} for op in gpu_ops}
    return config


def build_executor(settings: PipelineSettings, assets: list) -> ExecutorDefinition:
    """The executor named by settings.execution.executor (k8s needs the dagster-k8s extra)."""
    execution = settings.execution
    if execution.executor == "in_process":
        return in_process_executor
    if execution.executor == "multiprocess":
        return multi_or_in_process_executor
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as error:
        raise ImportError("execution.executor is 'k8s' but dagster-k8s is not installed; "
                          'pip install -e ".[k8s]" (it pins dagster-k8s to the Dagster release)') from error
    return k8s_job_executor.configured(k8s_executor_config(execution, gpu_op_names(assets)), name="k8s")


def execution_run_config(settings: PipelineSettings, in_process: bool) -> dict:
    """The run config's `execution` part for `trackstar run`: its in-process/multiprocess choice, or none when the
    settings fix the executor (in_process, k8s)."""
    if settings.execution.executor != "multiprocess":
        return {}
    multiprocess = {} if settings.execution.max_concurrent is None else {"max_concurrent": settings.execution.max_concurrent}
    return {"execution": {"config": {"in_process": {}} if in_process else {"multiprocess": multiprocess}}}


def build_definitions(settings: PipelineSettings) -> Definitions:
    """The code location for one configuration."""
    assets = load_assets_from_modules(ASSET_MODULES)
    return Definitions(
        assets=assets,
        resources=build_resources(settings),
        schedules=[index.reoptimize_index_schedule],
        sensors=[corpus.corpus_shard_sensor, automation_sensor],
        jobs=[all_assets_job, index.reoptimize_index_job],
        executor=build_executor(settings, assets),
    )


def job_for_settings(settings_json: str) -> JobDefinition:
    """The all-assets job for a JSON-encoded PipelineSettings (reconstructable in executor subprocesses)."""
    settings = build_dataclass(PipelineSettings, json.loads(settings_json), where="settings_json")
    return build_definitions(settings).resolve_job_def(all_assets_job.name)


defs = build_definitions(settings_from_environment())
