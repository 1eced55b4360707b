"""The paper's d = 2^16 with curvature on: per-module blocks make R fit, through `trackstar score` and `trackstar run`.

A tiny Llama with many layers (hidden 16, 37 layers = 259 hooked modules) keeps every block about
253 wide, so R is 259 small blocks (130 MiB in float64) instead of a 32 GiB dense matrix.
"""

from __future__ import annotations

import json

import pytest
import torch

from attribution_helpers import make_tokenizer, tiny_llama, write_score_inputs
from trackstar_pipeline.attribution.curvature import CurvatureTooLargeError, model_curvature_blocks
from trackstar_pipeline.attribution.gradients import hooked_modules
from trackstar_pipeline.attribution.score_files import score_files
from trackstar_pipeline.settings import AttributionSettings

PAPER_DIM, LAYERS = 65536, 37


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: 259 small eigh calls are ~10x slower with 2 threads on a busy 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_module_blocks_are_the_projections_per_module_slices():
    model = tiny_llama(300, hidden=16, layers=LAYERS)
    settings = AttributionSettings(projection_dim=PAPER_DIM)
    sizes = model_curvature_blocks(model, settings)
    assert len(sizes) == len(hooked_modules(model, settings)) == 7 * LAYERS
    assert sum(sizes) == PAPER_DIM and max(sizes) - min(sizes) <= 1
    with pytest.raises(CurvatureTooLargeError, match="dense"):
        model_curvature_blocks(model, AttributionSettings(projection_dim=PAPER_DIM, curvature_blocks="dense"))


def test_score_runs_at_the_papers_dimension_with_curvature(tmp_path):
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer), hidden=16, layers=LAYERS)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    write_score_inputs(tmp_path, 4)
    messages: list[str] = []
    summary = score_files(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl",
                          tmp_path / "scores.jsonl", AttributionSettings(projection_dim=PAPER_DIM, lambda_mix="auto"),
                          top_k=3, progress=messages.append)
    assert summary["projection_dim"] == PAPER_DIM and 0.0 < summary["lambda"] < 1.0
    assert any(f"in {7 * LAYERS} module blocks" in message for message in messages)
    lines = [json.loads(line) for line in open(tmp_path / "scores.jsonl")]
    assert len(lines) == 4
    for line in lines:
        scores = [p["score"] for p in line["proponents"]]
        assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


@pytest.mark.slow
def test_tiny_run_at_the_papers_dimension_with_curvature(tmp_path, tiny, monkeypatch):
    """`trackstar run` materializes the whole graph at d = 65536; the per-block SPD check passes."""
    from dataclasses import replace

    import dagster as dg
    import yaml

    from trackstar_pipeline import cli
    from trackstar_pipeline.settings import StorageSettings, settings_to_dict
    from trackstar_pipeline.storage import ObjectStore, layout

    settings = tiny(StorageSettings(uri=(tmp_path / "store").as_uri()))
    settings = replace(settings,
                       attribution=replace(settings.attribution, projection_dim=PAPER_DIM),
                       training=replace(settings.training, hidden_size=16, intermediate_size=32, num_layers=LAYERS),
                       evaluation=replace(settings.evaluation, projection_dim_sweep=(1036,)))
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings_to_dict(settings)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--config", str(config), "--dagster-home", str(tmp_path / "home")]) == 0
    manifest = layout.get_json(ObjectStore(settings.storage), layout.CURVATURE_MANIFEST)
    assert manifest["enabled"] and manifest["blocks"] == 7 * LAYERS
    instance = dg.DagsterInstance.from_config(str((tmp_path / "home").resolve()))
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("curvature_inverse_sqrt"), "r_spd_after_damping"), limit=5)
    assert records and {record.status.value for record in records} == {"SUCCEEDED"}
    summary = json.loads((tmp_path / "store" / "reports" / "evaluation.json").read_text())
    assert "trackstar" in summary["open_set"]

