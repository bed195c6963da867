#!/usr/bin/env python3
"""Measure how well PSMNet's sigma_d is calibrated and what each depth mask keeps; print tables.

    PYTHONPATH=$PWD python scripts/uncertainty_calibration.py [--weights PATH] [--engine exact]
        [--synthetic 6] [--size 256x512] [--scales 1,0.5,0.25] [--no-sky] [--json OUT]

Pairs with ground truth: the real Middlebury pairs `make assets` fetches
(assets/ground_truth: 2014 Motorcycle with its calibration, 2003 Cones without one, so its
relative limit takes the disparity at infinity as 0, stricter than the truth), cropped to a
multiple of 4 px, and the project's synthetic scenes (`data.synthetic.SyntheticDataset`: textured
planes with exact disparity and occlusions). Tables:
1. per pair: the 2-sigma coverage (fraction of pixels with |d - d_gt| <= 2 sigma_d; target
   85-99 %) and the lower-half / upper-half mean error ratio when pixels are ranked by sigma_d
   (target <= 0.5), with EPE and bad-2;
2. the density / bad-2 trade-off of candidate masks (relative limit sigma_Z/Z x limit on sigma_d
   in px, and confidence thresholds, with the fattening and occlusion filters as the defaults
   apply them) on each real pair and summed over the synthetic ones, beside the sky check on the
   real DrivingStereo samples (assets/samples/drivingstereo, real calibration, no ground truth):
   their density and the sky pixels published nearer than 20 m. The sky is labelled by hand
   (SKY_BOXES, from looking at the images; the fifth frame is an underpass with no sky) and,
   inside those boxes, lamp posts, wires, signs and tree edges are left out as pixels with image
   edges nearby (blurred gradient >= SKY_MAX_GRADIENT);
3. the default mask at each input_scale (the matcher at 0.5, 0.25 of the pairs' size; limits at
   full resolution, as the node applies them); bad-2 in full-resolution px (the disparity /
   input_scale against the range of the full-resolution truth inside each matcher pixel);
4. the default mask with each filter off, and the filters' cost per DrivingStereo frame against
   the frame's time (`exact` engine, this CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

RELATIVE_LIMITS = (0.0, 0.05, 0.1, 0.2)
SIGMA_LIMITS = (0.0, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 3.0)
CONFIDENCE_THRESHOLDS = (0.1, 0.3, 0.5)
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
GROUND_TRUTH = Path("ground_truth")
CROP_MULTIPLE = 4          # the real pairs are cropped to this, for the truth at 1/2 and 1/4


@dataclass(frozen=True)
class Mask:
    """One depth mask, as the node's parameters of the same names state it."""

    confidence_threshold: float = 0.0
    max_relative_uncertainty: float = 0.0
    max_disparity_uncertainty: float = 0.0
    fattening_filter: bool = True
    occlusion_filter: bool = True

    @classmethod
    def defaults(cls) -> Mask:
        from stereo_depth_ros.config import default_depth_mask
        return cls(**default_depth_mask())

    def keep(self, out: dict) -> np.ndarray:
        """(H, W) bool: the pixels of one pipeline output (see `_output`) this mask publishes,
        by the pipeline's own rules (PipelineOptions decides where the filters apply)."""
        from stereo_depth_ros.core.uncertainty import trusted
        from stereo_depth_ros.pipeline import PipelineOptions
        options = PipelineOptions(input_scale=out["scale"], **asdict(self))
        keep = trusted(out["disparity"], out["confidence"], out["sigma"],
                       confidence_threshold=self.confidence_threshold,
                       max_relative_uncertainty=self.max_relative_uncertainty,
                       max_disparity_uncertainty=self.max_disparity_uncertainty,
                       cx_offset=out["cx_offset"], input_scale=out["scale"])
        keep = np.isfinite(out["disparity"]) if keep is None else keep
        if options.filters_fattening(out["sigma"]):
            keep = keep & ~out["fattened"]
        if options.filters_occlusion(out["sigma"]):
            keep = keep & ~out["occluded"]
        return keep

    def label(self) -> str:
        return (f"conf {self.confidence_threshold:g}, rel {self.max_relative_uncertainty:g}, "
                f"sigma {self.max_disparity_uncertainty:g} px")


def _pipeline(weights: Path, engine: str):
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
    backend = PsmnetBackend(weights, device="cpu", engine=engine)
    # everything published: the masks are applied afterwards, from the same outputs
    return StereoPipeline(backend, PipelineOptions(confidence_threshold=0.0,
                                                   max_relative_uncertainty=0.0,
                                                   max_disparity_uncertainty=0.0),
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


def _output(pipeline, name, left, right, rig, truth, scale: float) -> dict:
    """One pair through the pipeline at `scale`, with what every mask needs and its times."""
    import time

    from stereo_depth_ros.core.fattening import fattened
    from stereo_depth_ros.core.occlusion import occluded
    _at_scale(pipeline, scale)
    start = time.perf_counter()
    result = pipeline.process(left, right, rig, points=False)
    processed = time.perf_counter()
    cx_offset = result.rig.cx_offset if result.rig is not None else 0.0
    band = fattened(result.left, result.disparity, cx_offset)
    filtered = time.perf_counter()
    hidden = occluded(result.disparity)
    done = time.perf_counter()
    if truth is not None and scale != 1.0:
        truth = truth_interval(truth, round(1.0 / scale))
    return {"name": name, "disparity": result.disparity, "confidence": result.confidence,
            "sigma": result.uncertainty_px, "gt": truth, "cx_offset": cx_offset, "scale": scale,
            "rig": result.rig, "fattened": band, "occluded": hidden,
            "frame_s": processed - start, "fattening_s": filtered - processed,
            "occlusion_s": done - filtered}


def real_outputs(pipeline, assets: Path, scale: float = 1.0) -> list[dict]:
    """The real pairs with ground truth (assets/ground_truth/<set>/<scene>), cropped to a
    multiple of CROP_MULTIPLE px, at `scale`; [] when `make assets` has not fetched them."""
    from stereo_depth_ros.data.middlebury import Middlebury
    outputs = []
    for folder in sorted(p for p in (assets / GROUND_TRUTH).glob("*") if p.is_dir()):
        for sample in Middlebury(folder):
            height, width = (n - n % CROP_MULTIPLE for n in sample.left.shape[:2])
            rig = sample.rig
            if rig is not None:
                rig = replace(rig, width=width, height=height)
            outputs.append(_output(
                pipeline, f"{folder.name}/{sample.name}",
                np.ascontiguousarray(sample.left[:height, :width]),
                np.ascontiguousarray(sample.right[:height, :width]), rig,
                sample.disparity[:height, :width], scale))
    return outputs


def synthetic_outputs(pipeline, count: int, height: int, width: int,
                      scale: float = 1.0) -> list[dict]:
    """Run `count` synthetic scenes (disparities up to 0.85 * 128 px) through the pipeline at
    input_scale `scale` (1 / scale an integer dividing the size)."""
    from stereo_depth_ros.data.synthetic import SyntheticDataset
    dataset = SyntheticDataset(count, seed=23, height=height, width=width, max_disparity=128.0)
    return [_output(pipeline, sample.name, sample.left, sample.right, sample.rig,
                    sample.disparity, scale) for sample in dataset]


def calibration_rows(outputs: list[dict]) -> list[dict]:
    from stereo_depth_ros.core.uncertainty import calibration_stats
    rows = []
    for out in outputs:
        gt = out["gt"] if out["gt"].ndim == 2 else None
        if gt is None:
            continue
        stats = calibration_stats(out["disparity"], out["sigma"], gt)
        rows.append({"pair": out["name"], **stats})
    return rows


def mask_totals(outputs: list[dict], mask: Mask) -> dict[str, float]:
    """Density and bad-2 (%, full-resolution px) of one mask summed over the pairs."""
    from stereo_depth_ros.core.uncertainty import mask_tradeoff
    total = {"known": 0, "kept": 0, "bad_2_kept": 0}
    for out in outputs:
        counts = mask_tradeoff(out["disparity"], None, out["sigma"], out["gt"],
                               confidence_threshold=0.0, max_relative_uncertainty=0.0,
                               input_scale=out["scale"], withheld=~mask.keep(out))
        for key in total:
            total[key] += counts[key]
    return {"density_pct": 100.0 * total["kept"] / max(total["known"], 1),
            "bad_2_pct": 100.0 * total["bad_2_kept"] / max(total["kept"], 1)}


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
    resolution)."""
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.image_io import read_image_rgb
    from stereo_depth_ros.core.kitti_calib import load_stereo_calibration

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
        frame = left_path.name.split("_")[1][11:]
        out = _output(pipeline, frame, left, right, rig, None, scale)
        out["sky"] = sky_mask(left, frame)
        frames.append(out)
    return frames


def sky_totals(frames: list[dict], mask: Mask) -> dict:
    """One mask on the DrivingStereo frames: density (% of the matcher's pixels) and the
    labelled sky pixels (full resolution) published nearer than SKY_NEAR_M."""
    import cv2

    from stereo_depth_ros.core.geometry import disparity_to_depth
    near = worst = kept = pixels = 0
    for frame in frames:
        rig, sky = frame["rig"], frame["sky"]
        disparity = np.where(mask.keep(frame), frame["disparity"], np.nan)
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
            "ds_density_pct": 100.0 * kept / max(pixels, 1)}


def candidate_masks() -> list[Mask]:
    masks = [Mask(max_relative_uncertainty=r, max_disparity_uncertainty=s)
             for r in RELATIVE_LIMITS for s in SIGMA_LIMITS]
    return masks + [Mask(confidence_threshold=t) for t in CONFIDENCE_THRESHOLDS]


def mask_row(mask: Mask, real: list[dict], synthetic: list[dict], frames: list[dict]) -> dict:
    """One mask on every source: each real pair, the real pairs pooled, the synthetic pairs
    pooled, the DrivingStereo sky."""
    row = {"mask": asdict(mask), "real": {}}
    for out in real:
        row["real"][out["name"]] = mask_totals([out], mask)
    if real:
        row["real_pooled"] = mask_totals(real, mask)
    if synthetic:
        row["synthetic"] = mask_totals(synthetic, mask)
    if frames:
        row["sky"] = sky_totals(frames, mask)
    return row


def filter_rows(real, synthetic, frames) -> list[dict]:
    """The default mask, then with each filter off."""
    default = Mask.defaults()
    return [mask_row(mask, real, synthetic, frames) for mask in (
        default, replace(default, fattening_filter=False),
        replace(default, occlusion_filter=False))]


def cost(frames: list[dict]) -> dict:
    """The filters' time against the frame's (medians over the frames, s)."""
    frame_s = float(np.median([f["frame_s"] for f in frames]))
    out = {"frame_s": frame_s, "size": f"{frames[0]['disparity'].shape[1]}x"
                                       f"{frames[0]['disparity'].shape[0]}"}
    for name in ("fattening_s", "occlusion_s"):
        out[name] = float(np.median([f[name] for f in frames]))
        out[name.replace("_s", "_pct")] = 100.0 * out[name] / frame_s
    return out


def _cells(row: dict, real_names: list[str]) -> str:
    def pair(values: dict | None) -> str:
        if not values:
            return "- | -"
        return f"{values['density_pct']:.1f} | {values['bad_2_pct']:.2f}"
    cells = [pair(row["real"].get(name)) for name in real_names]
    cells.append(pair(row.get("synthetic")))
    sky = row.get("sky")
    cells.append(f"{sky['ds_density_pct']:.1f} | {sky['sky_near_px']}" if sky else "- | -")
    return " | ".join(cells) + " |"


def _header(first: str, real_names: list[str], sky_px: int | None) -> list[str]:
    columns = [first] + [f"{name.split('/')[-1]} density % | bad-2 %" for name in real_names]
    columns += ["synthetic density % | bad-2 %", "DrivingStereo density % | sky px < 20 m"
                + (f" (of {sky_px})" if sky_px else "")]
    count = 1 + 2 * (len(real_names) + 2)
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * count]


def format_tables(report: dict) -> str:
    lines = [f"engine: {report['engine']}; synthetic pairs {report['size']} (seed 23)", "",
             "| pair | pixels | 2-sigma coverage | lower/upper half error | EPE px | bad-2 % |",
             "|---|---|---|---|---|---|"]
    for row in report["calibration"]:
        lines.append(f"| {row['pair']} | {row['pixels']} | {100 * row['coverage']:.1f} % | "
                     f"{row['half_ratio']:.2f} | {row['epe']:.2f} | {row['bad_2']:.1f} |")
    first = report["tradeoff"][0]
    names = list(first["real"])
    sky_px = first["sky"]["sky_px"] if first.get("sky") else None
    default = Mask(**report["default_mask"])
    lines += ["", f"the masks at input_scale 1, filters on (default mask: {default.label()}):",
              ""] + _header("mask", names, sky_px)
    for row in report["tradeoff"]:
        mask = Mask(**row["mask"])
        mark = " (default)" if mask == default else ""
        lines.append(f"| {mask.label()}{mark} | " + _cells(row, names))
    lines += ["", "the default mask by input_scale (limits at full resolution; bad-2 in "
              "full-resolution px):", ""] + _header("input_scale", names, None)
    for row in report["scales"]:
        lines.append(f"| {row['input_scale']:g} | " + _cells(row, names))
    lines += ["", "the default mask with each filter off, input_scale 1:", ""]
    lines += _header("filters", names, None)
    for row, label in zip(report["filters"], ("both on (default)", "fattening_filter false",
                                              "occlusion_filter false")):
        lines.append(f"| {label} | " + _cells(row, names))
    if report.get("cost"):
        cost = report["cost"]
        lines += ["", f"filter cost per {cost['size']} frame (medians over the DrivingStereo "
                  f"frames, frame {cost['frame_s']:.2f} s): fattening "
                  f"{1000 * cost['fattening_s']:.0f} ms ({cost['fattening_pct']:.2f} %), "
                  f"occlusion {1000 * cost['occlusion_s']:.0f} ms "
                  f"({cost['occlusion_pct']:.2f} %)"]
    return "\n".join(lines)


def _scales(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if not values or values[0] != 1.0 or any(not 0 < v <= 1 for v in values) \
            or any(round(1 / v) * v != 1.0 or CROP_MULTIPLE % round(1 / v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated scales 1, 0.5 or 0.25, "
                                         "starting with 1")
    return values


def measure(args, weights: Path) -> dict:
    pipeline = _pipeline(weights, args.engine)
    real = {scale: real_outputs(pipeline, args.assets, scale) for scale in args.scales}
    synthetic = {scale: synthetic_outputs(pipeline, args.synthetic, *args.size, scale)
                 for scale in args.scales} if args.synthetic else {}
    frames = {} if args.no_sky else {
        scale: drivingstereo_frames(pipeline, args.assets, scale) for scale in args.scales}
    at_one = (real.get(1.0, []), synthetic.get(1.0, []), frames.get(1.0, []))
    default = Mask.defaults()
    report = {"engine": pipeline.backend.describe(), "size": f"{args.size[0]}x{args.size[1]}",
              "default_mask": asdict(default),
              "calibration": calibration_rows(at_one[0] + at_one[1]),
              "tradeoff": [mask_row(mask, *at_one) for mask in candidate_masks()],
              "scales": [{"input_scale": scale,
                          **mask_row(default, real.get(scale, []), synthetic.get(scale, []),
                                     frames.get(scale, []))} for scale in args.scales],
              "filters": filter_rows(*at_one)}
    if at_one[2]:
        report["cost"] = cost(at_one[2])
    return report


def main(argv: list[str] | None = None) -> int:
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
    report = measure(args, weights)
    print(format_tables(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
