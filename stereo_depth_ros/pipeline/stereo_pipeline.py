"""The per-frame path from a raw stereo pair to disparity, depth and points; no ROS.

    rectify (maps built once per calibration) -> input_scale -> backend -> confidence threshold,
    uncertainty limits, fattening and occlusion filters -> depth (and its first-order sigma) ->
    depth limits -> points

The node, `stereo_depth_infer`, `stereo_depth_eval`, `stereo_depth_bench` and the demo all run this
object, so what is benchmarked and evaluated is what the robot runs. With a backend on CUDA the
whole path runs on the GPU (`pipeline.device`): the raw pair goes up once through pinned memory and
only the outputs come back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from stereo_depth_ros import drop_reasons
from stereo_depth_ros.backends.base import InputSizeError
from stereo_depth_ros.config import RECTIFY_MODES
from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.fattening import fattened
from stereo_depth_ros.core.geometry import clip_depth, depth_to_points, disparity_to_depth
from stereo_depth_ros.core.occlusion import occluded
from stereo_depth_ros.core.rectify import Rectifier, StereoCalibration
from stereo_depth_ros.core.stage_clock import StageClock
from stereo_depth_ros.core.uncertainty import depth_std, trusted
from stereo_depth_ros.drop_reasons import FrameDropped

LOG = logging.getLogger(__name__)

DEVICE_CACHE_ENTRIES = 16
STAGES = ("auto", "host", "device")


@dataclass(frozen=True)
class PipelineOptions:
    """What the pipeline does besides matching (the node's live parameters of the same names).

    rectify: "auto" (remap only when the calibration says the images are raw), "true", "false".
    input_scale: resize factor in (0, 1] applied to the rectified pair before matching
        (INTER_AREA); every output is at the resized resolution, with the rig scaled to match.
    confidence_threshold: pixels whose confidence is below this become invalid in every output
        (0 = keep all; backends without confidence ignore it).
    max_relative_uncertainty: pixels whose sigma_Z / Z (= sigma_d / (d - cx_offset)) is above
        this become invalid in every output (0 = keep all; backends without sigma ignore it);
        the limit is at full resolution: input_scale * sigma_d / (d - cx_offset) is compared
        (core.uncertainty).
    max_disparity_uncertainty: pixels whose sigma_d (px, the matcher's at any input_scale) is
        above this become invalid (0 = keep all; backends without sigma ignore it).
    fattening_filter: withhold the band of foreground disparity spread into textureless
        background beside a depth edge (core.fattening).
    occlusion_filter: withhold the pixels the disparity itself says the right camera cannot see
        (core.occlusion). Both filters are part of the uncertainty mask: they apply only with
        an uncertainty limit > 0 and a backend that gives sigma_d (`uncertainty_mask_on`).
    min_depth_m, max_depth_m: depth outside these limits becomes NaN (0 = no limit).
    """

    rectify: str = "auto"
    input_scale: float = 1.0
    confidence_threshold: float = 0.0
    max_relative_uncertainty: float = 0.0
    max_disparity_uncertainty: float = 0.0
    fattening_filter: bool = False
    occlusion_filter: bool = False
    min_depth_m: float = 0.0
    max_depth_m: float = 0.0

    def __post_init__(self) -> None:
        if self.rectify not in RECTIFY_MODES:
            raise ValueError(f"rectify={self.rectify!r}: expected one of "
                             f"{', '.join(RECTIFY_MODES)}")
        if not 0.0 < self.input_scale <= 1.0:
            raise ValueError(f"input_scale={self.input_scale} must be in (0, 1]")

    @classmethod
    def from_config(cls, config) -> PipelineOptions:
        """The options a `config.NodeConfig` (or anything with these attributes) asks for."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def uncertainty_mask_on(self, sigma) -> bool:
        """An uncertainty limit applies to a frame whose backend gave `sigma` (or None)."""
        return sigma is not None and (self.max_relative_uncertainty > 0
                                      or self.max_disparity_uncertainty > 0)

    def filters_fattening(self, sigma) -> bool:
        """The fattening filter applies to a frame whose backend gave `sigma` (or None)."""
        return self.fattening_filter and self.uncertainty_mask_on(sigma)

    def filters_occlusion(self, sigma) -> bool:
        """The occlusion filter applies to a frame whose backend gave `sigma` (or None)."""
        return self.occlusion_filter and self.uncertainty_mask_on(sigma)

    @property
    def depth_limits(self) -> tuple[float | None, float | None]:
        return (self.min_depth_m or None, self.max_depth_m or None)


@dataclass
class FrameResult:
    """Everything one pair produced, at the matcher's resolution.

    disparity: (H, W) float32 px (x_left - x_right on the images matched), NaN invalid, the
        confidence threshold applied. confidence: (H, W) float32 in [0, 1] or None.
    depth_m: (H, W) float32 metres (REP 118, NaN invalid, limits applied) or None when not
        asked for, there is no rig, or the rig gives no metric depth (`rig.depth_problem`).
        points: (H, W, 3) float32 metres in the left optical frame, or None.
    left: the rectified (and scaled) left image the matcher saw, uint8 (H, W, 3) RGB or (H, W).
    rig: the rectified rig at the matcher's resolution, or None (no calibration given).
    min_disparity, max_disparity: the searched range, px. delta_d: the disparity step, px.
    timings_s: seconds per stage ("rectify", "scale", "match", "depth_points", "download" on a
        GPU, "total"); on CUDA the stages are device times from CUDA events.
    uncertainty_px: (H, W) float32 sigma_d px at the matcher's resolution, NaN where the
        disparity is invalid, or None (backend without uncertainty, e.g. SGBM).
    depth_std_m: (H, W) float32 sigma_Z = Z^2 sigma_d / (f B) metres (first order, f of the
        scaled rig), NaN where depth_m is invalid; None without uncertainty or depth.
    """

    disparity: np.ndarray
    confidence: np.ndarray | None
    depth_m: np.ndarray | None
    points: np.ndarray | None
    left: np.ndarray
    rig: StereoRig | None
    min_disparity: float
    max_disparity: float
    delta_d: float
    timings_s: dict[str, float] = field(default_factory=dict)
    uncertainty_px: np.ndarray | None = None
    depth_std_m: np.ndarray | None = None


class StereoPipeline:
    """One object per stream: caches the rectification maps per calibration and runs each pair.

    backend: any `backends.StereoBackend`.
    options: `PipelineOptions`; replace them at any time with `pipeline.options = ...`.
    stages: "auto" (on the backend's device when it is CUDA, else on the host), "host" (numpy/cv2)
        or "device" (torch on the backend's device; needs a backend with `upload` and
        `compute_tensors`).
    on_event: called with a one-line text when something worth a log line happens (new maps).
    input_names: how drop messages name the left image, the right image and the calibration
        (the node passes its topic names).
    """

    def __init__(self, backend, options: PipelineOptions | None = None, *, stages: str = "auto",
                 on_event: Callable[[str], None] | None = None,
                 input_names: tuple[str, str, str] = ("left", "right", "the calibration")
                 ) -> None:
        if stages not in STAGES:
            raise ValueError(f"stages={stages!r}: expected one of {', '.join(STAGES)}")
        device = getattr(backend, "device", None)
        on_device = hasattr(backend, "compute_tensors") and device is not None
        if stages == "device" and not on_device:
            raise ValueError(f"stages='device' needs a backend that runs on a torch device; "
                             f"{backend.name} runs on the host")
        if stages == "auto":
            stages = "device" if on_device and device.type == "cuda" else "host"
        self.backend = backend
        self.options = options or PipelineOptions()
        self.stages = stages
        self._on_event = on_event or LOG.info
        self.input_names = input_names
        self._rectifier: tuple[StereoCalibration, Rectifier] | None = None
        self._device_cache: dict[str, tuple] = {}
        self._copies = None

    # -- per-stream state -----------------------------------------------------------------------

    def _rectifier_for(self, calibration: StereoCalibration) -> Rectifier:
        if self._rectifier is None or self._rectifier[0] is not calibration:
            try:
                rectifier = Rectifier(calibration.left, calibration.right, calibration.width,
                                      calibration.height)
            except ValueError as error:
                raise FrameDropped(drop_reasons.INVALID_CALIBRATION,
                                   f"cannot build rectification maps: {error}") from None
            self._rectifier = (calibration, rectifier)
            self._device_cache.clear()
            self._on_event("rectification maps built for the new calibration")
        return self._rectifier[1]

    def _needs_rectifying(self, calibration) -> bool:
        if (not isinstance(calibration, StereoCalibration) or self.options.rectify == "false"
                or not calibration.rectifiable):
            return False
        return self.options.rectify == "true" or not calibration.already_rectified

    def _check_sizes(self, left: np.ndarray, right: np.ndarray, calibration) -> None:
        left_name, right_name, calibration_name = self.input_names
        if left.shape[:2] != right.shape[:2]:
            raise FrameDropped(drop_reasons.SIZE_MISMATCH, (
                f"left/right image sizes differ: {left_name} is {left.shape[1]}x"
                f"{left.shape[0]}, {right_name} is {right.shape[1]}x{right.shape[0]}"))
        rig = calibration.rig if isinstance(calibration, StereoCalibration) else calibration
        if rig is not None and (rig.width, rig.height) != (left.shape[1], left.shape[0]):
            note = getattr(calibration, "note", "")
            raise FrameDropped(drop_reasons.INFO_SIZE_MISMATCH, (
                f"image/camera_info size mismatch: {left_name} is {left.shape[1]}x"
                f"{left.shape[0]} but {calibration_name} says {rig.width}x{rig.height}"
                + (f" ({note} applied)" if note else "")))

    def _scaled_size(self, width: int, height: int) -> tuple[int, int]:
        scale = self.options.input_scale
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _check_matcher_input(self, width: int, height: int) -> None:
        try:
            self.backend.check_input_size(width, height)
        except InputSizeError as error:
            raise FrameDropped(drop_reasons.INPUT_SIZE_MISMATCH, str(error)) from None
        except ValueError as error:
            raise FrameDropped(drop_reasons.IMAGE_TOO_SMALL, str(error)) from None

    # -- the frame ------------------------------------------------------------------------------

    def process(self, left: np.ndarray, right: np.ndarray,
                calibration: StereoCalibration | StereoRig | None = None, *,
                depth: bool = True, points: bool = True) -> FrameResult:
        """Run one pair.

        left, right: uint8 (H, W, 3) RGB or (H, W) mono, raw (rectified here when the calibration
            says so) or already rectified.
        calibration: a `StereoCalibration` (raw cameras: K, D, R, P), a `StereoRig` (images
            already rectified), a `core.kitti_calib.RectifiedStereoCalibration` (what
            `load_stereo_calibration()` returns; used as its StereoRig) or None (disparity only).
        depth, points: build these outputs (points needs depth; both need a calibration).
        Raises FrameDropped (reason + message) for a pair that cannot be processed, TypeError
        for a calibration of another type.
        """
        calibration = _as_calibration(calibration)
        self._check_sizes(left, right, calibration)
        if self.stages == "device":
            return self._process_on_device(left, right, calibration, depth, points)
        return self._process_on_host(left, right, calibration, depth, points)

    def _result_base(self) -> dict:
        backend = self.backend
        return {"min_disparity": float(backend.min_disparity),
                "max_disparity": float(backend.max_disparity),
                "delta_d": float(backend.delta_d)}

    def _process_on_host(self, left, right, calibration, want_depth, want_points) -> FrameResult:
        options = self.options
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if self._needs_rectifying(calibration):
            left, right = self._rectifier_for(calibration).rectify(left, right)
        rectified = time.perf_counter()
        rig = calibration.rig if isinstance(calibration, StereoCalibration) else calibration
        if options.input_scale != 1.0:
            width, height = self._scaled_size(left.shape[1], left.shape[0])
            left = cv2.resize(left, (width, height), interpolation=cv2.INTER_AREA)
            right = cv2.resize(right, (width, height), interpolation=cv2.INTER_AREA)
            rig = rig.scaled_to(width, height) if rig is not None else None
        scaled = time.perf_counter()
        self._check_matcher_input(left.shape[1], left.shape[0])
        result = self.backend.compute(left, right)
        matched = time.perf_counter()
        disparity = np.array(result.disparity, dtype=np.float32, copy=True)
        if disparity.shape != left.shape[:2]:
            raise RuntimeError(f"backend returned disparity of shape {disparity.shape} for "
                               f"input {left.shape}")
        confidence = result.confidence
        sigma = getattr(result, "uncertainty", None)
        cx_offset = rig.cx_offset if rig is not None else 0.0
        keep = trusted(disparity, confidence, sigma,
                       confidence_threshold=options.confidence_threshold,
                       max_relative_uncertainty=options.max_relative_uncertainty,
                       max_disparity_uncertainty=options.max_disparity_uncertainty,
                       cx_offset=cx_offset, input_scale=options.input_scale)
        if options.filters_fattening(sigma):
            band = fattened(left, disparity, cx_offset)
            keep = ~band if keep is None else keep & ~band
        if options.filters_occlusion(sigma):
            hidden = occluded(disparity)
            keep = ~hidden if keep is None else keep & ~hidden
        if keep is not None:
            disparity[~keep] = np.nan
        if sigma is not None:
            sigma = np.where(np.isfinite(disparity), sigma, np.float32(np.nan)).astype(np.float32)
        depth_m = cloud = sigma_z = None
        if rig is not None and rig.has_depth and (want_depth or want_points):
            depth_m = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
            if options.min_depth_m > 0 or options.max_depth_m > 0:
                depth_m = clip_depth(depth_m, *options.depth_limits)
            if sigma is not None:
                sigma_z = depth_std(depth_m, sigma, rig.fx, rig.baseline_m)
            if want_points:
                cloud = depth_to_points(depth_m, rig.fx, rig.fy, rig.cx_left, rig.cy)
        done = time.perf_counter()
        timings.update(rectify=rectified - start, scale=scaled - rectified,
                       match=matched - scaled, depth_points=done - matched, total=done - start)
        for name, seconds in result.timings_s.items():
            timings[f"match.{name}"] = seconds
        return FrameResult(disparity=disparity, confidence=confidence,
                           depth_m=depth_m if want_depth else None, points=cloud, left=left,
                           rig=rig, timings_s=timings, uncertainty_px=sigma,
                           depth_std_m=sigma_z, **self._result_base())

    def _device_stage(self, key: str, build: Callable):
        """The cached device helper `key` (per size/rig); a stream whose size or scale keeps
        changing (the rate governor) rebuilds them rather than keeping every one."""
        if key not in self._device_cache:
            if len(self._device_cache) >= DEVICE_CACHE_ENTRIES:
                self._device_cache.clear()
            self._device_cache[key] = build()
        return self._device_cache[key]

    def _process_on_device(self, left, right, calibration, want_depth,
                           want_points) -> FrameResult:
        from stereo_depth_ros.pipeline import device as ops

        options = self.options
        backend = self.backend
        dev = backend.device
        clock = StageClock({}, dev, synchronize=False, total=True)
        left_t, right_t, rig = self._matcher_input_on_device(left, right, calibration, clock)
        with_sigma = bool(getattr(backend, "provides_uncertainty", False))
        outputs = backend.compute_tensors(left_t, right_t, with_uncertainty=True) \
            if with_sigma else backend.compute_tensors(left_t, right_t)
        disparity, confidence = outputs[0], outputs[1]
        sigma = outputs[2] if with_sigma else None
        clock.mark("match")
        cx_offset = rig.cx_offset if rig is not None else 0.0
        withheld = None
        if options.filters_fattening(sigma):
            withheld = ops.fattened(left_t, disparity, cx_offset)
        if options.filters_occlusion(sigma):
            hidden = ops.occluded(disparity)
            withheld = hidden if withheld is None else withheld | hidden
        disparity, sigma = ops.trusted(disparity, confidence, sigma, options, cx_offset, withheld)
        depth_t = points_t = sigma_z = None
        if rig is not None and rig.has_depth and (want_depth or want_points):
            depth_t = ops.depth_from_disparity(disparity, rig)
            if options.min_depth_m > 0 or options.max_depth_m > 0:
                depth_t = ops.clip_depth(depth_t, *options.depth_limits)
            if sigma is not None:
                sigma_z = depth_t * depth_t * sigma / float(rig.fx * rig.baseline_m)
            if want_points:
                projector = self._device_stage(
                    f"rays:{rig}", lambda: ops.PointProjector(rig, dev))
                points_t = projector(depth_t)
        clock.mark("depth_points")
        if self._copies is None:
            self._copies = ops.HostCopies()
        host = self._copies.fetch({"disparity": disparity, "confidence": confidence,
                                   "depth": depth_t if want_depth else None,
                                   "points": points_t, "left": left_t, "sigma": sigma,
                                   "sigma_z": sigma_z})
        clock.mark("download")
        return FrameResult(disparity=host["disparity"], confidence=host["confidence"],
                           depth_m=host["depth"], points=host["points"], left=host["left"],
                           rig=rig, timings_s=clock.finish(), uncertainty_px=host["sigma"],
                           depth_std_m=host["sigma_z"], **self._result_base())

    def _matcher_input_on_device(self, left, right, calibration, clock):
        """Upload, rectify and scale on the backend's device: (left, right, rig at that size)."""
        from stereo_depth_ros.pipeline import device as ops

        options, dev = self.options, self.backend.device
        left_t, right_t = self.backend.upload(left, right)
        clock.mark("upload")
        if self._needs_rectifying(calibration):
            rectifier = self._rectifier_for(calibration)
            remaps = self._device_stage("remap", lambda: tuple(
                None if rectifier.fixed_point_maps(i) is None else ops.DeviceRemap(
                    *rectifier.fixed_point_maps(i), (rectifier.height, rectifier.width), dev)
                for i in (0, 1)))
            if remaps[0] is not None:
                left_t, right_t = remaps[0](left_t), remaps[1](right_t)
        clock.mark("rectify")
        rig = calibration.rig if isinstance(calibration, StereoCalibration) else calibration
        if options.input_scale != 1.0:
            height, width = left_t.shape[:2]
            size = self._scaled_size(width, height)
            resize = self._device_stage(f"resize:{height}x{width}->{size}", lambda: (
                ops.DeviceAreaResize((height, width), (size[1], size[0]), dev)))
            left_t, right_t = resize(left_t), resize(right_t)
            rig = rig.scaled_to(*size) if rig is not None else None
        clock.mark("scale")
        self._check_matcher_input(left_t.shape[1], left_t.shape[0])
        return left_t, right_t, rig


def _as_calibration(calibration):
    """`process`'s calibration argument as a StereoCalibration, a StereoRig or None."""
    from stereo_depth_ros.core.kitti_calib import RectifiedStereoCalibration

    if calibration is None or isinstance(calibration, (StereoCalibration, StereoRig)):
        return calibration
    if isinstance(calibration, RectifiedStereoCalibration):
        return calibration.stereo_rig()
    raise TypeError("calibration must be a core.rectify.StereoCalibration, a "
                    "core.camera.StereoRig, a core.kitti_calib.RectifiedStereoCalibration or "
                    f"None, got {type(calibration).__name__}")
