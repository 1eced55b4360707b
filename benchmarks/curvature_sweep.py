"""Compare TrackStar's curvature and projection recipes across worlds, from `quality.py --sweep` runs.

    python benchmarks/quality.py --world 6 --world 7 --world wikidata --sweep --work W
    python benchmarks/curvature_sweep.py W/world-6 W/world-7 W/world-wikidata

Reads each world's summary.json and prints one row per trackstar variant: per world its MRR, its
tail-patch@10 as a multiple of BM25's, and whether it would meet issue 11's two TrackStar targets
(MRR >= 5x random; tail-patch@10 >= 1.2x BM25's and above random), then the variant's mean MRR and
mean tail-patch@10 over the worlds (a multiple of BM25's only where BM25's is positive). The default ('trackstar') is the first row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from quality import tailpatch10, trackstar_targets  # benchmarks/ is on sys.path when run as a script

VARIANT_PREFIXES = ("trackstar_lambda", "trackstar_damping", "trackstar_d")
ABLATIONS = ("trackstar_no_curvature", "trackstar_r_train_only", "trackstar_no_optimizer")


def variants(summaries: list[dict[str, Any]]) -> list[str]:
    """'trackstar' first, then the ablations and sweep entries every world has, sorted."""
    common = set.intersection(*(set(s["open_set"]) for s in summaries))
    swept = sorted(m for m in common if m.startswith(VARIANT_PREFIXES) or m in ABLATIONS)
    return ["trackstar", *swept]


def targets_met(table: dict[str, dict[str, float]], method: str) -> bool:
    """Issue 11's TrackStar targets (quality.py's own check) for `method` in place of trackstar."""
    return all(trackstar_targets(table, method).values())


def tailpatch_cell(table: dict[str, dict[str, float]], method: str) -> str:
    """tail-patch@10 and its multiple of BM25's (no multiple where BM25's effect is not positive)."""
    bm25, value = tailpatch10(table, "bm25"), tailpatch10(table, method)
    return f"{value:+.2e}" + (f" ({value / bm25:.2f}x)" if bm25 > 0 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worlds", nargs="+", type=Path, help="quality.py work folders (WORK/world-N)")
    args = parser.parse_args(argv)
    summaries = [json.loads((world / "summary.json").read_text()) for world in args.worlds]
    names = [world.name for world in args.worlds]
    header = ["variant"] + [f"{n}: MRR / tp@10 (÷ bm25's)" for n in names] + ["mean MRR", "mean tp@10", "targets met"]
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for method in variants(summaries):
        cells, mrrs, effects, met = [method], [], [], 0
        for summary in summaries:
            table = summary["open_set"]
            mrrs.append(table[method]["mrr"])
            effects.append(tailpatch10(table, method))
            met += targets_met(table, method)
            cells.append(f"{mrrs[-1]:.3f} / {tailpatch_cell(table, method)}{'' if targets_met(table, method) else ' fail'}")
        cells += [f"{sum(mrrs) / len(mrrs):.3f}", f"{sum(effects) / len(effects):+.2e}", f"{met}/{len(summaries)}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
