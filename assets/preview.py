"""Markdown previews for asset metadata (what a person sees first in the UI)."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, rows: int = 5, width: int = 60) -> str:
    """The first rows of a frame as a Markdown table, long cells cut to `width` characters."""
    head = frame.head(rows)
    columns = head.columns
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head.iter_rows():
        cells = [str(value).replace("|", "\\|").replace("\n", " ") for value in row]
        lines.append("| " + " | ".join(cell if len(cell) <= width else cell[: width - 1] + "…" for cell in cells) + " |")
    return "\n".join(lines)
