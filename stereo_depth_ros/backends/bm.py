"""OpenCV block matching (StereoBM): stereo_image_proc's `stereo_algorithm: 0`.

Matches on luma (BT.601) with a sum-of-absolute-differences window, as stereo_image_proc's
DisparityNode does. Options (px unless noted; OpenCV names in brackets), each checked against
the node parameter that sets it (`config.BM_PARAMETERS`: sgbm.* for those block matching shares
with SGBM, prefilter_size and texture_threshold), plus StereoBM's own window and cap limits;
the defaults are stereo_image_proc's (`config.SIP_ALIASES`, and PARAMS for its names kept here):
- min_disparity [minDisparity]: smallest disparity searched (may be negative).
- num_disparities [numDisparities]: size of the search range, a multiple of 16; the searched
  range is [min_disparity, min_disparity + num_disparities).
- block_size [blockSize]: odd SAD window side, in StereoBM's WINDOW_RANGE (and not larger than
  the image).
- pre_filter_size [preFilterSize]: odd normalisation window, in WINDOW_RANGE.
- pre_filter_cap [preFilterCap]: bound on the normalised pixel values, in PRE_FILTER_CAP_RANGE.
- texture_threshold [textureThreshold]: a window whose texture (sum of |x-derivative|) does not
  exceed this is invalid; 0 = keep all.
- uniqueness_ratio [uniquenessRatio]: margin in % by which the best SAD must beat the next best.
- speckle_window_size [speckleWindowSize], speckle_range [speckleRange]: speckle filter, as in
  SGBM (0 = off).
- disp12_max_diff [disp12MaxDiff]: left-right check tolerance in whole px, negative = off
  (default -1: stereo_image_proc's disp12_max_diff is SGBM-only and leaves StereoBM's -1).

Output: disparity = OpenCV's fixed-point value / 16 as float32, NaN where OpenCV marks a pixel
invalid (below min_disparity: the unsearchable left band, low texture, not unique, speckles).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from stereo_depth_ros.backends.base import to_mono
from stereo_depth_ros.backends.opencv_matcher import OpenCvMatcherBackend, plain_value
from stereo_depth_ros.config import BM_PARAMETERS, SIP_ALIASES, SPECS, ParamSpec

_PARAMETER = {option: name for name, option in BM_PARAMETERS.items()}
"""BM option -> the node parameter that sets it."""
_SIP_DEFAULTS = {BM_PARAMETERS[alias.target]: alias.spec.type(alias.spec.default)
                 for alias in SIP_ALIASES if alias.target in BM_PARAMETERS}
"""BM option -> stereo_image_proc's default for it (its DisparityNode parameter's)."""
WINDOW_RANGE = (int(SPECS["prefilter_size"].min_value), int(SPECS["prefilter_size"].max_value))
"""StereoBM's odd window sides, SAD and pre-filter alike (the prefilter_size parameter's range)."""
PRE_FILTER_CAP_RANGE = (1, 63)
"""StereoBM's preFilterCap limits (SGBM's go to 127: sgbm.pre_filter_cap's range)."""


def _spec(option: str) -> ParamSpec:
    return SPECS[_PARAMETER[option]]


def _default(option: str) -> int:
    if option == "disp12_max_diff":
        return -1                       # StereoBM's own: stereo_image_proc does not set it
    return int(_SIP_DEFAULTS.get(option, _spec(option).default))


@dataclass(frozen=True)
class BmParams:
    """Validated StereoBM options (see the module docstring for meanings, defaults and ranges);
    a bad value raises ValueError naming the option or parameter, the value and the limits."""

    min_disparity: int = _default("min_disparity")
    num_disparities: int = _default("num_disparities")
    block_size: int = _default("block_size")
    pre_filter_size: int = _default("pre_filter_size")
    pre_filter_cap: int = _default("pre_filter_cap")
    texture_threshold: int = _default("texture_threshold")
    uniqueness_ratio: int = _default("uniqueness_ratio")
    speckle_window_size: int = _default("speckle_window_size")
    speckle_range: int = _default("speckle_range")
    disp12_max_diff: int = _default("disp12_max_diff")

    def __post_init__(self) -> None:
        for option in fields(self):
            value = plain_value(getattr(self, option.name))
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"BM {option.name} must be an integer, got {value!r}")
            if option.name not in ("block_size", "pre_filter_cap"):   # StereoBM's own limits
                try:
                    _spec(option.name).check(value)
                except ValueError as error:
                    raise ValueError(f"BM {option.name}: {error}") from None
            object.__setattr__(self, option.name, value)
        low, high = WINDOW_RANGE
        if not low <= self.block_size <= high or self.block_size % 2 == 0:
            raise ValueError(f"BM block_size must be odd and in [{low}, {high}], got "
                             f"{self.block_size}")
        low, high = PRE_FILTER_CAP_RANGE
        if not low <= self.pre_filter_cap <= high:
            raise ValueError(f"BM pre_filter_cap must be in [{low}, {high}], got "
                             f"{self.pre_filter_cap}")


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
