"""Argparse and process helpers shared by the console tools, defined once.

Only the stdlib (and ros.command_line, which imports no more) is imported at module level: the
dataset readers are imported when a dataset option group is built, and rclpy only inside
`ros_session()`, so tools that never touch ROS (evaluate, train, infer) import this module
without ROS installed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from stereo_depth_ros.assets import DEFAULT_WEIGHTS, find_default_weights
from stereo_depth_ros.ros.command_line import split_ros_args


# --------------------------------------------------------------------------- running a tool

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
"""Exit status of every tool: 0 ok, 1 failure (message on stderr), 2 bad command line (argparse),
130 interrupted (Ctrl-C / SIGTERM)."""


class ToolError(Exception):
    """A problem the user can fix; printed as `<prog>: error: <message>` (exit status 1)."""


class UsageError(ToolError):
    """A bad command line found after argparse (e.g. a missing `--params-file`): printed as
    `<prog>: error: <message>`, exit status 2 like argparse's own errors."""


#: Exceptions reported in one line without a traceback (anything else is a bug: traceback).
REPORTED_ERRORS = (ToolError, ValueError, OSError, RuntimeError, ImportError, MemoryError)


def report_error(prog: str, error: BaseException) -> None:
    """`<prog>: error: <message>` on stderr (the one message style of all tools)."""
    text = str(error).strip() or type(error).__name__
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)


def run_tool(prog: str, run: Callable[[], int | None], *, interrupted_hint: str = "") -> int:
    """Call `run()` and turn its outcome into the tools' exit status (see EXIT_*).

    run returns None/0 for success or its own status; ToolError and the other REPORTED_ERRORS
    become `<prog>: error: ...` and status 1 (UsageError: 2); KeyboardInterrupt and SIGTERM's
    `Interrupted` (ros_session) become `<prog>: interrupted` (plus `interrupted_hint`, e.g. how
    to resume) and 130.
    """
    from stereo_depth_ros.ros.interrupts import Interrupted   # stdlib only, no rclpy

    try:
        status = run()
    except (KeyboardInterrupt, Interrupted):
        hint = f" ({interrupted_hint})" if interrupted_hint else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except UsageError as error:
        report_error(prog, error)
        return EXIT_USAGE
    except REPORTED_ERRORS as error:
        report_error(prog, error)
        return EXIT_FAILURE
    return EXIT_OK if status is None else int(status)


# --------------------------------------------------------------------------- value parsers

def hxw_size(example: str, minimum: int = 1) -> Callable[[str], tuple[int, int]]:
    """An argparse `type` parsing "HxW" into (height, width) px, each at least `minimum`.

    example: shown in the error for text that is not HxW (e.g. "256x320").
    """
    def size(text: str) -> tuple[int, int]:
        try:
            height, width = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected HxW, e.g. {example}, got {text!r}") from None
        if height < minimum or width < minimum:
            bound = "positive" if minimum == 1 else f"at least {minimum}x{minimum}"
            raise argparse.ArgumentTypeError(f"size must be {bound}, got {text!r}")
        return height, width
    return size


def _convert(text: str, convert: Callable[[str], float], message: str):
    """convert(text), or ArgumentTypeError(message) when it raises ValueError."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None


def positive_float(text: str) -> float:
    """An argparse `type`: a finite number > 0."""
    value = _convert(text, float, f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse `type`: an integer > 0."""
    number = _convert(text, int, f"{text!r} is not an integer")
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return number


def non_negative_float(text: str) -> float:
    """An argparse `type`: a finite number >= 0."""
    value = _convert(text, float, f"expected a number, got {text!r}")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_multiple_of_16(text: str) -> int:
    """An argparse `type`: an integer > 0 that is a multiple of 16 (disparity ranges)."""
    number = _convert(text, int, f"{text!r} is not an integer")
    if number <= 0 or number % 16:
        raise argparse.ArgumentTypeError(f"{number} is not a positive multiple of 16")
    return number


def spec_type(name: str) -> Callable[[str], object]:
    """An argparse `type` checking a value against the node parameter `name` (config.SPECS):
    the same type, range and step as the parameter, stated once in config.py."""
    from stereo_depth_ros.config import SPECS
    spec = SPECS[name]

    def parse(text: str):
        try:
            value = spec.type(text) if spec.type is not bool else text
            return spec.check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = name
    return parse


# --------------------------------------------------------------------------- backends

def add_backend_arguments(group, *, default: str | None = "psmnet", backend_group=None,
                          device_default: str = "auto") -> None:
    """--backend and the matcher options, with the node parameters' choices, ranges and help.

    --backend (in `backend_group` when given, e.g. a mutually exclusive group), --weights,
    --model, --max-disparity (PSMNet max_disparity; SGBM num_disparities), --device,
    --precision, --engine, --block-size (SGBM, BM), --onnx-path and --onnx-providers (onnx).
    Read back with `backend_from_args`.
    """
    from stereo_depth_ros.config import BACKENDS, SPECS

    def helptext(name: str) -> str:
        return SPECS[name].help_line().replace("%", "%%")

    (backend_group or group).add_argument("--backend", choices=BACKENDS, default=default,
                                          help=helptext("backend"))
    group.add_argument("--weights", type=Path, default=None,
                       help=f"PSMNet checkpoint (default: {DEFAULT_WEIGHTS} when present)")
    group.add_argument("--model", type=spec_type("model"), default=SPECS["model"].default,
                       help=helptext("model"))
    group.add_argument("--max-disparity", type=positive_multiple_of_16, default=None,
                       help="disparity search range in px, a multiple of 16 (PSMNet "
                       "max_disparity, default 192; SGBM num_disparities, default 128)")
    group.add_argument("--device", type=spec_type("device"), default=device_default,
                       help=helptext("device"))
    group.add_argument("--precision", type=spec_type("precision"),
                       default=SPECS["precision"].default, help=helptext("precision"))
    group.add_argument("--engine", type=spec_type("engine"), default=SPECS["engine"].default,
                       help=helptext("engine"))
    group.add_argument("--block-size", type=spec_type("sgbm.block_size"),
                       default=SPECS["sgbm.block_size"].default,
                       help=helptext("sgbm.block_size"))
    group.add_argument("--onnx-path", type=Path, default=None, help=helptext("onnx_path"))
    group.add_argument("--onnx-providers", type=spec_type("onnx_providers"),
                       default=SPECS["onnx_providers"].default,
                       help=helptext("onnx_providers"))


def resolve_weights(weights: Path | None) -> Path:
    """--weights, or the default checkpoint; ToolError saying how to get one."""
    if weights is not None:
        if not weights.is_file():
            raise ToolError(f"--weights {weights}: no such file")
        return weights
    found = find_default_weights()
    if found is None:
        raise ToolError(f"no PSMNet weights: pass --weights PATH, or run `make assets`, which "
                        f"puts the official KITTI 2015 checkpoint at {DEFAULT_WEIGHTS} (or use "
                        "--backend sgbm, which needs no weights)")
    return found


def backend_from_args(args: argparse.Namespace):
    """The backend `add_backend_arguments` options ask for (torch is imported for psmnet only).
    """
    from stereo_depth_ros.backends import make_backend
    if args.backend in ("sgbm", "bm"):               # OpenCV's matchers: the same two options
        options = {"block_size": args.block_size}
        if args.max_disparity is not None:
            options["num_disparities"] = args.max_disparity
        return make_backend(args.backend, **options)
    if args.backend == "onnx":
        if args.onnx_path is None or not args.onnx_path.is_file():
            raise ToolError(f"--backend onnx needs --onnx-path FILE.onnx (stereo_depth_export "
                            f"writes one); got {args.onnx_path}")
        return make_backend("onnx", onnx_path=str(args.onnx_path),
                            providers=args.onnx_providers)
    options = {"weights_path": str(resolve_weights(args.weights)), "model": args.model,
               "device": args.device, "precision": args.precision, "engine": args.engine}
    if args.max_disparity is not None:
        options["max_disparity"] = args.max_disparity
    return make_backend("psmnet", **options)


# --------------------------------------------------------------------------- datasets

def add_dataset_arguments(
        group, *, size_type: Callable[[str], tuple[int, int]],
        size_default: tuple[int, int] | None, size_help: str, limit_help: str,
        seed_flag: str = "--seed", split_help: str = "KITTI split folder",
        subset_example: str = "TEST", pass_help: str | None = None,
        synthetic_extra: Sequence[tuple[str, dict]] = ()) -> None:
    """Add the dataset selection options (read by `dataset_from_args`) to `group`.

    --dataset, --root, --split, --gt-root, --subset, --pass (dest `passes`), --count, the scene
    seed (`seed_flag`, e.g. "--seed" or "--scene-seed"), --size, then `synthetic_extra`
    ((flag, add_argument keywords) pairs), then --limit.
    """
    from stereo_depth_ros.data import DATASET_NAMES

    group.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    group.add_argument("--root", type=Path, help="dataset folder (not used by synthetic)")
    group.add_argument("--split", default="training", help=split_help)
    group.add_argument("--gt-root", type=Path,
                       help="Middlebury/ETH3D: ground-truth tree when not beside the images")
    group.add_argument("--subset", help=f"SceneFlow sub-folder, e.g. {subset_example}")
    group.add_argument("--pass", dest="passes", default="clean", choices=("clean", "final"),
                       help=pass_help)
    group.add_argument("--count", type=int, default=8, help="synthetic: number of scenes")
    group.add_argument(seed_flag, type=int, default=0, help="synthetic: scene seed")
    group.add_argument("--size", type=size_type, default=size_default, help=size_help)
    for flag, options in synthetic_extra:
        group.add_argument(flag, **options)
    group.add_argument("--limit", type=int, help=limit_help)


def dataset_from_args(args: argparse.Namespace, *, seed: int, size: tuple[int, int],
                      max_disparity: float, error: type[Exception]):
    """The dataset that `add_dataset_arguments` options select (`data.dataset_from_options`)."""
    from stereo_depth_ros.data import dataset_from_options

    return dataset_from_options(args, seed=seed, size=size, max_disparity=max_disparity,
                                error=error)


# --------------------------------------------------------------------------- ROS processes

def parse_ros_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv` (None: sys.argv[1:]) without its ROS arguments (--ros-args sections)."""
    return parser.parse_args(split_ros_args(sys.argv[1:] if argv is None else argv)[0])


@contextlib.contextmanager
def ros_session(argv: list[str] | None,
                interrupt: type[BaseException] = KeyboardInterrupt) -> Iterator[None]:
    """rclpy initialised with the ROS arguments (--ros-args sections) of `argv` (None:
    sys.argv[1:]) for the block.

    Fast DDS gets the shipped large-image profile when the user set none (ros.transport). While
    inside, SIGTERM raises `interrupt()` so the tool's cleanup runs as on Ctrl-C, and only the
    first SIGINT raises KeyboardInterrupt (`ros2 launch` delivers Ctrl-C twice). On exit,
    after the block's own cleanup, rclpy is shut down (if still up) and the previous SIGTERM
    handler is restored. A `--params-file` that is missing or not ROS parameter YAML raises
    UsageError naming it, before rclpy starts.
    """
    import logging

    import rclpy

    from stereo_depth_ros.ros.command_line import ParamsFileError, check_params_files
    from stereo_depth_ros.ros.transport import use_large_image_profile

    def _raise_interrupt(signum, frame):  # noqa: ARG001
        raise interrupt()

    from stereo_depth_ros.ros.interrupts import interrupt_once

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_sigint = signal.signal(signal.SIGINT, interrupt_once)   # before rclpy chains to it
    try:
        note = use_large_image_profile()          # before this process's DDS participant
        if note:
            logging.getLogger("stereo_depth_ros").info(note)
        ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)[1]
        try:
            check_params_files(ros_args)   # one line naming the file, not rcl's traceback
        except ParamsFileError as error:
            raise UsageError(str(error)) from None
        rclpy.init(args=[sys.argv[0], *ros_args])
        yield
    finally:
        if rclpy.ok():
            rclpy.shutdown()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)
