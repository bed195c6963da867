"""stereo_depth_infer: disparity of one rectified stereo pair, written to a file.

    stereo_depth_infer --left L.png --right R.png --output OUT.{npy,pfm,png}
        [--backend psmnet|sgbm] [--weights PATH] [--model stackhourglass|basic]
        [--max-disparity 192] [--device auto|cpu|cuda] [--precision fp32|bf16|fp16]
        [--engine auto|reference|exact|fast]
        [--colorize VIS.png] [--uncertainty SIGMA.npy]
        [--confidence-threshold T] [--max-relative-uncertainty R]
        [--max-disparity-uncertainty S] [--no-fattening-filter] [--no-occlusion-filter]

OUT by extension: .npy (float32 (H, W) px, NaN invalid), .pfm (float32, invalid = +inf),
.png (KITTI uint16: round(d * 256), 0 = invalid). Problems are reported in one line on stderr
with exit status 1 (2 for command line syntax errors), without a traceback.

The node's default depth mask applies (config.DEPTH_MASK_LIMITS and DEPTH_MASK_FILTERS with
their node defaults: masked pixels are NaN / invalid in OUT); `--confidence-threshold 0
--max-relative-uncertainty 0 --max-disparity-uncertainty 0` keeps every pixel (the filters are
part of the uncertainty mask). `--uncertainty SIGMA.npy` writes sigma_d (px, float32 (H, W),
NaN where OUT is invalid; PSMNet only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stereo_depth_ros.assets import DEFAULT_WEIGHTS
from stereo_depth_ros.config import DEPTH_MASK_FILTERS, DEPTH_MASK_LIMITS
from stereo_depth_ros.tools._cli import (ToolError, add_backend_arguments, backend_from_args,
                                         run_tool)

OUTPUT_SUFFIXES = (".npy", ".pfm", ".png")
PROG = "stereo_depth_infer"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Compute the disparity of one rectified stereo pair.",
        epilog="PSMNet weights: `make assets` puts the official KITTI 2015 checkpoint at "
               f"{DEFAULT_WEIGHTS}, which is used when --weights is not given.")
    parser.add_argument("--left", required=True, type=Path, help="rectified left image")
    parser.add_argument("--right", required=True, type=Path, help="rectified right image")
    parser.add_argument("--output", required=True, type=Path,
                        help="disparity file: .npy (float32, NaN invalid), .pfm, or .png "
                             "(KITTI uint16, value*256, 0 invalid)")
    add_backend_arguments(parser.add_argument_group("matcher"))
    parser.add_argument("--colorize", type=Path, default=None, metavar="VIS.png",
                        help="also write a colour-mapped view of the disparity (invalid = black)")
    parser.add_argument("--uncertainty", type=Path, default=None, metavar="SIGMA.npy",
                        help="also write sigma_d, the disparity's standard deviation (px, "
                             "float32, NaN invalid; PSMNet only)")
    add_mask_arguments(parser.add_argument_group("depth mask (the node's defaults)"))
    return parser


def add_mask_arguments(group) -> None:
    """--confidence-threshold, --max-relative-uncertainty, --max-disparity-uncertainty,
    --[no-]fattening-filter and --[no-]occlusion-filter, with the node parameters' defaults,
    ranges and help (config.py)."""
    from stereo_depth_ros.config import SPECS
    for name in DEPTH_MASK_LIMITS:
        spec = SPECS[name]
        group.add_argument("--" + name.replace("_", "-"), type=float, default=spec.default,
                           metavar="X", help=f"{spec.help_line()} (default {spec.default:g})")
    for name in DEPTH_MASK_FILTERS:
        spec = SPECS[name]
        group.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                           default=spec.default,
                           help=f"{spec.help_line()} (default {str(spec.default).lower()})")


def _check_directory(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise ToolError(f"{what} {path}: directory {path.parent} does not exist")


def _check_inputs(args: argparse.Namespace) -> None:
    """Validate everything that can be checked before loading images or a model."""
    for name in ("left", "right"):
        path = getattr(args, name)
        if not path.is_file():
            raise ToolError(f"--{name} {path}: no such file")
    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ToolError(f"--output {args.output}: unsupported extension "
                        f"{args.output.suffix or '(none)'!r} (use {', '.join(OUTPUT_SUFFIXES)})")
    _check_directory(args.output, "--output")
    for name in DEPTH_MASK_LIMITS:
        try:
            _checked(args, name)
        except ValueError as error:
            raise ToolError(str(error)) from None
    if args.uncertainty is not None:
        if args.uncertainty.suffix.lower() != ".npy":
            raise ToolError(f"--uncertainty {args.uncertainty}: must be a .npy file")
        if args.backend != "psmnet":
            raise ToolError(f"--uncertainty: backend {args.backend} has no uncertainty "
                            "(PSMNet only)")
        _check_directory(args.uncertainty, "--uncertainty")
    if args.colorize is not None:
        import cv2
        if not args.colorize.suffix or not cv2.haveImageWriter(str(args.colorize)):
            raise ToolError(f"--colorize {args.colorize}: cannot write this image type "
                            "(use .png or .jpg)")
        _check_directory(args.colorize, "--colorize")


def run(args: argparse.Namespace) -> None:
    _check_inputs(args)
    import numpy as np

    from stereo_depth_ros.core.disparity_io import colorize, write_disparity
    from stereo_depth_ros.core.image_io import read_image_rgb
    from stereo_depth_ros.drop_reasons import FrameDropped
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline

    left = read_image_rgb(args.left)
    right = read_image_rgb(args.right)
    start = time.perf_counter()
    backend = backend_from_args(args)
    loaded = time.perf_counter()
    options = PipelineOptions(**{name: getattr(args, name)
                                 for name in DEPTH_MASK_LIMITS + DEPTH_MASK_FILTERS})
    pipeline = StereoPipeline(backend, options,
                              input_names=(str(args.left), str(args.right), ""))
    try:
        result = pipeline.process(left, right, None)
    except FrameDropped as error:
        raise ToolError(str(error)) from None
    computed = time.perf_counter()
    disparity = result.disparity
    write_disparity(args.output, disparity)
    if args.uncertainty is not None:
        np.save(args.uncertainty, np.asarray(result.uncertainty_px, dtype=np.float32))
    if args.colorize is not None:
        import cv2
        if not cv2.imwrite(str(args.colorize), colorize(disparity)):
            raise ToolError(f"--colorize {args.colorize}: could not write the image")

    height, width = disparity.shape
    finite = np.isfinite(disparity)
    stages = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in result.timings_s.items()
                       if name.startswith("match."))
    setup = "model load" if args.backend == "psmnet" else "setup"
    print(f"{PROG}: {backend.describe()}")
    print(f"{PROG}: {args.backend} on {width}x{height}: {computed - loaded:.3f} s"
          + (f" ({stages})" if stages else "") + f"; {setup} {loaded - start:.3f} s")
    if finite.any():
        print(f"{PROG}: valid {100.0 * finite.mean():.1f} % of pixels, disparity "
              f"{float(disparity[finite].min()):.2f} .. {float(disparity[finite].max()):.2f} px")
    else:
        print(f"{PROG}: no valid disparity")
    written = [str(p) for p in (args.output, args.uncertainty, args.colorize) if p is not None]
    print(f"{PROG}: wrote {' and '.join(written)}")


def _checked(args: argparse.Namespace, name: str) -> float:
    """The value of --NAME, range-checked by its node parameter (ValueError names it)."""
    from stereo_depth_ros.config import SPECS
    try:
        return SPECS[name].check(getattr(args, name))
    except ValueError as error:
        raise ValueError(f"--{name.replace('_', '-')}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return run_tool(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
