"""The embedded default: pretraining reaches the issue's recall target.

It pretrains the full default model (about 8 minutes on 2 cores, longer on a loaded machine);
`python -m pytest -m "not default_run"` leaves it out for quick iterations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trackstar_pipeline.settings import TrainingSettings
from trackstar_pipeline.training.default_run import report_markdown, run_default


@pytest.mark.default_run
def test_default_pretraining_recalls_at_least_half_of_the_queries(tmp_path: Path) -> None:
    result, recall, seconds = run_default(tmp_path, progress=lambda _: None)
    report = report_markdown(result, recall, seconds, TrainingSettings())
    assert recall.accuracy >= 0.5, report
    assert 5e6 <= result.parameters <= 20e6
    assert "| 32+ |" in report and "| 1 |" in report
