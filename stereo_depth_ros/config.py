"""Parameters of the stereo depth node: names, defaults, units, ranges and help text, defined once.

Pure Python (no ROS imports): `ros/params.py` turns each `ParamSpec` into a ROS parameter with a
descriptor, and command line tools can read the same defaults. `NodeConfig` is the validated set of
values the node runs with.

Conventions: disparities are px at the matcher's input resolution (after `input_scale`), depths are
metres, times are seconds. Parameters that need a model (re)load are read-only at run time.
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Mapping

BACKENDS = ("psmnet", "sgbm", "bm", "onnx")
MODELS = ("stackhourglass", "basic")
PRECISIONS = ("fp32", "fp16", "bf16")
ENGINES = ("auto", "reference", "exact", "fast")
RECTIFY_MODES = ("auto", "true", "false")
IMAGE_TRANSPORTS = ("raw", "compressed")
SYNCHRONIZERS = ("auto", "message_filters", "in_package")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
SGBM_MODES = ("sgbm", "hh", "sgbm_3way", "hh4")
ONNX_PROVIDERS = ("tensorrt", "cuda", "openvino", "cpu")
"""onnx_providers' names, in the order `auto` prefers them (backends.onnx maps them to ONNX
Runtime's execution providers)."""
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
WARMUP_SIZE_PATTERN = re.compile(r"^([1-9]\d{0,4})x([1-9]\d{0,4})$")

#: What the error for a missing PSMNet checkpoint tells the user.
WEIGHTS_HINT = ("set weights_path to a PSMNet checkpoint, e.g. the official "
                "pretrained_model_KITTI2015.tar (`make assets` puts it in assets/weights/), "
                "or use backend:=sgbm, which needs no weights")
#: What the error for a missing ONNX file tells the user.
ONNX_HINT = ("set onnx_path to a file written by stereo_depth_export (e.g. `stereo_depth_export "
             "--weights W --size 384x1248 --output net.onnx`)")


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
            rule = (f" ({self._step_rule()} in [{self.min_value}, {self.max_value}])"
                    if self.step else "")
            if self.min_value is not None and value < self.min_value:
                raise ValueError(f"{self.name}={value} is below the minimum {self.min_value}"
                                 + rule)
            if self.max_value is not None and value > self.max_value:
                raise ValueError(f"{self.name}={value} is above the maximum {self.max_value}"
                                 + rule)
            if self.step and (value - int(self.min_value or 0)) % self.step:
                raise ValueError(f"{self.name}={value} must be {self._step_rule()}")
        return value


def _spec(name, default, description, **kwargs) -> ParamSpec:
    return ParamSpec(name=name, default=default, description=description, **kwargs)


#: Every node parameter, in the order they are declared and documented.
PARAMS: tuple[ParamSpec, ...] = (
    # --- matcher (reload needed => read-only) ---
    _spec("backend", "psmnet", "stereo matcher: psmnet (the network), sgbm (OpenCV semi-global "
          "block matching) or bm (OpenCV block matching, stereo_image_proc's default); "
          "stereo_algorithm picks between bm and sgbm", choices=BACKENDS, read_only=True),
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
    _spec("onnx_path", "", "backend onnx: the .onnx file stereo_depth_export wrote (one padded "
          "input size; images that pad to another size are dropped as "
          "matcher_input_size_mismatch); empty = not set", read_only=True),
    _spec("onnx_providers", "auto", "backend onnx: ONNX Runtime execution providers in order of "
          "preference, comma-separated (" + ", ".join(ONNX_PROVIDERS) + "); auto = every one "
          "this onnxruntime has, in that order; the ones in use are logged at start",
          read_only=True, constraints="auto or a comma-separated list"),
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
    _spec("max_relative_uncertainty", 0.1, "pixels whose relative depth uncertainty sigma_Z/Z "
          "(= sigma_d / disparity, first order) is above this become invalid in every output; "
          "the limit is at full resolution: below input_scale 1 the matcher's sigma_d (its "
          "own px) is compared with the disparity in full-resolution px, so about the same "
          "share of pixels passes at every scale; 0 = keep all (backends without "
          "uncertainty, e.g. sgbm, ignore it); the default is measured (README, Which depth "
          "to trust)",
          min_value=0.0, max_value=1.0),
    _spec("max_disparity_uncertainty", 1.4, "pixels whose disparity uncertainty sigma_d (px; "
          "below input_scale 1 the matcher's sigma_d in its own px, so that about the same "
          "share of pixels passes at every scale) is above this become invalid in every "
          "output; at 1.4 px a normally distributed error stays within 2 px "
          "(bad-2) with probability 0.85; 0 = keep all (backends without uncertainty, e.g. "
          "sgbm, ignore it); the default is measured (README, Which depth to trust)",
          min_value=0.0, max_value=100.0),
    _spec("fattening_filter", True, "invalidate the band of foreground depth a network spreads "
          "into textureless background (sky, blank walls) beside an object's left edge: "
          "textureless pixels within one foreground disparity of a disparity edge that lies in "
          "textureless image; part of the uncertainty mask: applies only with an uncertainty "
          "limit (max_relative_uncertainty, max_disparity_uncertainty) > 0; false = off "
          "(backends without uncertainty, e.g. sgbm, ignore it; README, Which depth to trust)"),
    _spec("occlusion_filter", True, "invalidate the pixels the disparity itself says the right "
          "camera cannot see (a pixel farther right in the row lands at least 1 px left of "
          "their match: the band beside an object's left edge that a network fills in by "
          "guessing); part of the uncertainty mask like fattening_filter; false = off"),
    _spec("use_color", True, "add packed rgb (from the rectified left image) to points2"),
    _spec("points_depth_std", False, "add a float32 depth_std field (sigma_Z, metres, NaN "
          "invalid) to points2; backends without uncertainty (sgbm) leave it out"),
    # --- input synchronisation and QoS (re-subscription needed => read-only) ---
    _spec("approximate_sync", False, "pair images and camera_infos by nearest stamp within "
          "approximate_sync_tolerance_seconds instead of requiring equal stamps", read_only=True),
    _spec("approximate_sync_tolerance_seconds", 0.0, "with approximate_sync: the largest stamp "
          "difference (s) inside one set; 0 = no bound, the nearest stamps pair up whatever "
          "their distance (stereo_image_proc's meaning: ApproximateTime for 0, "
          "ApproximateEpsilonTime above)", min_value=0.0, max_value=10.0, read_only=True),
    _spec("synchronizer", "auto", "input synchroniser: message_filters (TimeSynchronizer / "
          "ApproximateTimeSynchronizer of a ROS 2 install), in_package (the same policies, for "
          "installs without message_filters) or auto (message_filters when importable)",
          choices=SYNCHRONIZERS, read_only=True),
    _spec("queue_size", 5, "messages kept per input topic while waiting for the other three",
          min_value=1, max_value=1000, read_only=True),
    _spec("image_transport", "raw", "how the images arrive (stereo_image_proc's name): raw "
          "(sensor_msgs/Image on left|right/image_raw) or compressed (sensor_msgs/CompressedImage "
          "JPEG/PNG on left|right/image_raw/compressed)", choices=IMAGE_TRANSPORTS,
          read_only=True),
    _spec("use_system_default_qos", False, "subscribe with the middleware's default QoS (with "
          "Fast DDS a reader's default is best effort) instead of sensor-data QoS (best effort, "
          "keep last queue_size); single policies of any topic can also be set with "
          "qos_overrides.<topic>.subscription|publisher.<policy>",
          read_only=True),
    _spec("diagnostics_period_seconds", 1.0, "period of the /diagnostics status (s)",
          min_value=0.1, max_value=60.0, read_only=True),
    # --- trust: calibration-drift alarm, rate governor, cloud resolution (live) ---
    _spec("rectification_check.period_seconds", 10.0, "every this many seconds (s) a worker "
          "thread measures the vertical misalignment of the latest rectified pair from sparse "
          "feature matches and reports it in /diagnostics as rectification_error_px; off the "
          "per-frame path; 0 = off", min_value=0.0, max_value=3600.0),
    _spec("rectification_check.warn_px", 0.87, "rectification_error_px (median of the last 3 "
          "checks, px at the camera_info resolution) at or above which /diagnostics reports WARN",
          min_value=0.05, max_value=100.0),
    _spec("rectification_check.error_px", 3.0, "rectification_error_px at or above which "
          "/diagnostics reports ERROR (must be above rectification_check.warn_px)",
          min_value=0.1, max_value=100.0),
    _spec("target_rate_hz", 0.0, "rate governor: frames per second to hold by lowering the "
          "working input scale (down to min_input_scale) when frames take longer than 1/rate, "
          "and raising it back (up to input_scale) when there is headroom; 0 = off",
          min_value=0.0, max_value=1000.0),
    _spec("min_input_scale", 0.25, "rate governor: the smallest input scale it may use (a "
          "value above input_scale means input_scale)", min_value=0.1, max_value=1.0),
    _spec("points_decimation", 1, "points2 keeps every Nth pixel of the depth image in rows and "
          "columns (organised, N^2 fewer points; 1 = every pixel)", min_value=1, max_value=4,
          constraints="1, 2 or 4"),
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
    # --- stereo_image_proc's own (no counterpart in this project's names) ---
    _spec("prefilter_size", 9, "bm: normalisation window of the pre-filter (px, odd)",
          min_value=5, max_value=255, step=2),
    _spec("texture_threshold", 10, "bm: a window whose texture does not exceed this is invalid; "
          "0 = keep all", min_value=0, max_value=10000),
    _spec("avoid_point_cloud_padding", False, "points2 layout: false = x, y, z, pad, rgb, pad "
          "(point_step 32 with rgb, 16 without; PCL's aligned layout, stereo_image_proc's "
          "default), true = packed x, y, z[, rgb] (point_step 16 / 12)"),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}

UNBOUNDED_SYNC_TOLERANCE_S = 1.0e6
"""approximate_sync_tolerance_seconds 0 means no bound: the synchronisers get this (11.6 days)."""

SGBM_PREFIX = "sgbm."
# the depth mask (README "Which depth to trust"): its limits (0 = off) and its filters, which
# apply only while an uncertainty limit is on
DEPTH_MASK_LIMITS = ("confidence_threshold", "max_relative_uncertainty",
                     "max_disparity_uncertainty")
DEPTH_MASK_FILTERS = ("fattening_filter", "occlusion_filter")


def default_depth_mask() -> dict:
    """The depth mask's parameters at their defaults: {name: value}."""
    return {name: SPECS[name].default for name in DEPTH_MASK_LIMITS + DEPTH_MASK_FILTERS}


PSMNET_PARAMETERS = ("weights_path", "model", "max_disparity", "device", "precision", "engine")
"""The parameters that are PsmnetBackend options of the same name."""
BM_PARAMETERS = {"sgbm.min_disparity": "min_disparity", "sgbm.num_disparities": "num_disparities",
                 "sgbm.block_size": "block_size", "prefilter_size": "pre_filter_size",
                 "sgbm.pre_filter_cap": "pre_filter_cap", "texture_threshold": "texture_threshold",
                 "sgbm.uniqueness_ratio": "uniqueness_ratio",
                 "sgbm.speckle_window_size": "speckle_window_size",
                 "sgbm.speckle_range": "speckle_range", "sgbm.disp12_max_diff": "disp12_max_diff"}
"""{parameter: BmBackend option}: block matching shares the window, range and filter values with
SGBM (one value each, as stereo_image_proc sets both matchers from one parameter)."""
ONNX_PARAMETERS = {"onnx_path": "onnx_path", "onnx_providers": "providers"}
"""{parameter: OnnxBackend option} of backend onnx."""


def sgbm_penalties(p1: int | None, p2: int | None, block_size: int, channels: int
                   ) -> tuple[int, int]:
    """SGBM's smoothness penalties (P1, P2) as StereoSGBM gets them: 0 or None = OpenCV's
    suggestion, 8 * channels * block_size^2 for P1 and 32 * channels * block_size^2 for P2
    (channels: 1 matching on luma, 3 on colour). ValueError unless P2 > P1 (the rule of
    sgbm.p1/sgbm.p2, checked here for the node's parameters and backends.sgbm alike)."""
    area = channels * block_size * block_size
    used = (p1 or 8 * area), (p2 or 32 * area)
    if used[1] <= used[0]:
        raise ValueError(f"SGBM p2 ({used[1]}{'' if p2 else ' = 32 * channels * block_size^2'}) "
                         f"must be greater than p1 ({used[0]}"
                         f"{'' if p1 else ' = 8 * channels * block_size^2'}): sgbm.p2 > sgbm.p1")
    return used


def _field_name(param_name: str) -> str:
    return param_name.replace(".", "_")


def _parameter_fields(cls: type) -> type:
    """Class decorator: one typed field per entry of PARAMS, then `dataclass(frozen=True)`.

    Each field is named after its parameter ('.' -> '_'), typed and defaulted by its ParamSpec
    (the spec is in the field's `metadata["spec"]`), in PARAMS' order; the class docstring gains
    the list of fields with their help, so `help(NodeConfig)` documents every value.
    """
    annotations: dict[str, type] = {}
    lines = []
    for spec in PARAMS:
        name = _field_name(spec.name)
        if name in cls.__dict__ or name in annotations:
            raise TypeError(f"parameter {spec.name!r} would replace {cls.__name__}.{name}")
        annotations[name] = spec.type
        setattr(cls, name, field(default=spec.default, metadata={"spec": spec}))
        lines.append(f"    {name}: {spec.type.__name__} = {spec.default!r}"
                     + (f" (parameter {spec.name})" if name != spec.name else ""))
        lines += textwrap.wrap(spec.help_line(), 92, initial_indent=" " * 8,
                               subsequent_indent=" " * 8, break_on_hyphens=False)
    cls.__annotations__ = annotations
    cls.__doc__ = (cls.__doc__ or "") + "\n\n    Fields:\n\n" + "\n".join(lines) + "\n"
    return dataclass(frozen=True)(cls)


@_parameter_fields
class NodeConfig:
    """A complete, validated parameter set: one field per parameter of PARAMS (typed, default
    and help from its ParamSpec; field names are parameter names with '.' -> '_'), frozen.

    Build with `NodeConfig.from_params({name: value})` (range- and cross-checked) or
    `NodeConfig(field=value, ...)`; change with `replace({name: value})`."""

    def get(self, param_name: str) -> Any:
        return getattr(self, _field_name(param_name))

    def as_params(self) -> dict[str, Any]:
        """{parameter name: value} for every parameter."""
        return {spec.name: self.get(spec.name) for spec in PARAMS}

    def backend_parameters(self) -> dict[str, str]:
        """{parameter name: the backend's option name} for the configured backend."""
        if self.backend == "psmnet":
            return {**{name: name for name in PSMNET_PARAMETERS},
                    "sgbm.min_disparity": "min_disparity"}
        if self.backend == "bm":
            return dict(BM_PARAMETERS)
        if self.backend == "onnx":
            return dict(ONNX_PARAMETERS)
        return {spec.name: spec.name[len(SGBM_PREFIX):] for spec in PARAMS
                if spec.name.startswith(SGBM_PREFIX)}

    def sgbm_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.sgbm.SgbmBackend."""
        return {spec.name[len(SGBM_PREFIX):]: self.get(spec.name) for spec in PARAMS
                if spec.name.startswith(SGBM_PREFIX)}

    def psmnet_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.psmnet.PsmnetBackend (min_disparity: the start of the
        published window, stereo_image_proc's min_disparity; PSMNet itself starts at 0)."""
        options = {name: self.get(name) for name in PSMNET_PARAMETERS}
        options["min_disparity"] = self.sgbm_min_disparity
        return options

    def bm_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.bm.BmBackend."""
        return {option: self.get(name) for name, option in BM_PARAMETERS.items()}

    def onnx_options(self) -> dict[str, Any]:
        """Keyword arguments for backends.onnx.OnnxBackend."""
        return {option: self.get(name) for name, option in ONNX_PARAMETERS.items()}

    def backend_options(self) -> dict[str, Any]:
        if self.backend == "bm":
            return self.bm_options()
        if self.backend == "onnx":
            return self.onnx_options()
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
        providers = [p.strip() for p in self.onnx_providers.lower().split(",")]
        if providers != ["auto"] and any(p not in ONNX_PROVIDERS for p in providers):
            raise ValueError(f"onnx_providers={self.onnx_providers!r} is not allowed: expected "
                             f"auto or a comma-separated list of {', '.join(ONNX_PROVIDERS)}")
        if self.min_depth_m > 0 and self.max_depth_m > 0 and self.min_depth_m >= self.max_depth_m:
            raise ValueError(f"min_depth_m={self.min_depth_m} must be below max_depth_m="
                             f"{self.max_depth_m} (0 disables a limit)")
        if self.rectification_check_warn_px >= self.rectification_check_error_px:
            raise ValueError(f"rectification_check.warn_px={self.rectification_check_warn_px} "
                             "must be below rectification_check.error_px="
                             f"{self.rectification_check_error_px}")
        if self.points_decimation not in (1, 2, 4):
            raise ValueError(f"points_decimation={self.points_decimation} is not allowed: "
                             "expected 1, 2 or 4")
        sgbm_penalties(self.sgbm_p1, self.sgbm_p2, self.sgbm_block_size,
                       1 if self.sgbm_grayscale else 3)

    def sync_tolerance_s(self) -> float:
        """The synchroniser's stamp tolerance: approximate_sync_tolerance_seconds, or with 0
        (stereo_image_proc's unbounded ApproximateTime policy) UNBOUNDED_SYNC_TOLERANCE_S."""
        tolerance = self.approximate_sync_tolerance_seconds
        return tolerance if tolerance > 0 else UNBOUNDED_SYNC_TOLERANCE_S

    def warmup_dimensions(self) -> tuple[int, int] | None:
        """(width, height) of the warm-up pair, or None for no warm-up."""
        match = WARMUP_SIZE_PATTERN.match(self.warmup_size)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def validate_startup(self) -> None:
        """Checks that only matter when the node starts (the backend is about to be built)."""
        if self.backend == "psmnet" and not self.weights_path.strip():
            raise ValueError("weights_path is empty but backend is psmnet: " + WEIGHTS_HINT)
        if self.backend == "onnx" and not self.onnx_path.strip():
            raise ValueError("onnx_path is empty but backend is onnx: " + ONNX_HINT)


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


# ---------------------------------------------------------------- stereo_image_proc's names
# stereo_image_proc's DisparityNode parameters that name a fact this project already has a
# parameter for. Each is declared on the node with stereo_image_proc's type and help (range:
# stereo_image_proc's, widened where this project accepts more) and holds the same value as its
# counterpart: one value per fact. Given together with different values, stereo_image_proc's
# name wins (a WARN says so). stereo_image_proc's parameters without a counterpart
# (prefilter_size, texture_threshold, avoid_point_cloud_padding, and approximate_sync,
# approximate_sync_tolerance_seconds, queue_size, use_system_default_qos, use_color, which keep
# their names here) are ordinary entries of PARAMS.

STEREO_ALGORITHMS = {0: "bm", 1: "sgbm"}
"""stereo_image_proc's stereo_algorithm values -> backend."""


@dataclass(frozen=True)
class SipAlias:
    """A stereo_image_proc parameter that holds the value of this project's `target`.

    spec: its name, default (stereo_image_proc's, used only for the type), help and range.
    scale: how the value converts: "same" (numbers, truncated to int like stereo_image_proc's
    setters), "sgbm_mode" (0..3 <-> sgbm.mode's names), "backend" (stereo_algorithm),
    "range" (disparity_range: sgbm.num_disparities, or with psmnet max_disparity - min).
    """

    spec: ParamSpec
    target: str
    kind: str = "same"


def _alias(name, default, description, target, kind="same", **kwargs) -> SipAlias:
    return SipAlias(ParamSpec(name=name, default=default, description=description, **kwargs),
                    target, kind)


SIP_ALIASES: tuple[SipAlias, ...] = (
    _alias("stereo_algorithm", 0, "stereo_image_proc: 0 = block matching (backend bm), 1 = "
           "semi-global block matching (backend sgbm); ignored with backend psmnet",
           "backend", "backend", min_value=0, max_value=1, read_only=True),
    _alias("correlation_window_size", 15, "stereo_image_proc: SAD/matching window (px, odd) "
           "= sgbm.block_size", "sgbm.block_size", min_value=1, max_value=255, step=2),
    _alias("prefilter_cap", 31, "stereo_image_proc: bound on pre-filtered pixel values "
           "= sgbm.pre_filter_cap", "sgbm.pre_filter_cap", min_value=1, max_value=127),
    _alias("min_disparity", 0, "stereo_image_proc: disparity to begin the search at (px) "
           "= sgbm.min_disparity; with psmnet the start of the published window",
           "sgbm.min_disparity", min_value=-2048, max_value=2048),
    _alias("disparity_range", 64, "stereo_image_proc: number of disparities searched (px, "
           "multiple of 16) = sgbm.num_disparities; with psmnet max_disparity - min_disparity "
           "(needs a restart there)", "sgbm.num_disparities", "range", min_value=16,
           max_value=4096, step=16),
    _alias("uniqueness_ratio", 15.0, "stereo_image_proc: margin (%) by which the best match "
           "must beat the next best = sgbm.uniqueness_ratio (truncated to an integer)",
           "sgbm.uniqueness_ratio", min_value=0.0, max_value=100.0),
    _alias("speckle_size", 100, "stereo_image_proc: reject speckle regions smaller than this "
           "(px) = sgbm.speckle_window_size", "sgbm.speckle_window_size", min_value=0,
           max_value=10000),
    _alias("speckle_range", 4, "stereo_image_proc: largest disparity difference inside a "
           "speckle region = sgbm.speckle_range", "sgbm.speckle_range", min_value=0,
           max_value=64),
    _alias("disp12_max_diff", 0, "stereo_image_proc: left-right check tolerance (px) "
           "= sgbm.disp12_max_diff (-1 = no check)", "sgbm.disp12_max_diff", min_value=-1,
           max_value=256),
    _alias("P1", 200.0, "stereo_image_proc: SGBM penalty for 1 px disparity changes = sgbm.p1 "
           "(truncated to an integer; 0 = OpenCV's suggestion)", "sgbm.p1", min_value=0.0,
           max_value=100000.0),
    _alias("P2", 400.0, "stereo_image_proc: SGBM penalty for larger disparity changes = sgbm.p2 "
           "(truncated to an integer; 0 = OpenCV's suggestion)", "sgbm.p2", min_value=0.0,
           max_value=400000.0),
    _alias("sgbm_mode", 0, "stereo_image_proc: SGBM mode 0 = sgbm, 1 = hh, 2 = sgbm_3way, "
           "3 = hh4 = sgbm.mode", "sgbm.mode", "sgbm_mode", min_value=0, max_value=3),
)
SIP_ALIAS_BY_NAME: dict[str, SipAlias] = {alias.spec.name: alias for alias in SIP_ALIASES}


def _alias_target(alias: SipAlias, backend: str) -> str:
    if alias.kind == "range" and backend == "psmnet":
        return "max_disparity"
    return alias.target


def _alias_to_target(alias: SipAlias, value: Any, min_disparity: int) -> Any:
    """The target's value for the alias's (checked) value."""
    if alias.kind == "backend":
        return STEREO_ALGORITHMS[value]
    if alias.kind == "sgbm_mode":
        return SGBM_MODES[value]
    target = SPECS[alias.target]
    if target.type is int:
        return int(value)
    return value


def alias_value(alias: SipAlias, values: Mapping[str, Any]) -> Any:
    """The alias's value mirrored from this project's {parameter: value} (None: no mirror)."""
    backend = values.get("backend", SPECS["backend"].default)
    if alias.kind == "backend":
        return {v: k for k, v in STEREO_ALGORITHMS.items()}.get(backend)
    target = _alias_target(alias, backend)
    value = values.get(target, SPECS[target].default)
    try:
        if alias.kind == "sgbm_mode":
            return SGBM_MODES.index(value)
        if alias.kind == "range" and backend == "psmnet":
            value -= max(0, values.get("sgbm.min_disparity",
                                       SPECS["sgbm.min_disparity"].default))
        return alias.spec.type(value)
    except (TypeError, ValueError):          # a value being rejected: nothing to mirror
        return None


def resolve_sip_aliases(given: Mapping[str, Any], current: Mapping[str, Any] | None = None
                        ) -> tuple[dict[str, Any], list[str]]:
    """This project's values for stereo_image_proc's names among `given`.

    given: {parameter: value} the user set (params file, -p, launch, or one live change).
    current: the values of this project's parameters otherwise (defaults when None).
    Returns ({target parameter: value}, warnings). The stereo_image_proc name wins when its
    counterpart is also given with another value (one warning each). ValueError names the
    parameter, its value and the rule for a value that cannot be used.
    """
    values = {spec.name: spec.default for spec in PARAMS}
    values.update(current or {})
    values.update({name: value for name, value in given.items() if name in SPECS})
    changes: dict[str, Any] = {}
    warnings: list[str] = []
    checked = {alias.spec.name: alias.spec.check(given[alias.spec.name])
               for alias in SIP_ALIASES if alias.spec.name in given}
    if "min_disparity" in checked:              # first: disparity_range with psmnet needs it
        values["sgbm.min_disparity"] = checked["min_disparity"]
    if "stereo_algorithm" in checked:
        classical = STEREO_ALGORITHMS[checked["stereo_algorithm"]]
        backend = given.get("backend")
        if backend == "psmnet":
            warnings.append(f"stereo_algorithm={checked['stereo_algorithm']} is ignored: backend "
                            "psmnet is set (stereo_algorithm picks between bm and sgbm)")
            del checked["stereo_algorithm"]
        else:
            values["backend"] = classical
    for name, value in checked.items():
        alias = SIP_ALIAS_BY_NAME[name]
        backend = values["backend"]
        target = _alias_target(alias, backend)
        new = _alias_to_target(alias, value, values["sgbm.min_disparity"])
        if alias.kind == "range" and backend == "psmnet":
            new = max(0, values["sgbm.min_disparity"]) + int(value)
        try:
            new = SPECS[target].check(new)
        except ValueError as error:
            raise ValueError(f"{name}={value!r} sets {target}={new!r}, which is not allowed: "
                             f"{error}") from None
        if target in given and given[target] != new:
            warnings.append(f"{name}={value!r} and {target}={given[target]!r} are both given "
                            f"and name one value: stereo_image_proc's {name} wins, {target} is "
                            f"{new!r}")
        changes[target] = new
        values[target] = new
    return changes, warnings


# ---------------------------------------------------------------- stereo_depth_point_cloud_node
POINT_CLOUD_PARAMETERS = ("use_color", "avoid_point_cloud_padding", "approximate_sync",
                          "approximate_sync_tolerance_seconds", "queue_size", "synchronizer",
                          "image_transport", "use_system_default_qos",
                          "diagnostics_period_seconds")
"""The parameters of stereo_depth_point_cloud_node (stereo_image_proc's point_cloud_node has the
first five and image_transport): the depth node's specs, with POINT_CLOUD_DESCRIPTIONS where
the text differs."""
POINT_CLOUD_DESCRIPTIONS = {
    "use_color": "add packed rgb (from left/image_rect_color) to points2",
    "queue_size": "messages kept per input topic while waiting for the other three (disparity, "
                  "left/image_rect_color, left/camera_info, right/camera_info)",
    "image_transport": "how left/image_rect_color arrives: raw (sensor_msgs/Image) or "
                       "compressed (sensor_msgs/CompressedImage JPEG/PNG on "
                       "left/image_rect_color/compressed)",
}


def point_cloud_specs() -> tuple[ParamSpec, ...]:
    """The ParamSpecs of stereo_depth_point_cloud_node, in POINT_CLOUD_PARAMETERS' order."""
    return tuple(dataclasses.replace(SPECS[name], description=POINT_CLOUD_DESCRIPTIONS.get(
        name, SPECS[name].description)) for name in POINT_CLOUD_PARAMETERS)
