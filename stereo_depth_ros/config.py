"""Parameters of the stereo depth node: names, defaults, units, ranges and help text, defined once.

Pure Python (no ROS imports): `ros/params.py` turns each `ParamSpec` into a ROS parameter with a
descriptor, and command line tools can read the same defaults. `NodeConfig` is the validated set of
values the node runs with.

Conventions: disparities are px at the matcher's input resolution (after `input_scale`), depths are
metres, times are seconds. Parameters that need a model (re)load are read-only at run time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

BACKENDS = ("psmnet", "sgbm")
MODELS = ("stackhourglass", "basic")
PRECISIONS = ("fp32", "fp16", "bf16")
ENGINES = ("auto", "reference", "exact", "fast")
RECTIFY_MODES = ("auto", "true", "false")
IMAGE_TRANSPORTS = ("raw", "compressed")
SYNCHRONIZERS = ("auto", "message_filters", "in_package")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
SGBM_MODES = ("sgbm", "hh", "sgbm_3way", "hh4")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
WARMUP_SIZE_PATTERN = re.compile(r"^([1-9]\d{0,4})x([1-9]\d{0,4})$")

#: What the error for a missing PSMNet checkpoint tells the user.
WEIGHTS_HINT = ("set weights_path to a PSMNet checkpoint, e.g. the official "
                "pretrained_model_KITTI2015.tar (`make assets` puts it in assets/weights/), "
                "or use backend:=sgbm, which needs no weights")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    name: ROS parameter name (dots make YAML sub-keys). default: value and type (bool, int, float,
    str). description: help text, with the unit. min_value/max_value: inclusive range (numbers).
    step: integer step from min_value (0 = any). choices: allowed strings. read_only: needs a
    restart to change. dynamic_typing: accept bool or str (only `rectify`).
    """

    name: str
    default: Any
    description: str
    min_value: float | None = None
    max_value: float | None = None
    step: int = 0
    choices: tuple[str, ...] = ()
    read_only: bool = False
    dynamic_typing: bool = False
    constraints: str = ""

    @property
    def type(self) -> type:
        return type(self.default)

    def help_line(self) -> str:
        """Description plus range/choices, as one line (used for YAML comments and --help)."""
        extra = []
        if self.choices:
            extra.append("one of: " + ", ".join(self.choices))
        if self.min_value is not None or self.max_value is not None:
            extra.append(f"range [{self.min_value}, {self.max_value}]"
                         + (f" step {self.step}" if self.step else ""))
        if self.constraints:
            extra.append(self.constraints)
        if self.read_only:
            extra.append("read-only: restart to change")
        return self.description + (" (" + "; ".join(extra) + ")" if extra else "")

    def _step_rule(self) -> str:
        """The step constraint in words: "odd", "a multiple of 16", or "M plus a multiple of S"."""
        first = int(self.min_value or 0)
        if first % self.step == 0:
            return f"a multiple of {self.step}"
        if self.step == 2:
            return "odd"
        return f"{first} plus a multiple of {self.step}"

    def coerce(self, value: Any) -> Any:
        """Return `value` converted to this parameter's type; ValueError with the reason if not."""
        if self.dynamic_typing and isinstance(value, bool):
            return "true" if value else "false"
        expected = self.type
        if expected is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be a bool, got {value!r}")
            return value
        if expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            return value
        if expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.name} must be a number, got {value!r}")
            return float(value)
        if not isinstance(value, str):
            raise ValueError(f"{self.name} must be a string, got {value!r}")
        if not self.choices:
            return value
        by_lower = {choice.lower(): choice for choice in self.choices}
        return by_lower.get(value.strip().lower(), value.strip())

    def check(self, value: Any) -> Any:
        """Coerce and range/choice-check one value; ValueError names the value and the limits."""
        value = self.coerce(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name}={value!r} is not allowed: expected one of "
                             f"{', '.join(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {value}")
            if self.min_value is not None and value < self.min_value:
                raise ValueError(f"{self.name}={value} is below the minimum {self.min_value}")
            if self.max_value is not None and value > self.max_value:
                raise ValueError(f"{self.name}={value} is above the maximum {self.max_value}")
            if self.step and (value - int(self.min_value or 0)) % self.step:
                raise ValueError(f"{self.name}={value} must be {self._step_rule()}")
        return value


def _spec(name, default, description, **kwargs) -> ParamSpec:
    return ParamSpec(name=name, default=default, description=description, **kwargs)


#: Every node parameter, in the order they are declared and documented.
PARAMS: tuple[ParamSpec, ...] = (
    # --- matcher (reload needed => read-only) ---
    _spec("backend", "psmnet", "stereo matcher", choices=BACKENDS, read_only=True),
    _spec("weights_path", "", "PSMNet checkpoint (.tar/.pth) path; required for backend psmnet, "
          "empty = not set", read_only=True),
    _spec("model", "stackhourglass", "PSMNet variant matching the checkpoint", choices=MODELS,
          read_only=True),
    _spec("device", "auto", "torch device for PSMNet: auto (cuda if available, else cpu), cpu, "
          "cuda or cuda:N; asking for cuda without CUDA fails at start", read_only=True,
          constraints="auto|cpu|cuda|cuda:N"),
    _spec("precision", "fp32", "PSMNet arithmetic: fp32; bf16 = on the CPU the fused engine "
          "in bfloat16 (engine fast/auto; refused with reference), on CUDA the reference under "
          "bf16 autocast or fast's convolutions in bfloat16; fp16 = CUDA only (reference "
          "autocast; fast uses float16 by default)",
          choices=PRECISIONS, read_only=True),
    _spec("engine", "auto", "PSMNet implementation: reference (eager, as the official code), "
          "exact (fused float32: same output; on CUDA TF32 off), fast (CPU: bf16 or int8 "
          "convolutions where the CPU runs them natively, else the exact plan; CUDA: fp16 "
          "convolutions + CUDA graph; mean change <= 0.1 px), auto = on the CPU the fastest "
          "engine the CPU runs natively within 0.05 px mean and 0.5 % beyond 3 px of exact as "
          "measured (fast on native bf16 or VNNI, else exact; the start-up log says why; fast "
          "with precision bf16), fast on CUDA",
          choices=ENGINES, read_only=True),
    _spec("max_disparity", 192, "PSMNet disparity search range in px at the matcher's input "
          "resolution (the released checkpoints are trained with 192)", min_value=16,
          max_value=768, step=16, read_only=True),
    _spec("warmup_size", "", "camera image size WIDTHxHEIGHT (e.g. 1242x375): when the backend "
          "is loaded, one blank pair of that size runs through the whole pipeline (input_scale "
          "included), so the first real frame does not pay for engine plans, CUDA graphs and "
          "allocations; empty = no warm-up", read_only=True, constraints="WIDTHxHEIGHT or empty"),
    # --- pipeline (live) ---
    _spec("input_scale", 1.0, "resize factor applied to the rectified pair before matching; all "
          "outputs are published at the resized resolution with f, T and camera_info scaled to "
          "match (0.5 = 4x fewer pixels)", min_value=0.1, max_value=1.0),
    _spec("rectify", "auto", "remap the raw images with the camera_info calibration: auto = only "
          "when the infos say the images are not rectified yet (D != 0, R != I or K != P[:3,:3])",
          choices=RECTIFY_MODES, dynamic_typing=True),
    _spec("min_depth_m", 0.0, "depth/points closer than this (m) become NaN; 0 = no limit",
          min_value=0.0, max_value=1000.0),
    _spec("max_depth_m", 0.0, "depth/points farther than this (m) become NaN; 0 = no limit",
          min_value=0.0, max_value=10000.0),
    _spec("depth_encoding", "32FC1", "encoding of depth/image_rect (REP 118): 32FC1 metres "
          "(NaN invalid) or 16UC1 millimetres (0 invalid, clamped to 65535 mm and counted in "
          "/diagnostics as depth_clamped_pixels), for consumers that take 16-bit depth",
          choices=DEPTH_ENCODINGS),
    _spec("confidence_threshold", 0.0, "pixels whose backend confidence is below this become "
          "invalid in every output; 0 = keep all (backends without confidence ignore it)",
          min_value=0.0, max_value=1.0),
    _spec("max_relative_uncertainty", 0.06, "pixels whose relative depth uncertainty sigma_Z/Z "
          "(= sigma_d / disparity, first order) is above this become invalid in every output; "
          "0 = keep all (backends without uncertainty, e.g. sgbm, ignore it); the default is "
          "measured (README, Which depth to trust)",
          min_value=0.0, max_value=1.0),
    _spec("use_color", True, "add packed rgb (from the rectified left image) to points2"),
    _spec("points_depth_std", False, "add a float32 depth_std field (sigma_Z, metres, NaN "
          "invalid) to points2; backends without uncertainty (sgbm) leave it out"),
    # --- input synchronisation and QoS (re-subscription needed => read-only) ---
    _spec("approximate_sync", False, "pair images and camera_infos by nearest stamp within "
          "approximate_sync_tolerance_seconds instead of requiring equal stamps", read_only=True),
    _spec("approximate_sync_tolerance_seconds", 0.01, "largest stamp difference (s) inside one "
          "approximately synchronised set", min_value=0.0, max_value=10.0, read_only=True),
    _spec("synchronizer", "auto", "input synchroniser: message_filters (TimeSynchronizer / "
          "ApproximateTimeSynchronizer of a ROS 2 install), in_package (the same policies, for "
          "installs without message_filters) or auto (message_filters when importable)",
          choices=SYNCHRONIZERS, read_only=True),
    _spec("queue_size", 10, "messages kept per input topic while waiting for the other three",
          min_value=1, max_value=1000, read_only=True),
    _spec("image_transport", "raw", "how the images arrive (stereo_image_proc's name): raw "
          "(sensor_msgs/Image on left|right/image_raw) or compressed (sensor_msgs/CompressedImage "
          "JPEG/PNG on left|right/image_raw/compressed)", choices=IMAGE_TRANSPORTS,
          read_only=True),
    _spec("use_system_default_qos", False, "subscribe with the system default QoS (reliable) "
          "instead of sensor-data QoS (best effort, keep last queue_size); single policies of "
          "any topic can also be set with qos_overrides.<topic>.subscription|publisher.<policy>",
          read_only=True),
    _spec("diagnostics_period_seconds", 1.0, "period of the /diagnostics status (s)",
          min_value=0.1, max_value=60.0, read_only=True),
    # --- SGBM (live) ---
    _spec("sgbm.min_disparity", 0, "SGBM smallest disparity searched (px)", min_value=-256,
          max_value=256),
    _spec("sgbm.num_disparities", 128, "SGBM number of disparities searched (px, multiple of 16)",
          min_value=16, max_value=1024, step=16),
    _spec("sgbm.block_size", 5, "SGBM matching block size (px, odd)", min_value=1, max_value=51,
          step=2),
    _spec("sgbm.p1", 0, "SGBM smoothness penalty for disparity changes of 1 px; 0 = "
          "8 * channels * block_size^2", min_value=0, max_value=100000),
    _spec("sgbm.p2", 0, "SGBM smoothness penalty for larger disparity changes (> p1); 0 = "
          "32 * channels * block_size^2", min_value=0, max_value=400000),
    _spec("sgbm.uniqueness_ratio", 10, "SGBM margin (%) by which the best cost must beat the "
          "second best", min_value=0, max_value=100),
    _spec("sgbm.speckle_window_size", 100, "SGBM largest speckle region (px) filtered out; "
          "0 = no speckle filter", min_value=0, max_value=10000),
    _spec("sgbm.speckle_range", 2, "SGBM largest disparity variation (px) inside one connected "
          "region", min_value=0, max_value=64),
    _spec("sgbm.disp12_max_diff", 1, "SGBM left-right check tolerance (px); -1 = no check",
          min_value=-1, max_value=256),
    _spec("sgbm.pre_filter_cap", 63, "SGBM pre-filter clipping value", min_value=1,
          max_value=127),
    _spec("sgbm.mode", "sgbm", "SGBM variant (hh = full 8-path, slower)", choices=SGBM_MODES),
    _spec("sgbm.grayscale", True, "SGBM matches on luma (true) or on the three colour channels"),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}

SGBM_PREFIX = "sgbm."
PSMNET_PARAMETERS = ("weights_path", "model", "max_disparity", "device", "precision", "engine")
"""The parameters that are PsmnetBackend options of the same name."""


def _field_name(param_name: str) -> str:
    return param_name.replace(".", "_")


@dataclass(frozen=True)
class NodeConfig:
    """A complete, validated parameter set (field names: parameter names with '.' -> '_')."""

    backend: str = SPECS["backend"].default
    weights_path: str = SPECS["weights_path"].default
    model: str = SPECS["model"].default
    device: str = SPECS["device"].default
    precision: str = SPECS["precision"].default
    engine: str = SPECS["engine"].default
    max_disparity: int = SPECS["max_disparity"].default
    warmup_size: str = SPECS["warmup_size"].default
    input_scale: float = SPECS["input_scale"].default
    rectify: str = SPECS["rectify"].default
    min_depth_m: float = SPECS["min_depth_m"].default
    max_depth_m: float = SPECS["max_depth_m"].default
    depth_encoding: str = SPECS["depth_encoding"].default
    confidence_threshold: float = SPECS["confidence_threshold"].default
    max_relative_uncertainty: float = SPECS["max_relative_uncertainty"].default
    use_color: bool = SPECS["use_color"].default
    points_depth_std: bool = SPECS["points_depth_std"].default
    approximate_sync: bool = SPECS["approximate_sync"].default
    approximate_sync_tolerance_seconds: float = \
        SPECS["approximate_sync_tolerance_seconds"].default
    synchronizer: str = SPECS["synchronizer"].default
    queue_size: int = SPECS["queue_size"].default
    image_transport: str = SPECS["image_transport"].default
    use_system_default_qos: bool = SPECS["use_system_default_qos"].default
    diagnostics_period_seconds: float = SPECS["diagnostics_period_seconds"].default
    sgbm_min_disparity: int = SPECS["sgbm.min_disparity"].default
    sgbm_num_disparities: int = SPECS["sgbm.num_disparities"].default
    sgbm_block_size: int = SPECS["sgbm.block_size"].default
    sgbm_p1: int = SPECS["sgbm.p1"].default
    sgbm_p2: int = SPECS["sgbm.p2"].default
    sgbm_uniqueness_ratio: int = SPECS["sgbm.uniqueness_ratio"].default
    sgbm_speckle_window_size: int = SPECS["sgbm.speckle_window_size"].default
    sgbm_speckle_range: int = SPECS["sgbm.speckle_range"].default
    sgbm_disp12_max_diff: int = SPECS["sgbm.disp12_max_diff"].default
    sgbm_pre_filter_cap: int = SPECS["sgbm.pre_filter_cap"].default
    sgbm_mode: str = SPECS["sgbm.mode"].default
    sgbm_grayscale: bool = SPECS["sgbm.grayscale"].default

    def get(self, param_name: str) -> Any:
        return getattr(self, _field_name(param_name))

    def as_params(self) -> dict[str, Any]:
        """{parameter name: value} for every parameter."""
        return {spec.name: self.get(spec.name) for spec in PARAMS}

    def backend_parameters(self) -> dict[str, str]:
        """{parameter name: the backend's option name} for the configured backend."""
        if self.backend == "psmnet":
            return {name: name for name in PSMNET_PARAMETERS}
        return {spec.name: spec.name[len(SGBM_PREFIX):] for spec in PARAMS
                if spec.name.startswith(SGBM_PREFIX)}

    def sgbm_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.sgbm.SgbmBackend."""
        return {spec.name[len(SGBM_PREFIX):]: self.get(spec.name) for spec in PARAMS
                if spec.name.startswith(SGBM_PREFIX)}

    def psmnet_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.psmnet.PsmnetBackend."""
        return {name: self.get(name) for name in PSMNET_PARAMETERS}

    def backend_options(self) -> dict[str, Any]:
        return self.psmnet_options() if self.backend == "psmnet" else self.sgbm_options()

    def replace(self, changes: Mapping[str, Any]) -> NodeConfig:
        """Validated copy with {name: value} changes applied; ValueError if one is bad."""
        values = self.as_params()
        for name, value in changes.items():
            if name not in SPECS:
                raise ValueError(f"unknown parameter {name!r}")
            values[name] = value
        return NodeConfig.from_params(values)

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> NodeConfig:
        """Build from {parameter name: value}; missing names take defaults. Raises ValueError."""
        checked = {}
        for spec in PARAMS:
            value = values.get(spec.name, spec.default)
            checked[_field_name(spec.name)] = spec.check(value)
        config = cls(**checked)
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-parameter checks; raise ValueError with the reason."""
        if not DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device={self.device!r} is not allowed: expected auto, cpu, cuda "
                             "or cuda:N")
        if self.warmup_size and not WARMUP_SIZE_PATTERN.match(self.warmup_size):
            raise ValueError(f"warmup_size={self.warmup_size!r} is not allowed: expected "
                             "WIDTHxHEIGHT such as 1242x375, or empty for no warm-up")
        if self.min_depth_m > 0 and self.max_depth_m > 0 and self.min_depth_m >= self.max_depth_m:
            raise ValueError(f"min_depth_m={self.min_depth_m} must be below max_depth_m="
                             f"{self.max_depth_m} (0 disables a limit)")
        if self.sgbm_p1 and self.sgbm_p2 and self.sgbm_p2 <= self.sgbm_p1:
            raise ValueError(f"sgbm.p2={self.sgbm_p2} must be larger than sgbm.p1={self.sgbm_p1}")

    def warmup_dimensions(self) -> tuple[int, int] | None:
        """(width, height) of the warm-up pair, or None for no warm-up."""
        match = WARMUP_SIZE_PATTERN.match(self.warmup_size)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def validate_startup(self) -> None:
        """Checks that only matter when the node starts (the backend is about to be built)."""
        if self.backend == "psmnet" and not self.weights_path.strip():
            raise ValueError("weights_path is empty but backend is psmnet: " + WEIGHTS_HINT)


def field_names() -> list[str]:
    """NodeConfig field names, in declaration order (for tools that print the config)."""
    return [f.name for f in fields(NodeConfig)]


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('\\', '\\\\').replace('"', '\\"') + '"'


def render_params_yaml(values: Mapping[str, Any] | None = None,
                       names: list[str] | None = None, header: str = "") -> str:
    """A ROS params file (`/**:` + `ros__parameters:`) with one comment line per key.

    values override the defaults; names limits (and orders) the keys written (default: all).
    Dotted names are written as nested YAML mappings (`sgbm:` then `block_size:`).
    """
    values = dict(values or {})
    chosen = [SPECS[name] for name in names] if names else list(PARAMS)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += ["/**:", "  ros__parameters:"]
    group = None
    for spec in chosen:
        value = values.get(spec.name, spec.default)
        if "." in spec.name:
            prefix, key = spec.name.split(".", 1)
            if group != prefix:
                lines.append(f"    {prefix}:")
                group = prefix
            indent = "      "
        else:
            key, indent, group = spec.name, "    ", None
        lines.append(f"{indent}# {spec.help_line()}")
        lines.append(f"{indent}{key}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"
