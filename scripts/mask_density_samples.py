#!/usr/bin/env python3
"""What the default depth mask publishes on the real indoor and mixed sample pairs (no ground
truth): the share of pixels kept by the default mask, and by it without each of its parts, per
pair and per set; what each part costs in density on real scenes.

    PYTHONPATH=$PWD python scripts/mask_density_samples.py [--sets oak-d,eth3d_lowres,...]
        [--max-width 960] [--json OUT]

Pairs: `data.shipped_samples` (assets/samples, each with its calibration), resized by a power of
two to at most --max-width (Middlebury 2014's 2800 px pairs become 707 px, its usual quarter
size), matched by PSMNet (released KITTI 2015 weights, `exact` engine, CPU) with everything
published; the masks (scripts/uncertainty_calibration.py's Mask) are then applied to the same
outputs as the pipeline applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

SETS = ("oak-d", "middlebury_2014", "eth3d_lowres")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from uncertainty_calibration import Mask, _output, _pipeline  # noqa: E402


def masks() -> dict[str, Mask]:
    """The default mask and the default without each of its parts, by column title."""
    default = Mask.defaults()
    return {"default": default,
            "no sigma_d limit": replace(default, max_disparity_uncertainty=0.0),
            "no relative limit": replace(default, max_relative_uncertainty=0.0),
            "no occlusion filter": replace(default, occlusion_filter=False),
            "no fattening filter": replace(default, fattening_filter=False)}


def pair_row(pipeline, pair, max_width: int) -> dict:
    """Share of the pair's pixels (%) each mask publishes (one network run)."""
    left, right, rig = pair.load(max_width)
    out = _output(pipeline, pair.name, left, right, rig, None, 1.0)
    return {"pair": pair.name, "size": f"{left.shape[1]}x{left.shape[0]}",
            "density_pct": {title: 100.0 * float(mask.keep(out).mean())
                            for title, mask in masks().items()}}


def table(rows: list[dict], wanted: list[str]) -> list[str]:
    """Markdown: per pair and per set (mean), the density of each mask."""
    titles = list(masks())
    lines = ["| pair | size | " + " | ".join(f"{t} %" for t in titles) + " |",
             "|---|---|" + "---|" * len(titles)]

    def cells(group: list[dict]) -> str:
        return " | ".join(f"{np.mean([r['density_pct'][t] for r in group]):.1f}"
                          for t in titles) + " |"
    for row in rows:
        lines.append(f"| {row['pair']} | {row['size']} | " + cells([row]))
    for name in wanted:
        group = [r for r in rows if r["pair"].split("/")[0] == name]
        if group:
            lines.append(f"| {name} (mean of {len(group)}) | | " + cells(group))
    return lines


def main(argv: list[str] | None = None) -> int:
    from stereo_depth_ros.assets import find_default_weights
    from stereo_depth_ros.data.shipped_samples import shipped_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"sample folders (default {','.join(SETS)})")
    parser.add_argument("--max-width", type=int, default=960)
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    weights = find_default_weights()
    if weights is None or not Path(weights).is_file():
        print("no PSMNet weights: run `make assets`", file=sys.stderr)
        return 1
    wanted = args.sets.split(",")
    pairs = [p for p in shipped_pairs(args.assets / "samples") if p.name.split("/")[0] in wanted]
    pipeline = _pipeline(weights, "exact")
    rows = [pair_row(pipeline, pair, args.max_width) for pair in pairs]
    default = Mask.defaults()
    lines = [f"default mask: {default.label()}, fattening and occlusion filters; density = "
             "share of all pixels published", "", *table(rows, wanted)]
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({"default_mask": default.__dict__, "pairs": rows},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
