#!/usr/bin/env python3
"""Measure the rectification check on every shipped real pair: correct vs perturbed calibration.

For each pair (assets/samples, `data.shipped_samples`; pairs wider than --max-width halved until
they fit, as the node is run on them) prints error_px / offset / roll with the pair's own
calibration, then error_px with the right camera's calibration perturbed by +-1.5 px of vertical
principal point and by +-0.2 degree of roll (rectified through core.rectify.Rectifier, as the node
does), and a summary: the largest error with the correct calibrations and the smallest with each
perturbation. The node's default WARN/ERROR thresholds were chosen from this output.

    PYTHONPATH=$PWD python scripts/measure_rectification_check.py [--assets assets] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from stereo_depth_ros.core.rectification_check import (measure_rectification,
                                                       misaligned_calibration)
from stereo_depth_ros.core.rectify import Rectifier
from stereo_depth_ros.data.shipped_samples import shipped_pairs

PERTURBATIONS = {"shift+1.5px": {"cy_shift_px": 1.5}, "shift-1.5px": {"cy_shift_px": -1.5},
                 "roll+0.2deg": {"roll_deg": 0.2}, "roll-0.2deg": {"roll_deg": -0.2}}
MAX_WIDTH = 1280


def perturbed(right: np.ndarray, rig, **change) -> np.ndarray:
    calibration = misaligned_calibration(rig, **change)
    return Rectifier(calibration.left, calibration.right, rig.width,
                     rig.height).rectify_right(right)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--max-width", type=int, default=MAX_WIDTH)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for pair in shipped_pairs(args.assets / "samples"):
        left, right, rig = pair.load(args.max_width)
        started = time.perf_counter()
        correct = measure_rectification(left, right, cx=rig.cx_left, cy=rig.cy)
        seconds = time.perf_counter() - started
        errors = {name: measure_rectification(left, perturbed(right, rig, **change),
                                              cx=rig.cx_left, cy=rig.cy).error_px
                  for name, change in PERTURBATIONS.items()}
        rows.append({"pair": pair.name, "size": f"{rig.width}x{rig.height}",
                     "error_px": correct.error_px, "offset_px": correct.offset_px,
                     "roll_deg": correct.roll_deg, "matches": correct.matches,
                     "seconds": seconds, **errors})
        print(f"{pair.name:45s} {rig.width}x{rig.height} ok {correct.error_px:.2f} px "
              f"(offset {correct.offset_px:+.2f}, roll {correct.roll_deg:+.3f} deg, "
              f"{correct.matches} matches, {seconds * 1000:.0f} ms) | "
              + " ".join(f"{name} {value:.2f}" for name, value in errors.items()), flush=True)
    print(f"largest error, correct calibration: {max(r['error_px'] for r in rows):.3f} px")
    for name in PERTURBATIONS:
        print(f"smallest error, {name}: {min(r[name] for r in rows):.3f} px")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
