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

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from stereo_depth_ros.backends.base import to_mono
from stereo_depth_ros.backends.opencv_matcher import OpenCvMatcherBackend

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


class BmBackend(OpenCvMatcherBackend):
    """StereoBackend around cv2.StereoBM; parameters as in BmParams, changeable live (see
    `opencv_matcher.OpenCvMatcherBackend`)."""

    name = "bm"
    label = "BM"

    def __init__(self, **options: int) -> None:
        super().__init__(BmParams(**options))

    def _build(self, params: BmParams) -> cv2.StereoBM:
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
        return matcher

    def _prepare(self, params: BmParams, left: np.ndarray, right: np.ndarray):
        return to_mono(left), to_mono(right)           # StereoBM matches one channel

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
