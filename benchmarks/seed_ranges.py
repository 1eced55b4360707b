"""Each world's figures and issue 11's targets across training seeds, from quality.py folders already run.

    python benchmarks/seed_ranges.py W/seed-0/world-1 W/seed-1/world-1 W/seed-2/world-1 W/seed-0/world-7 ...

quality.py --seed prints the same table at the end of a run; this rebuilds it from the folders'
summary.json (and rankings.json for the fusion's paired tail-patch margin, which summaries written
before it was recorded lack), grouped by world, so runs made at different times can be pooled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from quality import describe, fusion_tailpatch_margin, seed_ranges_table  # benchmarks/ is on sys.path as a script


def load_run(folder: Path) -> dict[str, Any]:
    """A folder's summary, with the training seed and fusion margin filled in where it predates them."""
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"{folder}: no summary.json; run benchmarks/quality.py with --work pointing above it")
    summary = json.loads(summary_path.read_text())
    bench = summary.setdefault("benchmark", {})
    state = folder / "pretrain" / "model" / "training_state.json"
    if "training_seed" not in bench and state.exists():
        bench["training_seed"] = json.loads(state.read_text()).get("seed")
    if (bench.get("fusion_tailpatch_margin") or {}).get("mean") is None and (folder / "rankings.json").exists():
        bench["fusion_tailpatch_margin"] = fusion_tailpatch_margin(json.loads(
            (folder / "rankings.json").read_text())).as_record()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="quality.py world folders (holding summary.json)")
    args = parser.parse_args(argv)
    by_world: dict[str, list[dict[str, Any]]] = {}
    for folder in args.folders:
        summary = load_run(folder)
        if "world" not in summary["benchmark"]:
            raise SystemExit(f"{folder}: summary.json names no world; it was not written by benchmarks/quality.py")
        by_world.setdefault(str(summary["benchmark"]["world"]), []).append(summary)
    for world, runs in by_world.items():
        runs.sort(key=lambda run: (run["benchmark"].get("training_seed") is None, run["benchmark"].get("training_seed") or 0))
        print(f"### {describe(world)}: {len(runs)} run(s)\n\n{seed_ranges_table(runs)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
