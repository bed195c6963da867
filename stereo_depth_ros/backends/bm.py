"""OpenCV block matching (StereoBM): stereo_image_proc's `stereo_algorithm: 0`.

Matches on luma (BT.601) with a sum-of-absolute-differences window, as stereo_image_proc's
DisparityNode does. Parameters (px unless noted; OpenCV names in brackets):
- min_disparity [minDisparity]: smallest disparity searched (may be negative).
- num_disparities [numDisparities]: size of the search range, a positive multiple of 16; the
  searched range is [min_disparity, min_disparity + num_disparities).
- block_size [blockSize]: odd SAD window side, 5..255 (and not larger than the image).
- pre_filter_size [preFilterSize]: odd normalisation window, 5..255.
- pre_filter_cap [preFilterCap]: bound on the normalised pixel values, 1..63.
- texture_threshold [textureThreshold]: a window whose texture (sum of |x-derivative|) does not
  exceed this is invalid; 0 = keep all.
- uniqueness_ratio [uniquenessRatio]: margin in % by which the best SAD must beat the next best.
- speckle_window_size [speckleWindowSize], speckle_range [speckleRange]: speckle filter, as in
  SGBM (0 = off).
- disp12_max_diff [disp12MaxDiff]: left-right check tolerance in whole px, negative = off.

Output: disparity = OpenCV's fixed-point value / 16 as float32, NaN where OpenCV marks a pixel
invalid (below min_disparity: the unsearchable left band, low texture, not unique, speckles).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from stereo_depth_ros.backends.base import DisparityResult, to_mono, validate_pair

WINDOW_RANGE = (5, 255)
PRE_FILTER_CAP_RANGE = (1, 63)


def _odd_in(name: str, value: int, limits: tuple[int, int]) -> None:
    low, high = limits
    if not low <= value <= high or value % 2 == 0:
        raise ValueError(f"BM {name} must be odd and in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class BmParams:
    """Validated StereoBM parameters (see the module docstring for meanings and ranges)."""

    min_disparity: int = 0
    num_disparities: int = 64
    block_size: int = 15
    pre_filter_size: int = 9
    pre_filter_cap: int = 31
    texture_threshold: int = 10
    uniqueness_ratio: int = 15
    speckle_window_size: int = 100
    speckle_range: int = 4
    disp12_max_diff: int = -1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"BM {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.num_disparities <= 0 or self.num_disparities % 16:
            raise ValueError("BM num_disparities must be a positive multiple of 16, got "
                             f"{self.num_disparities}")
        _odd_in("block_size", self.block_size, WINDOW_RANGE)
        _odd_in("pre_filter_size", self.pre_filter_size, WINDOW_RANGE)
        low, high = PRE_FILTER_CAP_RANGE
        if not low <= self.pre_filter_cap <= high:
            raise ValueError(f"BM pre_filter_cap must be in [{low}, {high}], got "
                             f"{self.pre_filter_cap}")
        for name in ("texture_threshold", "uniqueness_ratio", "speckle_window_size",
                     "speckle_range"):
            if getattr(self, name) < 0:
                raise ValueError(f"BM {name} must be >= 0, got {getattr(self, name)}")


class BmBackend:
    """StereoBackend around cv2.StereoBM; parameters as in BmParams, changeable live.

    compute() takes a rectified uint8 pair, (H, W, 3) RGB or (H, W) mono, and returns
    DisparityResult(disparity (H, W) float32 px with NaN invalid, confidence None, timings_s).
    """

    name = "bm"
    delta_d = 1.0 / cv2.StereoMatcher_DISP_SCALE
    """Disparity step: OpenCV's fixed-point output is in 1/16 px."""

    def __init__(self, **options: int) -> None:
        self._lock = threading.Lock()
        self._apply(BmParams(**options))

    def _apply(self, params: BmParams) -> None:
        matcher = cv2.StereoBM_create(numDisparities=params.num_disparities,
                                      blockSize=params.block_size)
        matcher.setMinDisparity(params.min_disparity)
        matcher.setPreFilterType(cv2.StereoBM_PREFILTER_XSOBEL)
        matcher.setPreFilterSize(params.pre_filter_size)
        matcher.setPreFilterCap(params.pre_filter_cap)
        matcher.setTextureThreshold(params.texture_threshold)
        matcher.setUniquenessRatio(params.uniqueness_ratio)
        matcher.setSpeckleWindowSize(params.speckle_window_size)
        matcher.setSpeckleRange(params.speckle_range)
        matcher.setDisp12MaxDiff(params.disp12_max_diff)
        with self._lock:
            self._state = (params, matcher)

    @property
    def params(self) -> BmParams:
        return self._state[0]

    @property
    def matcher(self) -> cv2.StereoBM:
        """The OpenCV matcher compute() runs (for reading its settings back)."""
        return self._state[1]

    @property
    def min_disparity(self) -> float:
        return float(self.params.min_disparity)

    @property
    def max_disparity(self) -> float:
        return float(self.params.min_disparity + self.params.num_disparities)

    @property
    def border(self) -> int:
        """Pixels lost at each image border to half the SAD window."""
        return self.params.block_size // 2

    def update(self, **changes: object) -> BmParams:
        """Change parameters while running; all or nothing (ValueError leaves it unchanged)."""
        known = set(asdict(self.params))
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown BM parameter(s) {', '.join(unknown)}; expected "
                             f"{', '.join(sorted(known))}")
        params = replace(self.params, **changes)
        self._apply(params)
        return params

    def describe(self) -> str:
        p = self.params
        return (f"bm (OpenCV {cv2.__version__} StereoBM): disparities [{self.min_disparity:g}, "
                f"{self.max_disparity:g}) px, window {p.block_size}, texture "
                f"{p.texture_threshold}, uniqueness {p.uniqueness_ratio} %")

    def check_input_size(self, width: int, height: int) -> None:
        """ValueError when the image is too small for the search range or the SAD window."""
        needed = int(self.max_disparity) + self.border
        if width <= needed or height < self.params.block_size:
            raise ValueError(
                f"the matcher input is {width}x{height} px, but block matching searches up to "
                f"{self.max_disparity:g} px (min_disparity + disparity_range) with a "
                f"{self.params.block_size} px window: it needs more than {needed} px in width "
                f"and at least {self.params.block_size} px in height; lower disparity_range / "
                "correlation_window_size or raise input_scale")

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        """Disparity of a rectified pair; see the class docstring."""
        with self._lock:
            params, matcher = self._state
        start = time.perf_counter()
        left, right = validate_pair(left, right)
        left, right = np.ascontiguousarray(to_mono(left)), np.ascontiguousarray(to_mono(right))
        prepared = time.perf_counter()
        raw = matcher.compute(left, right)
        matched = time.perf_counter()
        disparity = raw.astype(np.float32) * np.float32(1.0 / cv2.StereoMatcher_DISP_SCALE)
        disparity[raw < params.min_disparity * cv2.StereoMatcher_DISP_SCALE] = np.nan
        done = time.perf_counter()
        return DisparityResult(disparity=disparity, confidence=None,
                               timings_s={"preprocess": prepared - start,
                                          "infer": matched - prepared,
                                          "postprocess": done - matched})

    def __repr__(self) -> str:
        return f"BmBackend({self.params})"
