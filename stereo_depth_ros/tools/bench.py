"""stereo_depth_bench: time the matchers and the whole per-frame pipeline, with speed-ups measured
side by side against the reference PSMNet in the same run.

    stereo_depth_bench [--device cpu|cuda] [--sizes 384x1248 256x512]
                       [--configs reference exact fast sgbm] [--runs 5] [--warmup 1]
                       [--rounds 1] [--frame-runs N] [--threads N] [--json OUT]
                       [--weights PATH] [--malloc default|reuse]

Configurations (--configs):
  reference  the plain eager float32 PSMNet exactly as the official code computes it
             (`models.psmnet`, disparity only, as the official test scripts; on CUDA with
             PyTorch's default settings)
  exact      CPU: models.fused.FastPSMNet "exact" (fused float32); CUDA: models.fused.cuda
             "exact" (float32, TF32 off, CUDA graph). Golden parity; disparity + confidence
  fast       CPU: the fused engine in the arithmetic this CPU runs fastest (bf16, int8 or fp32;
             the report names it); CUDA: fp16 convolutions, CUDA graph
  fast-fp32  CPU only: the fused fast engine in float32 (for comparison)
  fast-int8  CPU only: the fused fast engine with int8 3-D and feature layers (needs VNNI)
  fast-bf16  CPU: the fused fast engine in bfloat16 (needs oneDNN bf16; native with
             AVX512_BF16/AMX); CUDA: bf16 convolutions, CUDA graph
  fast-eager CUDA only: fast without the CUDA graph (what the graph saves)
  fast-compile CUDA only: fast through torch.compile(mode="reduce-overhead") instead of the
             engine's own graph capture (compiles for a minute or more)
  bf16       CUDA only: the reference under bfloat16 autocast (refused on CPUs, where it is
             slower than float32: use fast-bf16)
  sgbm       OpenCV StereoSGBM with the backend's default parameters (always on the CPU)
  exact-sigma, fast-sigma  exact / fast also computing sigma_d (the uncertainty) in the same
             regression pass, and their frame with the node's default depth mask (its limits and
             filters): network to network is sigma_d's cost, frame to frame sigma_d's and
             the mask's

Each configuration runs in its own subprocess, so that process's peak RSS (ru_maxrss) is that
configuration's peak memory; `--rounds R` runs every configuration R times, alternating, so
that a load change on a shared machine hits all of them alike. Speed-ups are the reference's
median over each configuration's median (and the same with minima) from the same run.

Two measurements per configuration:
  matcher  preprocess + network + result on the host (`median_s`; on CUDA also the network
           alone, timed with CUDA events: `network`, with the peak GPU memory)
  frame    the whole per-frame path the node runs (`pipeline.StereoPipeline`): a raw, distorted
           pair -> rectification -> matching -> depth -> points, plus the ROS message
           conversion and building when rclpy's message packages import (`frame`)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stereo_depth_ros.benchmark.report import format_table
from stereo_depth_ros.benchmark.runner import run_bench
from stereo_depth_ros.benchmark.settings import (CONFIGS, DEFAULT_CONFIGS, DEFAULT_SIZES,
                                                 PSMNET_STAGES, BenchSettings)
from stereo_depth_ros.assets import find_default_weights
from stereo_depth_ros.tools._cli import hxw_size, run_tool

__all__ = ["CONFIGS", "PSMNET_STAGES", "build_parser", "format_table", "main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stereo_depth_bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations:\n" + "\n".join(
            line for line in __doc__.split("Configurations (--configs):\n")[1].split(
                "\n\n")[0].splitlines()))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the PSMNet configurations run (default cpu)")
    parser.add_argument("--sizes", type=hxw_size("384x1248", minimum=16), nargs="+",
                        default=list(DEFAULT_SIZES), metavar="HxW",
                        help="input sizes (default: 384x1248 256x512); sizes that are not "
                        "multiples of 16 are padded as the backend does")
    parser.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS),
                        metavar="NAME",
                        help="configurations (default: " + "; ".join(
                            f"{d}: {' '.join(c)}" for d, c in DEFAULT_CONFIGS.items())
                        + f"; any of {', '.join(CONFIGS)})")
    parser.add_argument("--runs", type=_positive, default=5, help="timed runs (default 5)")
    parser.add_argument("--warmup", type=_non_negative, default=1,
                        help="untimed warm-up runs (default 1)")
    parser.add_argument("--frame-runs", type=_non_negative, default=None,
                        help="timed runs of the whole frame path (default: --runs; 0 = skip)")
    parser.add_argument("--no-overhead", action="store_true",
                        help="same as --frame-runs 0")
    parser.add_argument("--rounds", type=_positive, default=1,
                        help="run every configuration this many times, alternating (default 1)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch/OpenCV threads (default: torch's default)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default: the KITTI 2015 weights from "
                        "`make assets` when present, else random weights)")
    parser.add_argument("--malloc", choices=("default", "reuse"), default="default",
                        help="'reuse': keep freed memory in glibc's heap in every configuration "
                        "(models.fused.memory.reuse_freed_memory); default: glibc as is")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="write the full report (all runs, stages, ratios) as JSON")
    parser.add_argument("--limits", action="store_true",
                        help="also count the network's FLOPs and time one 3-D convolution in "
                        "every arithmetic this CPU runs (how close the engines are to the "
                        "machine's limit)")
    parser.add_argument("--in-process", action="store_true",
                        help="run configurations in this process (peak memory is then shared)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: 0 ok, 1 a failure (message on stderr), 2 bad command line, 130 Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool("stereo_depth_bench", lambda: _run(parser, args))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.configs is None:
        args.configs = list(DEFAULT_CONFIGS[args.device])
    unsupported = [name for name in args.configs
                   if CONFIGS[name]["kind"] == "psmnet" and args.device not in
                   CONFIGS[name]["devices"]]
    if unsupported:
        parser.error(f"configuration(s) {', '.join(unsupported)} do not run on "
                     f"--device {args.device}")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: directory {args.json.parent} does not exist")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print(f"stereo_depth_bench: error: --device cuda, but CUDA is not available (torch "
                  f"{torch.__version__})", file=sys.stderr)
            return 1
    settings = BenchSettings(
        device=args.device, sizes=args.sizes, configs=args.configs, runs=args.runs,
        warmup=args.warmup, rounds=args.rounds, threads=args.threads, malloc=args.malloc,
        frame_runs=(0 if args.no_overhead else args.runs) if args.frame_runs is None
        else args.frame_runs, weights=args.weights or find_default_weights(),
        limits=args.limits, in_process=args.in_process, quiet=args.quiet,
        command=["stereo_depth_bench", *sys.argv[1:]])
    report = run_bench(settings)
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.json}")
    failed = [f"{r['config']} at {r['size']}" for r in report["results"] if "error" in r]
    if failed:
        print(f"stereo_depth_bench: error: configuration(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
