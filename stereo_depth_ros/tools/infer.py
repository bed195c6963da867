"""stereo_depth_infer: disparity of one rectified stereo pair, written to a file.

    stereo_depth_infer --left L.png --right R.png --output OUT.{npy,pfm,png}
        [--backend psmnet|sgbm] [--weights PATH] [--model stackhourglass|basic]
        [--max-disparity 192] [--device auto|cpu|cuda] [--precision fp32|bf16|fp16]
        [--engine auto|reference|exact|fast]
        [--colorize VIS.png]

OUT by extension: .npy (float32 (H, W) px, NaN invalid), .pfm (float32, invalid = +inf),
.png (KITTI uint16: round(d * 256), 0 = invalid). Problems are reported in one line on stderr
with exit status 1 (2 for command line syntax errors), without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from stereo_depth_ros.tools._cli import positive_multiple_of_16

OUTPUT_SUFFIXES = (".npy", ".pfm", ".png")
DEFAULT_WEIGHTS = Path("assets") / "weights" / "pretrained_model_KITTI2015.tar"
PROG = "stereo_depth_infer"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class CliError(Exception):
    """A problem to report to the user in one line (no traceback)."""


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"invalid device {value!r} (auto, cpu, cuda or cuda:N)")
    return value


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
    parser.add_argument("--backend", choices=("psmnet", "sgbm"), default="psmnet",
                        help="matcher (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=None,
                        help=f"PSMNet checkpoint (default: {DEFAULT_WEIGHTS} when present)")
    parser.add_argument("--model", choices=("stackhourglass", "basic"), default="stackhourglass",
                        help="PSMNet variant (default: %(default)s)")
    parser.add_argument("--max-disparity", type=positive_multiple_of_16, default=192,
                        help="disparity search range in px, a multiple of 16; for SGBM the "
                             "number of disparities searched from 0 (default: %(default)s)")
    parser.add_argument("--device", type=_device, default="auto",
                        help="PSMNet device: auto, cpu, cuda (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="PSMNet precision: fp32 (exact), bf16 (CPU), fp16 (CUDA) "
                             "(default: %(default)s)")
    parser.add_argument("--engine", choices=("auto", "reference", "exact", "fast"),
                        default="auto",
                        help="PSMNet implementation: reference (eager, as the official code), "
                             "exact (fused fp32, same output, faster on CPU), fast (int8 where "
                             "it pays), auto = exact on CPU with fp32 (default: %(default)s)")
    parser.add_argument("--block-size", type=int, default=5,
                        help="SGBM block size in px, odd (default: %(default)s)")
    parser.add_argument("--colorize", type=Path, default=None, metavar="VIS.png",
                        help="also write a colour-mapped view of the disparity (invalid = black)")
    return parser


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_default_weights() -> Path | None:
    """First existing default checkpoint: $STEREO_DEPTH_ASSETS, ./assets, the source checkout."""
    candidates = []
    if os.environ.get("STEREO_DEPTH_ASSETS"):
        candidates.append(Path(os.environ["STEREO_DEPTH_ASSETS"]) / DEFAULT_WEIGHTS.relative_to(
            "assets"))
    candidates += [Path.cwd() / DEFAULT_WEIGHTS, _repo_root() / DEFAULT_WEIGHTS]
    return next((path for path in candidates if path.is_file()), None)


def _check_directory(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise CliError(f"{what} {path}: directory {path.parent} does not exist")


def _check_inputs(args: argparse.Namespace) -> Path | None:
    """Validate everything that can be checked before loading images or a model."""
    for name in ("left", "right"):
        path = getattr(args, name)
        if not path.is_file():
            raise CliError(f"--{name} {path}: no such file")
    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CliError(f"--output {args.output}: unsupported extension "
                       f"{args.output.suffix or '(none)'!r} (use {', '.join(OUTPUT_SUFFIXES)})")
    _check_directory(args.output, "--output")
    if args.colorize is not None:
        import cv2
        if not args.colorize.suffix or not cv2.haveImageWriter(str(args.colorize)):
            raise CliError(f"--colorize {args.colorize}: cannot write this image type "
                           "(use .png or .jpg)")
        _check_directory(args.colorize, "--colorize")
    if args.backend != "psmnet":
        return None
    if args.weights is not None:
        if not args.weights.is_file():
            raise CliError(f"--weights {args.weights}: no such file")
        return args.weights
    weights = find_default_weights()
    if weights is None:
        raise CliError(f"no PSMNet weights: pass --weights PATH, or run `make assets`, which "
                       f"puts the official KITTI 2015 checkpoint at {DEFAULT_WEIGHTS} (or use "
                       "--backend sgbm, which needs no weights)")
    return weights


def _make_backend(args: argparse.Namespace, weights: Path | None):
    from stereo_depth_ros.backends import make_backend
    if args.backend == "psmnet":
        return make_backend("psmnet", weights_path=str(weights), model=args.model,
                            max_disparity=args.max_disparity, device=args.device,
                            precision=args.precision, engine=args.engine)
    return make_backend("sgbm", num_disparities=args.max_disparity, block_size=args.block_size)


def run(args: argparse.Namespace) -> None:
    weights = _check_inputs(args)
    import numpy as np

    from stereo_depth_ros.core.disparity_io import colorize, write_disparity
    from stereo_depth_ros.core.image_io import read_image_rgb

    left = read_image_rgb(args.left)
    right = read_image_rgb(args.right)
    if left.shape != right.shape:
        raise CliError(f"left and right images differ in size: {args.left} is "
                       f"{left.shape[1]}x{left.shape[0]}, {args.right} is "
                       f"{right.shape[1]}x{right.shape[0]}")
    start = time.perf_counter()
    backend = _make_backend(args, weights)
    loaded = time.perf_counter()
    result = backend.compute(left, right)
    computed = time.perf_counter()
    disparity = result.disparity
    write_disparity(args.output, disparity)
    if args.colorize is not None:
        import cv2
        if not cv2.imwrite(str(args.colorize), colorize(disparity)):
            raise CliError(f"--colorize {args.colorize}: could not write the image")

    height, width = disparity.shape
    finite = np.isfinite(disparity)
    stages = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in result.timings_s.items())
    setup = "model load" if args.backend == "psmnet" else "setup"
    print(f"{PROG}: {args.backend} on {width}x{height}: {computed - loaded:.3f} s"
          + (f" ({stages})" if stages else "") + f"; {setup} {loaded - start:.3f} s")
    if finite.any():
        print(f"{PROG}: valid {100.0 * finite.mean():.1f} % of pixels, disparity "
              f"{float(disparity[finite].min()):.2f} .. {float(disparity[finite].max()):.2f} px")
    else:
        print(f"{PROG}: no valid disparity")
    print(f"{PROG}: wrote {args.output}"
          + (f" and {args.colorize}" if args.colorize is not None else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError, ImportError, MemoryError) as error:
        print(f"{PROG}: error: {str(error).strip() or type(error).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
