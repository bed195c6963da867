"""stereo_depth_export: PSMNet as an ONNX file for TensorRT, ONNX Runtime or OpenVINO.

    stereo_depth_export --weights W --size 375x1242 --output net.onnx
        [--model stackhourglass|basic] [--max-disparity 192] [--precision fp32|fp16]
        [--opset 17] [--no-align-corners]

--size is the matcher's input HxW (the camera image after input_scale); the file is made for that
size padded as the node pads (top/right to multiples of 16, at least 256: 375x1242 -> 384x1248),
so any image of the same padded size runs through it. Inputs `left`, `right`: float32
(1, 3, H, W), normalised as the file's metadata records; outputs `disparity`, `confidence`
(1, 1, H, W) float32. See README "Deploying on a Jetson / with TensorRT". Problems are reported
in one line on stderr with exit status 1 (2 for command line syntax errors).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from stereo_depth_ros.assets import DEFAULT_WEIGHTS
from stereo_depth_ros.tools._cli import (ToolError, hxw_size, positive_multiple_of_16,
                                         resolve_weights, run_tool, spec_type)

PROG = "stereo_depth_export"


def build_parser() -> argparse.ArgumentParser:
    from stereo_depth_ros.config import SPECS
    from stereo_depth_ros.core.onnx_metadata import EXPORT_PRECISIONS

    parser = argparse.ArgumentParser(
        prog=PROG, description="Write PSMNet as an ONNX file for one input size.",
        epilog="PSMNet weights: `make assets` puts the official KITTI 2015 checkpoint at "
               f"{DEFAULT_WEIGHTS}, which is used when --weights is not given.")
    parser.add_argument("--weights", type=Path, default=None,
                        help=f"PSMNet checkpoint (default: {DEFAULT_WEIGHTS} when present)")
    parser.add_argument("--size", required=True, type=hxw_size("375x1242"), metavar="HxW",
                        help="matcher input size in px (camera image after input_scale); the "
                             "file is made for it padded to multiples of 16, at least 256")
    parser.add_argument("--output", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--model", type=spec_type("model"), default=SPECS["model"].default,
                        help=SPECS["model"].help_line())
    parser.add_argument("--max-disparity", type=positive_multiple_of_16,
                        default=SPECS["max_disparity"].default,
                        help="disparity levels searched, px (default 192, as trained)")
    parser.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                        help="arithmetic inside the graph: fp32, or fp16 for the features and "
                             "the 3-D CNN (inputs and the soft-argmin stay float32). For "
                             "TensorRT export fp32 and let trtexec --fp16 choose (default fp32)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ai.onnx opset, >= 17 (default 17)")
    parser.add_argument("--no-align-corners", dest="align_corners", action="store_false",
                        help="upsample without align_corners (the official code as it is; the "
                             "released weights need align_corners, the default)")
    return parser


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> None:
    if args.output.suffix.lower() != ".onnx":
        raise ToolError(f"--output {args.output}: expected a .onnx file name")
    if not args.output.parent.is_dir():
        raise ToolError(f"--output {args.output}: directory {args.output.parent} does not exist")
    if args.opset is not None and args.opset < 17:
        raise ToolError(f"--opset {args.opset}: must be 17 or newer")
    weights = resolve_weights(args.weights)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ToolError(f"exporting needs the onnx and onnxruntime packages ({error}): "
                        "pip install 'stereo_depth_ros[onnx]' or pip install onnx onnxruntime"
                        ) from None

    from stereo_depth_ros.core.padding import InputPadder
    from stereo_depth_ros.models import OFFICIAL_PREPROCESSING, build_psmnet, load_checkpoint
    from stereo_depth_ros.models.onnx_export import DEFAULT_OPSET, export_psmnet_onnx

    pre = OFFICIAL_PREPROCESSING
    height, width = args.size
    padded = InputPadder((height, width), multiple=pre.pad_multiple,
                         min_size=pre.min_size).padded_shape
    model = build_psmnet(args.model, max_disparity=args.max_disparity,
                         align_corners=args.align_corners)
    load_checkpoint(model, weights)
    report = export_psmnet_onnx(model, args.output, height=padded[0], width=padded[1],
                                precision=args.precision, checkpoint_sha256=file_sha256(weights),
                                preprocessing=pre, opset=args.opset or DEFAULT_OPSET)
    meta = report.metadata
    print(f"{PROG}: {meta.model_variant} ({weights.name}, sha256 {meta.checkpoint_sha256[:12]}"
          f"...), max_disparity {meta.max_disparity}, {meta.precision}, opset {meta.opset}")
    print(f"{PROG}: input {height}x{width} (HxW) padded to {padded[0]}x{padded[1]} "
          f"(top/right); outputs {', '.join(meta.outputs)}")
    print(f"{PROG}: wrote {args.output} ({report.size_bytes / 1e6:.1f} MB) in "
          f"{report.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return run_tool(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
