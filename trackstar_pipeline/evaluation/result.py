"""What evaluate() measured, shared by evaluate.py (which fills it) and report.py (which writes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trackstar_pipeline.evaluation.scorers import Ranking
from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect


@dataclass
class EvaluationResult:
    """What evaluate() measured: the JSON summary plus the rankings and effects behind it."""

    summary: dict[str, Any]
    """Exactly what evaluation.json holds."""
    rankings: dict[str, dict[str, dict[str, Ranking]]]
    """setting ('open_set' | 'closed_set') -> method -> query id -> top proponents."""
    candidates: dict[str, list[str]]
    effects: dict[tuple[str, str], TailPatchEffect]
    queries: pl.DataFrame
    """The evaluated queries (the sample), with columns n_ground_truth, bucket, correct added."""
    corpus_text: dict[str, str]
    ground_truth: dict[str, list[str]]
    files: dict[str, Path] = field(default_factory=dict)
