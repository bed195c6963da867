#!/usr/bin/env python3
"""Measure how well PSMNet's sigma_d is calibrated and what each depth mask keeps; print tables.

    PYTHONPATH=$PWD python scripts/uncertainty_calibration.py [--weights PATH] [--engine exact]
        [--synthetic 6] [--size 256x512] [--no-sky] [--json OUT]

No real pair with ground-truth disparity is available to this project (the samples have none:
README "Which depth to trust"), so the pairs with ground truth are the project's synthetic scenes
(`data.synthetic.SyntheticDataset`: textured planes with exact disparity and occlusions). Tables:
1. per pair: the 2-sigma coverage (fraction of pixels with |d - d_gt| <= 2 sigma_d; target
   85-99 %) and the lower-half / upper-half mean error ratio when pixels are ranked by sigma_d
   (target <= 0.5), with EPE and bad-2;
2. the density / error trade-off of candidate masks (confidence threshold x relative-uncertainty
   limit sigma_Z/Z) summed over the synthetic pairs;
3. the sky check on the real DrivingStereo samples (assets/samples/drivingstereo, real
   calibration, no ground truth): pixels of the top 10 rows published nearer than 20 m, per mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CONFIDENCE_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RELATIVE_LIMITS = (0.0, 0.02, 0.03, 0.05, 0.1)
SKY_ROWS = 10
SKY_NEAR_M = 20.0
DRIVINGSTEREO = Path("samples") / "drivingstereo" / "2018-07-11-14-48-52"


def _pipeline(weights: Path, engine: str):
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
    backend = PsmnetBackend(weights, device="cpu", engine=engine)
    # everything published: the masks are applied afterwards, from the same outputs
    return StereoPipeline(backend, PipelineOptions(confidence_threshold=0.0,
                                                   max_relative_uncertainty=0.0),
                          on_event=lambda text: None)


def synthetic_outputs(pipeline, count: int, height: int, width: int) -> list[dict]:
    """Run `count` synthetic scenes (disparities up to 0.85 * 128 px) through the pipeline."""
    from stereo_depth_ros.data.synthetic import SyntheticDataset
    dataset = SyntheticDataset(count, seed=23, height=height, width=width, max_disparity=128.0)
    outputs = []
    for sample in dataset:
        result = pipeline.process(sample.left, sample.right, sample.rig, points=False)
        outputs.append({"name": sample.name, "disparity": result.disparity,
                        "confidence": result.confidence, "sigma": result.uncertainty_px,
                        "gt": sample.disparity, "cx_offset": sample.rig.cx_offset})
    return outputs


def calibration_rows(outputs: list[dict]) -> list[dict]:
    from stereo_depth_ros.core.uncertainty import calibration_stats
    rows = []
    for out in outputs:
        stats = calibration_stats(out["disparity"], out["sigma"], out["gt"])
        rows.append({"pair": out["name"], **stats})
    return rows


def tradeoff_rows(outputs: list[dict]) -> list[dict]:
    from stereo_depth_ros.core.uncertainty import mask_tradeoff
    rows = []
    for threshold in CONFIDENCE_THRESHOLDS:
        for limit in RELATIVE_LIMITS:
            total = {"known": 0, "kept": 0, "bad_2_kept": 0}
            for out in outputs:
                counts = mask_tradeoff(out["disparity"], out["confidence"], out["sigma"],
                                       out["gt"], confidence_threshold=threshold,
                                       max_relative_uncertainty=limit,
                                       cx_offset=out["cx_offset"])
                for key in total:
                    total[key] += counts[key]
            rows.append({"confidence_threshold": threshold, "max_relative_uncertainty": limit,
                         "density_pct": 100.0 * total["kept"] / max(total["known"], 1),
                         "bad_2_pct": 100.0 * total["bad_2_kept"] / max(total["kept"], 1)})
    return rows


def sky_rows(pipeline, assets: Path) -> list[dict]:
    """Per mask: pixels of the top SKY_ROWS rows of each DrivingStereo pair nearer than 20 m."""
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.geometry import disparity_to_depth
    from stereo_depth_ros.core.image_io import read_image_rgb
    from stereo_depth_ros.core.kitti_calib import load_stereo_calibration
    from stereo_depth_ros.core.uncertainty import trusted

    folder = assets / DRIVINGSTEREO
    frames = []
    for left_path in sorted(folder.glob("*_left.jpg")):
        left = read_image_rgb(left_path)
        right = read_image_rgb(left_path.with_name(left_path.name.replace("_left", "_right")))
        height, width = left.shape[:2]
        calib = load_stereo_calibration(next(folder.glob("*.txt")), width, height)
        rig = StereoRig(fx=calib.fx, fy=calib.fy, cx_left=float(calib.p_left[0, 2]),
                        cx_right=float(calib.p_right[0, 2]), cy=float(calib.p_left[1, 2]),
                        baseline_m=calib.baseline_m, width=width, height=height)
        result = pipeline.process(left, right, rig, points=False)
        frames.append(result)
    rows = []
    for threshold in CONFIDENCE_THRESHOLDS:
        for limit in RELATIVE_LIMITS:
            near = per_frame_max = 0
            for result in frames:
                rig = result.rig
                keep = trusted(result.disparity, result.confidence, result.uncertainty_px,
                               confidence_threshold=threshold, max_relative_uncertainty=limit,
                               cx_offset=rig.cx_offset)
                disparity = result.disparity if keep is None else \
                    np.where(keep, result.disparity, np.nan)
                depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
                top = depth[:SKY_ROWS]
                count = int(np.sum(np.isfinite(top) & (top < SKY_NEAR_M)))
                near += count
                per_frame_max = max(per_frame_max, count)
            rows.append({"confidence_threshold": threshold, "max_relative_uncertainty": limit,
                         "frames": len(frames), "sky_near_px": near,
                         "sky_near_px_worst_frame": per_frame_max,
                         "sky_px": len(frames) * SKY_ROWS * frames[0].disparity.shape[1]})
    return rows


def format_tables(report: dict) -> str:
    lines = [f"engine: {report['engine']}; synthetic pairs {report['size']} (seed 23)", "",
             "| pair | pixels | 2-sigma coverage | lower/upper half error | EPE px | bad-2 % |",
             "|---|---|---|---|---|---|"]
    for row in report["calibration"]:
        lines.append(f"| {row['pair']} | {row['pixels']} | {100 * row['coverage']:.1f} % | "
                     f"{row['half_ratio']:.2f} | {row['epe']:.2f} | {row['bad_2']:.1f} |")
    lines += ["", "| confidence_threshold | max_relative_uncertainty | density % | bad-2 % |"
              + (" sky px < 20 m (DrivingStereo, 5 frames) |" if report.get("sky") else ""),
              "|---|---|---|---|" + ("---|" if report.get("sky") else "")]
    sky = {(r["confidence_threshold"], r["max_relative_uncertainty"]): r
           for r in report.get("sky") or []}
    for row in report["tradeoff"]:
        key = (row["confidence_threshold"], row["max_relative_uncertainty"])
        cell = f" {sky[key]['sky_near_px']} |" if key in sky else ""
        lines.append(f"| {key[0]:g} | {key[1]:g} | {row['density_pct']:.1f} | "
                     f"{row['bad_2_pct']:.2f} |{cell}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from stereo_depth_ros.tools._cli import find_default_weights, hxw_size
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default: the `make assets` one)")
    parser.add_argument("--engine", default="exact", choices=("reference", "exact", "fast"))
    parser.add_argument("--synthetic", type=int, default=6, help="synthetic pairs (default 6)")
    parser.add_argument("--size", type=hxw_size("256x512", minimum=64), default=(256, 512))
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--no-sky", action="store_true", help="skip the DrivingStereo sky check")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    weights = args.weights or find_default_weights()
    if weights is None or not Path(weights).is_file():
        print("no PSMNet weights: run `make assets` or pass --weights", file=sys.stderr)
        return 1
    pipeline = _pipeline(weights, args.engine)
    outputs = synthetic_outputs(pipeline, args.synthetic, *args.size)
    report = {"engine": pipeline.backend.describe(), "size": f"{args.size[0]}x{args.size[1]}",
              "calibration": calibration_rows(outputs), "tradeoff": tradeoff_rows(outputs)}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_sky:
        report["sky"] = sky_rows(pipeline, args.assets)
    print(format_tables(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
