"""The command line of the nodes and the ROS tools, before rclpy sees it.

`--help` of both nodes (usage and the parameter table from config.PARAMS, exit 0, nothing
loaded), and the `--params-file` files of the `--ros-args` sections checked here, so that a
missing or malformed file is one line naming it instead of rcl's "Couldn't parse params file"
traceback. Imports no rclpy itself: `node_main` takes the node's `run`.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable, Sequence

PARAMS_FILE_FLAG = "--params-file"
ROS_PARAMETERS_KEY = "ros__parameters"
HELP_FLAGS = ("-h", "--help")
EXIT_USAGE = 2


class ParamsFileError(ValueError):
    """A `--params-file` that is missing, unreadable or not a ROS 2 parameter YAML file."""


ROS_ARGS_START, ROS_ARGS_END = "--ros-args", "--"


def split_ros_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the tool's own arguments, the ROS arguments with their --ros-args flags).

    ROS arguments are the `--ros-args` sections, each up to `--` or the end. Unlike rclpy's
    remove_ros_args, a tool argument that looks like a ROS 1 style remap (`--remap FROM:=TO`)
    stays the tool's: it is neither dropped nor applied to the node.
    """
    own: list[str] = []
    ros: list[str] = []
    inside = False
    for token in args:
        if token == ROS_ARGS_START:
            inside = True
            ros.append(token)
        elif inside and token == ROS_ARGS_END:
            inside = False
        elif inside:
            ros.append(token)
        else:
            own.append(token)
    return own, ros


def params_files(ros_args: Sequence[str]) -> list[Path]:
    """The files named by `--params-file FILE` in ROS arguments (as `split_ros_args` returns
    them); ParamsFileError when the flag ends the arguments without a file."""
    files = []
    tokens = list(ros_args)
    for index, token in enumerate(tokens):
        if token == PARAMS_FILE_FLAG:
            if index + 1 >= len(tokens) or tokens[index + 1].startswith("-"):
                raise ParamsFileError(f"{PARAMS_FILE_FLAG} needs a file name")
            files.append(Path(tokens[index + 1]))
    return files


def _check_layout(node: object, path: Path, where: str) -> int:
    """Count the `ros__parameters` mappings under `node`; ParamsFileError on anything rcl
    refuses (a non-mapping where node names or parameters belong)."""
    if not isinstance(node, dict):
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: expected node names mapping to "
                              f"'{ROS_PARAMETERS_KEY}:' {where}, got {type(node).__name__}")
    found = 0
    for key, value in node.items():
        if key == ROS_PARAMETERS_KEY:
            if not isinstance(value, dict):
                raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: '{ROS_PARAMETERS_KEY}' "
                                      f"{where} must map parameter names to values")
            found += 1
        else:
            found += _check_layout(value, path, f"under {key!r}")
    return found


def check_params_file(path: Path) -> None:
    """ParamsFileError (naming the file) unless `path` is a readable YAML file laid out as ROS 2
    parameters: `<node or /**>: ros__parameters: {name: value}`."""
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: cannot read it ({reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: not valid YAML{where}: "
                              f"{problem}") from None
    if data is None:
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: the file is empty")
    if _check_layout(data, path, "at the top") == 0:
        raise ParamsFileError(f"{PARAMS_FILE_FLAG} {path}: no '{ROS_PARAMETERS_KEY}:' block "
                              "(expected `/**:` then `ros__parameters:`)")


def check_params_files(ros_args: Sequence[str]) -> None:
    """`check_params_file` for every `--params-file` in the ROS arguments."""
    for path in params_files(ros_args):
        check_params_file(path)


# --------------------------------------------------------------------------- node --help

def parameter_table(width: int = 99, specs=None) -> str:
    """Every node parameter (config.PARAMS, or `specs`): name, default, and its help line,
    wrapped."""
    from stereo_depth_ros.config import PARAMS

    lines = []
    for spec in PARAMS if specs is None else specs:
        default = (repr(spec.default) if isinstance(spec.default, str)
                   else str(spec.default).lower() if isinstance(spec.default, bool)
                   else str(spec.default))
        lines.append(f"  {spec.name} (default {default})")
        lines += textwrap.wrap(spec.help_line(), width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def node_help(prog: str, description: str, specs=None) -> str:
    """The text `prog --help` prints: usage, what the node does, how to set parameters, the
    parameter table (of `specs`, default every config.PARAMS)."""
    every = "; config/stereo_depth.yaml has every parameter" if specs is None else ""
    return "\n".join([
        f"usage: {prog} [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] "
        "[-r FROM:=TO] ...]",
        "", description.strip(), "",
        textwrap.fill("Parameters are set with `--ros-args -p NAME:=VALUE` or `--ros-args "
                      "--params-file FILE` (a YAML file starting `/**:` then "
                      f"`ros__parameters:`{every}). "
                      "Read-only ones need a restart; the others can be changed with `ros2 "
                      "param set`.", 99), "",
        "parameters:", parameter_table(specs=specs), ""])


def node_main(run: Callable[[list[str] | None], int], args: list[str] | None, *, prog: str,
              description: str, specs=None) -> int:
    """A node's entry point: `--help` prints `node_help` (exit 0) and a bad `--params-file`
    `<prog>: error: ...` (exit 2), both before rclpy starts; otherwise `run(args)`.

    args: the whole command line with the program name first (rclpy's convention; None:
    sys.argv). specs: the parameters `--help` lists (default every config.PARAMS).
    """
    argv = list(sys.argv if args is None else args)
    own, ros = split_ros_args(argv[1:])
    if any(flag in own for flag in HELP_FLAGS):
        print(node_help(prog, description, specs), flush=True)
        return 0
    try:
        check_params_files(ros)
    except ParamsFileError as error:
        print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return run(args)
