#!/usr/bin/env python3
"""Measure how well PSMNet's sigma_d is calibrated and what each depth mask keeps; print tables.

    PYTHONPATH=$PWD python scripts/uncertainty_calibration.py [--weights PATH] [--engine exact]
        [--synthetic 6] [--size 256x512] [--scales 1,0.5,0.25] [--no-sky] [--json OUT]

No real pair with ground-truth disparity is available to this project (the samples have none:
README "Which depth to trust"), so the pairs with ground truth are the project's synthetic scenes
(`data.synthetic.SyntheticDataset`: textured planes with exact disparity and occlusions). Tables:
1. per pair: the 2-sigma coverage (fraction of pixels with |d - d_gt| <= 2 sigma_d; target
   85-99 %) and the lower-half / upper-half mean error ratio when pixels are ranked by sigma_d
   (target <= 0.5), with EPE and bad-2;
2. the density / error trade-off of candidate masks (confidence threshold x relative-uncertainty
   limit sigma_Z/Z, with the fattening filter as the defaults apply it) summed over the
   synthetic pairs, beside the sky check on the real DrivingStereo samples
   (assets/samples/drivingstereo, real calibration, no ground truth): their density and the sky
   pixels published nearer than 20 m. The sky is labelled by hand (SKY_BOXES, from looking at
   the images; the fifth frame is an underpass with no sky) and, inside those boxes, lamp posts,
   wires, signs and tree edges are left out as pixels with image edges nearby (blurred gradient
   >= SKY_MAX_GRADIENT);
3. the default mask at each input_scale (the matcher at 0.5, 0.25 of the pairs' size): the
   limit at full resolution (what the node does) against the same limit on the physical
   sigma_Z / Z; bad-2 in full-resolution px (the disparity / input_scale against the range of
   the full-resolution truth inside each matcher pixel), density, DrivingStereo density and sky;
4. the fattening filter on and off with the default limit at input_scale 1, and its cost per
   DrivingStereo frame against the frame's time (`exact` engine, this CPU).
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


def _at_scale(pipeline, scale: float):
    """The pipeline set to match at `scale`."""
    import dataclasses
    pipeline.options = dataclasses.replace(pipeline.options, input_scale=scale)
    return pipeline


def truth_interval(ground_truth: np.ndarray, factor: int) -> np.ndarray:
    """(H/factor, W/factor, 2): the lowest and highest full-resolution truth inside each matcher
    pixel (the block of factor x factor pixels it was averaged from, INTER_AREA); NaN where any
    of them is unknown."""
    height, width = ground_truth.shape
    if height % factor or width % factor:
        raise ValueError(f"{width}x{height} is not a multiple of {factor}")
    blocks = ground_truth.reshape(height // factor, factor, width // factor, factor)
    known = np.isfinite(blocks).all(axis=(1, 3))
    safe = np.where(np.isfinite(blocks), blocks, 0.0)
    interval = np.stack([safe.min(axis=(1, 3)), safe.max(axis=(1, 3))], axis=-1)
    interval[~known] = np.nan
    return interval.astype(np.float32)


def _withheld(result) -> np.ndarray:
    from stereo_depth_ros.core.fattening import fattened
    cx_offset = result.rig.cx_offset if result.rig is not None else 0.0
    return fattened(result.left, result.disparity, cx_offset)


def synthetic_outputs(pipeline, count: int, height: int, width: int,
                      scale: float = 1.0) -> list[dict]:
    """Run `count` synthetic scenes (disparities up to 0.85 * 128 px) through the pipeline at
    input_scale `scale` (1 / scale an integer dividing the size)."""
    from stereo_depth_ros.data.synthetic import SyntheticDataset
    dataset = SyntheticDataset(count, seed=23, height=height, width=width, max_disparity=128.0)
    _at_scale(pipeline, scale)
    outputs = []
    for sample in dataset:
        result = pipeline.process(sample.left, sample.right, sample.rig, points=False)
        truth = (sample.disparity if scale == 1.0
                 else truth_interval(sample.disparity, round(1.0 / scale)))
        outputs.append({"name": sample.name, "disparity": result.disparity,
                        "confidence": result.confidence, "sigma": result.uncertainty_px,
                        "gt": truth, "cx_offset": result.rig.cx_offset, "scale": scale,
                        "withheld": _withheld(result)})
    return outputs


def calibration_rows(outputs: list[dict]) -> list[dict]:
    from stereo_depth_ros.core.uncertainty import calibration_stats
    rows = []
    for out in outputs:
        stats = calibration_stats(out["disparity"], out["sigma"], out["gt"])
        rows.append({"pair": out["name"], **stats})
    return rows


def mask_totals(outputs: list[dict], threshold: float, limit: float, *, fattening: bool = True,
                full_resolution: bool = True) -> dict[str, float]:
    """Density and bad-2 (%) of one mask summed over the pairs. fattening: the fattening filter
    as the node applies it (with limit > 0); full_resolution: the limit as the node applies it
    (False: on the physical sigma_Z / Z at the matcher's scale)."""
    from stereo_depth_ros.core.uncertainty import mask_tradeoff
    total = {"known": 0, "kept": 0, "bad_2_kept": 0}
    for out in outputs:
        # input_scale * sigma_d <= limit' * d: limit' = limit * input_scale is sigma_d / d <= limit
        applied = limit if full_resolution else limit * out["scale"]
        counts = mask_tradeoff(out["disparity"], out["confidence"], out["sigma"], out["gt"],
                               confidence_threshold=threshold, max_relative_uncertainty=applied,
                               cx_offset=out["cx_offset"], input_scale=out["scale"],
                               withheld=out["withheld"] if fattening and limit > 0 else None)
        for key in total:
            total[key] += counts[key]
    return {"density_pct": 100.0 * total["kept"] / max(total["known"], 1),
            "bad_2_pct": 100.0 * total["bad_2_kept"] / max(total["kept"], 1)}


def tradeoff_rows(outputs: list[dict]) -> list[dict]:
    return [{"confidence_threshold": threshold, "max_relative_uncertainty": limit,
             **mask_totals(outputs, threshold, limit)}
            for threshold in CONFIDENCE_THRESHOLDS for limit in RELATIVE_LIMITS]


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


def drivingstereo_frames(pipeline, assets: Path, scale: float = 1.0) -> list[dict]:
    """The DrivingStereo samples through the pipeline at `scale`, with their sky labels (full
    resolution), fattening bands and the frame and filter times (s)."""
    import time

    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.image_io import read_image_rgb
    from stereo_depth_ros.core.kitti_calib import load_stereo_calibration

    folder = assets / DRIVINGSTEREO
    _at_scale(pipeline, scale)
    frames = []
    for left_path in sorted(folder.glob("*_left.jpg")):
        left = read_image_rgb(left_path)
        right = read_image_rgb(left_path.with_name(left_path.name.replace("_left", "_right")))
        height, width = left.shape[:2]
        calib = load_stereo_calibration(next(folder.glob("*.txt")), width, height)
        rig = StereoRig(fx=calib.fx, fy=calib.fy, cx_left=float(calib.p_left[0, 2]),
                        cx_right=float(calib.p_right[0, 2]), cy=float(calib.p_left[1, 2]),
                        baseline_m=calib.baseline_m, width=width, height=height)
        start = time.perf_counter()
        result = pipeline.process(left, right, rig, points=False)
        processed = time.perf_counter()
        withheld = _withheld(result)
        filtered = time.perf_counter()
        frame = left_path.name.split("_")[1][11:]
        frames.append({"result": result, "sky": sky_mask(left, frame), "withheld": withheld,
                       "frame_s": processed - start, "filter_s": filtered - processed})
    return frames


def sky_totals(frames: list[dict], threshold: float, limit: float, *, fattening: bool = True,
               full_resolution: bool = True) -> dict:
    """One mask on the DrivingStereo frames: density (% of the matcher's pixels) and the
    labelled sky pixels (full resolution) published nearer than SKY_NEAR_M."""
    import cv2

    from stereo_depth_ros.core.geometry import disparity_to_depth
    from stereo_depth_ros.core.uncertainty import trusted
    near = worst = kept = pixels = 0
    for frame in frames:
        result, sky = frame["result"], frame["sky"]
        rig, scale = result.rig, result.rig.width / sky.shape[1]
        keep = trusted(result.disparity, result.confidence, result.uncertainty_px,
                       confidence_threshold=threshold,
                       max_relative_uncertainty=limit * (1.0 if full_resolution else scale),
                       cx_offset=rig.cx_offset, input_scale=scale)
        if fattening and limit > 0:
            keep = ~frame["withheld"] if keep is None else keep & ~frame["withheld"]
        disparity = result.disparity if keep is None else \
            np.where(keep, result.disparity, np.nan)
        depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
        kept += int(np.isfinite(depth).sum())
        pixels += depth.size
        if depth.shape != sky.shape:
            depth = cv2.resize(depth, (sky.shape[1], sky.shape[0]),
                               interpolation=cv2.INTER_NEAREST)
        count = int(np.sum(sky & (depth < SKY_NEAR_M)))
        near += count
        worst = max(worst, count)
    return {"frames": len(frames), "sky_near_px": near, "sky_near_px_worst_frame": worst,
            "sky_px": int(sum(frame["sky"].sum() for frame in frames)),
            "density_pct": 100.0 * kept / max(pixels, 1)}


def sky_rows(frames: list[dict]) -> list[dict]:
    """Per mask: hand-labelled sky pixels of the DrivingStereo pairs published nearer than 20 m."""
    return [{"confidence_threshold": threshold, "max_relative_uncertainty": limit,
             **sky_totals(frames, threshold, limit)}
            for threshold in CONFIDENCE_THRESHOLDS for limit in RELATIVE_LIMITS]


def scale_rows(synthetic: dict, drivingstereo: dict, limit: float) -> list[dict]:
    """The default limit at each scale: at full resolution (the node) and on sigma_Z / Z."""
    rows = []
    for scale in sorted(set(synthetic) | set(drivingstereo), reverse=True):
        for full in ((True, False) if scale != 1.0 else (True,)):    # the same at scale 1
            row = {"input_scale": scale, "limit_at_full_resolution": full}
            if scale in synthetic:
                row.update(mask_totals(synthetic[scale], 0.0, limit, full_resolution=full))
                row["unmasked_bad_2_pct"] = mask_totals(synthetic[scale], 0.0, 0.0)["bad_2_pct"]
            if scale in drivingstereo:
                sky = sky_totals(drivingstereo[scale], 0.0, limit, full_resolution=full)
                row.update(ds_density_pct=sky["density_pct"], sky_near_px=sky["sky_near_px"])
            rows.append(row)
    return rows


def fattening_rows(synthetic: list[dict], frames: list[dict], limit: float) -> list[dict]:
    rows = []
    for enabled in (True, False):
        sky = sky_totals(frames, 0.0, limit, fattening=enabled) if frames else {}
        rows.append({"fattening_filter": enabled,
                     **(mask_totals(synthetic, 0.0, limit, fattening=enabled)
                        if synthetic else {}),
                     "ds_density_pct": sky.get("density_pct"),
                     "sky_near_px": sky.get("sky_near_px")})
    return rows


def cost(frames: list[dict]) -> dict:
    """The fattening filter's time against the frame's (medians over the frames, s)."""
    filter_s = float(np.median([f["filter_s"] for f in frames]))
    frame_s = float(np.median([f["frame_s"] for f in frames]))
    return {"filter_s": filter_s, "frame_s": frame_s, "fraction_pct": 100.0 * filter_s / frame_s,
            "size": f"{frames[0]['result'].disparity.shape[1]}x"
                    f"{frames[0]['result'].disparity.shape[0]}"}


def format_tables(report: dict) -> str:
    lines = [f"engine: {report['engine']}; synthetic pairs {report['size']} (seed 23)", "",
             "| pair | pixels | 2-sigma coverage | lower/upper half error | EPE px | bad-2 % |",
             "|---|---|---|---|---|---|"]
    for row in report["calibration"]:
        lines.append(f"| {row['pair']} | {row['pixels']} | {100 * row['coverage']:.1f} % | "
                     f"{row['half_ratio']:.2f} | {row['epe']:.2f} | {row['bad_2']:.1f} |")
    sky_px = report["sky"][0]["sky_px"] if report.get("sky") else 0
    lines += ["", "input_scale 1, fattening filter on (as the defaults):", "",
              "| confidence_threshold | max_relative_uncertainty | density % | bad-2 % |"
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
    lines += _scale_table(report) + _fattening_table(report)
    return "\n".join(lines)


def _cell(row: dict, key: str, form: str) -> str:
    return "-" if row.get(key) is None else format(row[key], form)


def _scale_table(report: dict) -> list[str]:
    if not report.get("scales"):
        return []
    lines = ["", f"the default limit {report['default_limit']:g} by input_scale (bad-2 in "
             "full-resolution px; fattening filter on):", "",
             "| input_scale | limit applied | density % | bad-2 % | unmasked bad-2 % | "
             "DrivingStereo density % | sky px < 20 m |", "|---|---|---|---|---|---|---|"]
    for row in report["scales"]:
        how = ("at full resolution (default)" if row["limit_at_full_resolution"]
               else "on sigma_Z/Z at the scale")
        lines.append(f"| {row['input_scale']:g} | {how} | {_cell(row, 'density_pct', '.1f')} | "
                     f"{_cell(row, 'bad_2_pct', '.2f')} | "
                     f"{_cell(row, 'unmasked_bad_2_pct', '.2f')} | "
                     f"{_cell(row, 'ds_density_pct', '.1f')} | {_cell(row, 'sky_near_px', 'd')} |")
    return lines


def _fattening_table(report: dict) -> list[str]:
    if not report.get("fattening"):
        return []
    lines = ["", f"fattening filter, input_scale 1, default limit {report['default_limit']:g}:",
             "", "| fattening_filter | density % | bad-2 % | DrivingStereo density % | "
             "sky px < 20 m |", "|---|---|---|---|---|"]
    for row in report["fattening"]:
        lines.append(f"| {str(row['fattening_filter']).lower()} | "
                     f"{_cell(row, 'density_pct', '.1f')} | {_cell(row, 'bad_2_pct', '.2f')} | "
                     f"{_cell(row, 'ds_density_pct', '.1f')} | {_cell(row, 'sky_near_px', 'd')} |")
    if report.get("cost"):
        cost = report["cost"]
        lines += ["", f"fattening filter cost: {1000 * cost['filter_s']:.0f} ms per "
                  f"{cost['size']} frame, {cost['fraction_pct']:.2f} % of the frame "
                  f"({cost['frame_s']:.2f} s; medians over the DrivingStereo frames)"]
    return lines


def _scales(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if not values or values[0] != 1.0 or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated scales in (0, 1], "
                                         "starting with 1")
    return values


def main(argv: list[str] | None = None) -> int:
    from stereo_depth_ros.config import SPECS
    from stereo_depth_ros.assets import find_default_weights
    from stereo_depth_ros.tools._cli import hxw_size
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default: the `make assets` one)")
    parser.add_argument("--engine", default="exact", choices=("reference", "exact", "fast"))
    parser.add_argument("--synthetic", type=int, default=6, help="synthetic pairs (default 6)")
    parser.add_argument("--size", type=hxw_size("256x512", minimum=64), default=(256, 512))
    parser.add_argument("--scales", type=_scales, default=(1.0, 0.5, 0.25),
                        help="input scales to measure the default mask at (default 1,0.5,0.25)")
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--no-sky", action="store_true", help="skip the DrivingStereo sky check")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    weights = args.weights or find_default_weights()
    if weights is None or not Path(weights).is_file():
        print("no PSMNet weights: run `make assets` or pass --weights", file=sys.stderr)
        return 1
    limit = SPECS["max_relative_uncertainty"].default
    pipeline = _pipeline(weights, args.engine)
    synthetic = {scale: synthetic_outputs(pipeline, args.synthetic, *args.size, scale)
                 for scale in args.scales} if args.synthetic else {}
    outputs = synthetic.get(1.0, [])
    report = {"engine": pipeline.backend.describe(), "size": f"{args.size[0]}x{args.size[1]}",
              "default_limit": limit, "calibration": calibration_rows(outputs),
              "tradeoff": tradeoff_rows(outputs)}
    drivingstereo = {} if args.no_sky else {
        scale: drivingstereo_frames(pipeline, args.assets, scale) for scale in args.scales}
    if drivingstereo:
        report["sky"] = sky_rows(drivingstereo[1.0])
        report["cost"] = cost(drivingstereo[1.0])
    report["scales"] = scale_rows(synthetic, drivingstereo, limit)
    report["fattening"] = fattening_rows(outputs, drivingstereo.get(1.0, []), limit)
    print(format_tables(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
