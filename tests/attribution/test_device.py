"""One GPU per concurrent step: claims over a faked device count, on CPU (no GPU is touched)."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
import torch

from trackstar_pipeline.attribution.device import GPU_LOCK_DIR_ENV, claim_device, claim_gpu
from trackstar_pipeline.resources import TorchDevice


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch):
    """Fake indices are the cards' names only when CUDA_VISIBLE_DEVICES does not rename them."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def four_gpus(monkeypatch, tmp_path):
    """torch reports 4 CUDA devices; the lock files go to a fresh folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv(GPU_LOCK_DIR_ENV, str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_each_claim_gets_its_own_gpu_until_released(tmp_path):
    claims = [claim_gpu(3, tmp_path) for _ in range(3)]
    assert [str(claim.device) for claim in claims] == ["cuda:0", "cuda:1", "cuda:2"]
    with pytest.raises(TimeoutError, match="pool 'gpu'"):
        claim_gpu(3, tmp_path, wait_s=0.2, poll_s=0.05)
    claims[1].release()
    again = claim_gpu(3, tmp_path, wait_s=0.2)
    assert str(again.device) == "cuda:1"
    for claim in (claims[0], claims[2], again):
        claim.release()
    assert str(claim_gpu(3, tmp_path).device) == "cuda:0"


def test_a_gpu_held_by_another_process_is_skipped(tmp_path):
    held = claim_gpu(2, tmp_path)
    script = ("import sys; from pathlib import Path; from trackstar_pipeline.attribution.device import claim_gpu; "
              "print(claim_gpu(2, Path(sys.argv[1]), wait_s=0).device)")
    other = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert str(held.device) == "cuda:0" and other.stdout.strip() == "cuda:1"
    held.release()


def test_auto_claims_a_gpu_only_when_there_are_several(four_gpus, monkeypatch):
    first, second = claim_device("auto"), claim_device("cuda")
    assert (str(first.device), str(second.device)) == ("cuda:0", "cuda:1")
    pinned = claim_device("cuda:3")
    assert str(pinned.device) == "cuda:3" and pinned.lock is None  # an explicit index is the user's choice
    assert claim_device("cpu").device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    single = claim_device("auto")
    assert str(single.device) == "cuda" and single.lock is None


def test_concurrent_steps_resources_land_on_different_gpus(four_gpus):
    resources = [TorchDevice(device="auto") for _ in range(4)]
    for resource in resources:
        with dg.build_init_resource_context() as context:
            resource.setup_for_execution(context)
    assert sorted(str(resource.torch_device) for resource in resources) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with dg.build_init_resource_context() as context:
        resources[2].teardown_after_execution(context)
        late = TorchDevice(device="auto")
        late.setup_for_execution(context)
    assert str(late.torch_device) == "cuda:2"


def test_trackstar_run_sizes_the_gpu_pool_to_the_device_count(four_gpus, tmp_path):
    from trackstar_pipeline.pipeline_run import prepare_instance
    from trackstar_pipeline.settings import PipelineSettings

    instance = prepare_instance(PipelineSettings(), tmp_path / "home")
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 4


def test_processes_seeing_different_gpus_lock_the_same_card(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    held = claim_gpu(2, tmp_path)  # visible cuda:0 is card 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert str(claim_gpu(1, tmp_path, wait_s=0).device) == "cuda:0"  # card 3 is free
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(TimeoutError):
        claim_gpu(1, tmp_path, wait_s=0)  # card 2 is held by the first claim
    held.release()
