#!/usr/bin/env python3
"""What the default depth mask publishes on the real indoor and mixed sample pairs (no ground
truth): the share of pixels kept with the relative-uncertainty limit alone and with the
fattening filter too, per pair; the filter's cost in density where scenes have blank walls.

    PYTHONPATH=$PWD python scripts/mask_density_samples.py [--sets oak-d,eth3d_lowres,...]
        [--limits 0.06,0.1,0.2] [--max-width 960] [--json OUT]

Pairs: `data.shipped_samples` (assets/samples, each with its calibration), resized by a power of
two to at most --max-width (Middlebury 2014's 2800 px pairs become 707 px, its usual quarter
size), matched by PSMNet (released KITTI 2015 weights, `exact` engine, CPU) with everything
published; the masks are then applied to the same outputs as the pipeline applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SETS = ("oak-d", "middlebury_2014", "eth3d_lowres")


def pair_row(pipeline, pair, max_width: int, limits: list[float]) -> dict:
    """Share of the pair's pixels published by each limit, alone and with the fattening filter
    (one network run; the masks are applied to its outputs as the pipeline applies them)."""
    from stereo_depth_ros.core.fattening import fattened
    from stereo_depth_ros.core.uncertainty import trusted
    left, right, rig = pair.load(max_width)
    result = pipeline.process(left, right, rig, points=False)
    band = fattened(result.left, result.disparity, rig.cx_offset)
    row = {"pair": pair.name, "size": f"{left.shape[1]}x{left.shape[0]}", "limits": {}}
    for limit in limits:
        keep = trusted(result.disparity, result.confidence, result.uncertainty_px,
                       max_relative_uncertainty=limit, cx_offset=rig.cx_offset)
        row["limits"][f"{limit:g}"] = {
            "limit_only_pct": 100.0 * float(keep.mean()),
            "with_fattening_filter_pct": 100.0 * float((keep & ~band).mean())}
    return row


def table(rows: list[dict], limits: list[float], wanted: list[str]) -> list[str]:
    """Markdown: per pair, the limit alone at the default, then each limit with the filter."""
    keys = [f"{limit:g}" for limit in limits]
    lines = ["| pair | size | limit " + keys[0] + " only % | "
             + " | ".join(f"limit {k} + filter %" for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]

    def cells(values: list[dict]) -> str:
        first = np.mean([v["limits"][keys[0]]["limit_only_pct"] for v in values])
        rest = [np.mean([v["limits"][k]["with_fattening_filter_pct"] for v in values])
                for k in keys]
        return f"{first:.1f} | " + " | ".join(f"{x:.1f}" for x in rest) + " |"
    for row in rows:
        lines.append(f"| {row['pair']} | {row['size']} | " + cells([row]))
    for name in wanted:
        group = [r for r in rows if r["pair"].split("/")[0] == name]
        if group:
            lines.append(f"| {name} (mean of {len(group)}) | | " + cells(group))
    return lines


def main(argv: list[str] | None = None) -> int:
    from stereo_depth_ros.config import SPECS
    from stereo_depth_ros.data.shipped_samples import shipped_pairs
    from stereo_depth_ros.assets import find_default_weights
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from uncertainty_calibration import _pipeline

    default = SPECS["max_relative_uncertainty"].default
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"sample folders (default {','.join(SETS)})")
    parser.add_argument("--limits", default=f"{default:g},0.06,0.1,0.2",
                        help="max_relative_uncertainty values to compare; the first is shown "
                        "alone too (default: the parameter's default, 0.06, 0.1, 0.2)")
    parser.add_argument("--max-width", type=int, default=960)
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    weights = find_default_weights()
    if weights is None or not Path(weights).is_file():
        print("no PSMNet weights: run `make assets`", file=sys.stderr)
        return 1
    limits = list(dict.fromkeys(float(x) for x in args.limits.split(",")))
    wanted = args.sets.split(",")
    pairs = [p for p in shipped_pairs(args.assets / "samples") if p.name.split("/")[0] in wanted]
    pipeline = _pipeline(weights, "exact")
    rows = [pair_row(pipeline, pair, args.max_width, limits) for pair in pairs]
    lines = [f"default limit {default:g}; density = share of all pixels published", "",
             *table(rows, limits, wanted)]
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({"default_limit": default, "limits": limits,
                                         "pairs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
