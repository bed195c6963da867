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
   calibration, no ground truth): sky pixels published nearer than 20 m, per mask. The sky is
   labelled by hand (SKY_BOXES, from looking at the images; the fifth frame is an underpass with
   no sky) and, inside those boxes, lamp posts, wires and signs are left out as pixels with
   image edges nearby (blurred gradient >= SKY_MAX_GRADIENT).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CONFIDENCE_THRESHOLDS = (0.0, 0.05, 0.1, 0.3, 0.5)
RELATIVE_LIMITS = (0.0, 0.02, 0.03, 0.05, 0.06, 0.07, 0.08, 0.1, 0.2)
SKY_NEAR_M = 20.0
SKY_MAX_GRADIENT = 40.0
SKY_BOXES = {   # frame (time in the file name) -> sky boxes (u0, v0, u1, v1) px, 881x400
    "14-50-10-570": ((360, 0, 700, 95),),
    "14-57-53-937": ((0, 0, 881, 18), (320, 18, 881, 40)),
    "15-02-03-700": ((0, 0, 385, 55), (560, 0, 690, 70)),
    "15-02-29-915": ((175, 0, 490, 60),),
    "15-26-56-946": (),
}
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


def sky_mask(left: np.ndarray, frame: str) -> np.ndarray:
    """(H, W) bool: the hand-labelled sky of `frame` without the pixels near image edges."""
    import cv2
    grey = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = cv2.blur(np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0))
                        + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1)), (9, 9))
    boxes = np.zeros(grey.shape, bool)
    for u0, v0, u1, v1 in SKY_BOXES[frame]:
        boxes[v0:v1, u0:u1] = True
    return boxes & (gradient < SKY_MAX_GRADIENT)


def sky_rows(pipeline, assets: Path) -> list[dict]:
    """Per mask: hand-labelled sky pixels of the DrivingStereo pairs published nearer than 20 m."""
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
        frame = left_path.name.split("_")[1][11:]
        frames.append((result, sky_mask(left, frame)))
    rows = []
    for threshold in CONFIDENCE_THRESHOLDS:
        for limit in RELATIVE_LIMITS:
            near = per_frame_max = kept = pixels = 0
            for result, sky in frames:
                rig = result.rig
                keep = trusted(result.disparity, result.confidence, result.uncertainty_px,
                               confidence_threshold=threshold, max_relative_uncertainty=limit,
                               cx_offset=rig.cx_offset)
                disparity = result.disparity if keep is None else \
                    np.where(keep, result.disparity, np.nan)
                depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
                count = int(np.sum(sky & (depth < SKY_NEAR_M)))
                kept += int(np.isfinite(depth).sum())
                pixels += depth.size
                near += count
                per_frame_max = max(per_frame_max, count)
            rows.append({"confidence_threshold": threshold, "max_relative_uncertainty": limit,
                         "frames": len(frames), "sky_near_px": near,
                         "sky_near_px_worst_frame": per_frame_max,
                         "sky_px": int(sum(sky.sum() for _, sky in frames)),
                         "density_pct": 100.0 * kept / pixels})
    return rows


def format_tables(report: dict) -> str:
    lines = [f"engine: {report['engine']}; synthetic pairs {report['size']} (seed 23)", "",
             "| pair | pixels | 2-sigma coverage | lower/upper half error | EPE px | bad-2 % |",
             "|---|---|---|---|---|---|"]
    for row in report["calibration"]:
        lines.append(f"| {row['pair']} | {row['pixels']} | {100 * row['coverage']:.1f} % | "
                     f"{row['half_ratio']:.2f} | {row['epe']:.2f} | {row['bad_2']:.1f} |")
    sky_px = report["sky"][0]["sky_px"] if report.get("sky") else 0
    lines += ["", "| confidence_threshold | max_relative_uncertainty | density % | bad-2 % |"
              + (f" DrivingStereo density % | sky px < 20 m (of {sky_px}) |"
                 if report.get("sky") else ""),
              "|---|---|---|---|" + ("---|---|" if report.get("sky") else "")]
    sky = {(r["confidence_threshold"], r["max_relative_uncertainty"]): r
           for r in report.get("sky") or []}
    for row in report["tradeoff"]:
        key = (row["confidence_threshold"], row["max_relative_uncertainty"])
        cell = (f" {sky[key]['density_pct']:.1f} | {sky[key]['sky_near_px']} |"
                if key in sky else "")
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
    outputs = synthetic_outputs(pipeline, args.synthetic, *args.size) if args.synthetic else []
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
