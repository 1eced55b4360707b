"""The embedded default: pretraining reaches the issue's recall target.

It pretrains the full default model (about 4 minutes on 2 cores, longer on a loaded machine);
`python -m pytest -m "not default_run"` leaves it out for quick iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trackstar_pipeline.settings import TrainingSettings
from trackstar_pipeline.training.adaptive import candidate_widths
from trackstar_pipeline.training.default_run import report_markdown, run_default


@pytest.mark.default_run
def test_default_pretraining_recalls_at_least_half_of_the_queries(tmp_path: Path) -> None:
    result, recall, seconds = run_default(tmp_path, progress=lambda _: None)
    report = report_markdown(result, recall, seconds, TrainingSettings())
    assert recall.accuracy >= 0.5, report
    # the plan's width (epochs first: 128-256 wide, 1.5-6M parameters) is the saved model's
    hidden_size = json.loads((result.model_dir / "config.json").read_text())["hidden_size"]
    assert hidden_size in candidate_widths(TrainingSettings()) and f"hidden {hidden_size}" in result.plan
    assert 1e6 <= result.parameters <= 20e6
    assert "| 32+ |" in report and "| 1 |" in report
