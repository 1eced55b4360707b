"""The executor is a setting: in_process, multiprocess or k8s, with GPU limits on the GPU assets' pods."""

from __future__ import annotations

import sys

import dagster as dg
import pytest

from trackstar_pipeline import definitions
from trackstar_pipeline.settings import ExecutionSettings, PipelineSettings, SettingsError, load_settings


def _executor_config(defs: dg.Definitions) -> dict:
    executor = defs.resolve_job_def(definitions.all_assets_job.name).executor_def
    resolved = executor.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    return resolved.value["config"]


def test_k8s_code_location_loads_and_gpu_assets_get_the_gpu_limit(tmp_path):
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[k8s]' or '.[dev]')")
    config = tmp_path / "settings.yaml"
    config.write_text("execution:\n  executor: k8s\n  k8s_namespace: trackstar\n  k8s_image: registry/trackstar:1\n"
                      "  max_concurrent: 32\n  k8s_gpus_per_step: 2\n  k8s_env_secrets: [trackstar-s3]\n")
    defs = definitions.build_definitions(load_settings(config))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(definitions.all_assets_job.name)
    assert job.executor_def.name == "k8s"
    executor = _executor_config(defs)
    assert (executor["job_namespace"], executor["job_image"], executor["max_concurrent"]) == \
        ("trackstar", "registry/trackstar:1", 32)
    assert executor["env_secrets"] == ["trackstar-s3"]
    pooled = {assets_def.op.name for assets_def in defs.assets if assets_def.op.pool == "gpu"}
    assert {"projected_gradients", "query_gradients"} <= pooled
    assert set(executor["per_step_k8s_config"]) == pooled  # exactly the GPU pool's ops, read from the graph
    for op in pooled:
        limits = executor["per_step_k8s_config"][op]["container_config"]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "2"}


def test_no_gpu_limit_when_none_is_asked():
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[k8s]' or '.[dev]')")
    defs = definitions.build_definitions(PipelineSettings(execution=ExecutionSettings(executor="k8s",
                                                                                      k8s_gpus_per_step=0)))
    assert _executor_config(defs)["per_step_k8s_config"] == {}


def test_k8s_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[k8s\]"'):
        definitions.build_definitions(PipelineSettings(execution=ExecutionSettings(executor="k8s")))


def test_local_executors_and_the_run_config_trackstar_run_passes():
    in_process = PipelineSettings(execution=ExecutionSettings(executor="in_process"))
    job = definitions.build_definitions(in_process).resolve_job_def(definitions.all_assets_job.name)
    assert job.executor_def is dg.in_process_executor
    assert definitions.execution_run_config(in_process, in_process=False) == {}
    default = PipelineSettings()
    assert definitions.build_definitions(default).resolve_job_def(
        definitions.all_assets_job.name).executor_def is dg.multi_or_in_process_executor
    assert definitions.execution_run_config(default, in_process=True) == {"execution": {"config": {"in_process": {}}}}
    limited = PipelineSettings(execution=ExecutionSettings(max_concurrent=3))
    assert definitions.execution_run_config(limited, in_process=False) == \
        {"execution": {"config": {"multiprocess": {"max_concurrent": 3}}}}


def test_unknown_executor_is_refused(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("execution:\n  executor: slurm\n")
    with pytest.raises(SettingsError, match="execution.executor.*'slurm' is not one of"):
        load_settings(config)
