"""OpenCV semi-global block matching (StereoSGBM): the weight-free baseline backend.

Parameters (all in px unless noted; the OpenCV names are in brackets):
- min_disparity [minDisparity]: smallest disparity searched (may be negative).
- num_disparities [numDisparities]: size of the search range, a positive multiple of 16; the
  searched range is [min_disparity, min_disparity + num_disparities).
- block_size [blockSize]: odd matching window side, 1..51 (3..11 is typical).
- p1, p2 [P1, P2]: smoothness penalties for disparity steps of 1 px and of more than 1 px;
  None or 0 = OpenCV's suggested 8 * cn * block_size^2 and 32 * cn * block_size^2
  (cn = 1 grey or 3 colour channels). p2 must exceed p1.
- uniqueness_ratio [uniquenessRatio]: margin in % (0..100) by which the best cost must beat the
  second best.
- speckle_window_size [speckleWindowSize]: largest connected region (px count) removed as a
  speckle, 0 = off.
- speckle_range [speckleRange]: largest disparity variation in px inside one speckle region.
- disp12_max_diff [disp12MaxDiff]: left-right check tolerance in whole px, negative = off.
- pre_filter_cap [preFilterCap]: clipping of the x-derivative prefilter, 1..127 (OpenCV's pixel
  table overflows above 127).
- mode: "sgbm" (5 paths), "hh" (full 8 paths, more memory), "sgbm_3way", "hh4".
- grayscale: match on BT.601 luma (default) rather than on the three RGB channels.

Output: disparity = OpenCV's fixed-point value / 16 as float32; pixels OpenCV marks invalid
(value below min_disparity, including the unsearchable left band of width about
min_disparity + num_disparities) are NaN. No confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stereo_depth_ros.backends.base import to_mono
from stereo_depth_ros.backends.opencv_matcher import OpenCvMatcherBackend

SGBM_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}
BLOCK_SIZE_RANGE = (1, 51)
PRE_FILTER_CAP_RANGE = (1, 127)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        raise ValueError(f"SGBM {name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SgbmParams:
    """Validated SGBM parameters (see the module docstring for meanings and ranges)."""

    min_disparity: int = 0
    num_disparities: int = 128
    block_size: int = 5
    p1: int | None = None
    p2: int | None = None
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    disp12_max_diff: int = 1
    pre_filter_cap: int = 63
    mode: str = "sgbm"
    grayscale: bool = True

    def __post_init__(self) -> None:
        for name in ("min_disparity", "num_disparities", "block_size", "uniqueness_ratio",
                     "speckle_window_size", "speckle_range", "disp12_max_diff",
                     "pre_filter_cap"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        for name in ("p1", "p2"):
            value = getattr(self, name)
            value = None if value is None else _integer(name, value)
            if value is not None and value < 0:
                raise ValueError(f"SGBM {name} must be >= 0 (0 = default), got {value}")
            object.__setattr__(self, name, value or None)
        if self.num_disparities <= 0 or self.num_disparities % 16:
            raise ValueError("SGBM num_disparities must be a positive multiple of 16, got "
                             f"{self.num_disparities}")
        low, high = BLOCK_SIZE_RANGE
        if not low <= self.block_size <= high or self.block_size % 2 == 0:
            raise ValueError(f"SGBM block_size must be odd and in [{low}, {high}], got "
                             f"{self.block_size}")
        if not 0 <= self.uniqueness_ratio <= 100:
            raise ValueError("SGBM uniqueness_ratio must be in [0, 100] %, got "
                             f"{self.uniqueness_ratio}")
        for name in ("speckle_window_size", "speckle_range"):
            if getattr(self, name) < 0:
                raise ValueError(f"SGBM {name} must be >= 0, got {getattr(self, name)}")
        low, high = PRE_FILTER_CAP_RANGE
        if not low <= self.pre_filter_cap <= high:
            raise ValueError(f"SGBM pre_filter_cap must be in [{low}, {high}], got "
                             f"{self.pre_filter_cap}")
        if self.mode not in SGBM_MODES:
            raise ValueError(f"SGBM mode must be one of {', '.join(SGBM_MODES)}, got "
                             f"{self.mode!r}")
        if not isinstance(self.grayscale, (bool, np.bool_)):
            raise ValueError(f"SGBM grayscale must be a bool, got {self.grayscale!r}")
        p1, p2 = self.penalties()
        if p2 <= p1:
            raise ValueError(f"SGBM p2 ({p2}) must be greater than p1 ({p1})")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def penalties(self) -> tuple[int, int]:
        """(P1, P2) actually used, defaults filled in."""
        area = self.channels * self.block_size * self.block_size
        return (self.p1 if self.p1 else 8 * area), (self.p2 if self.p2 else 32 * area)


class SgbmBackend(OpenCvMatcherBackend):
    """StereoBackend around cv2.StereoSGBM; parameters as in SgbmParams, changeable live (see
    `opencv_matcher.OpenCvMatcherBackend`)."""

    name = "sgbm"
    label = "SGBM"

    def __init__(self, min_disparity: int = 0, num_disparities: int = 128, block_size: int = 5,
                 p1: int | None = None, p2: int | None = None, uniqueness_ratio: int = 10,
                 speckle_window_size: int = 100, speckle_range: int = 2,
                 disp12_max_diff: int = 1, pre_filter_cap: int = 63, mode: str = "sgbm",
                 grayscale: bool = True) -> None:
        super().__init__(SgbmParams(min_disparity, num_disparities, block_size, p1, p2,
                                    uniqueness_ratio, speckle_window_size, speckle_range,
                                    disp12_max_diff, pre_filter_cap, mode, grayscale))

    def _build(self, params: SgbmParams) -> cv2.StereoSGBM:
        p1, p2 = params.penalties()
        return cv2.StereoSGBM_create(
            minDisparity=params.min_disparity, numDisparities=params.num_disparities,
            blockSize=params.block_size, P1=p1, P2=p2, disp12MaxDiff=params.disp12_max_diff,
            preFilterCap=params.pre_filter_cap, uniquenessRatio=params.uniqueness_ratio,
            speckleWindowSize=params.speckle_window_size, speckleRange=params.speckle_range,
            mode=SGBM_MODES[params.mode])

    def _prepare(self, params: SgbmParams, left: np.ndarray, right: np.ndarray):
        if params.grayscale:
            return to_mono(left), to_mono(right)
        if left.ndim == 2:
            return tuple(np.repeat(image[:, :, None], 3, axis=2) for image in (left, right))
        return left, right

    def describe(self) -> str:
        """One line for start-up logs and reports."""
        p = self.params
        return (f"sgbm (OpenCV {cv2.__version__}): disparities [{self.min_disparity:g}, "
                f"{self.max_disparity:g}) px, block {p.block_size}, mode {p.mode}")

    def check_input_size(self, width: int, height: int) -> None:
        """ValueError when the image is too narrow for the search range plus half a block."""
        needed = int(self.max_disparity) + self.params.block_size // 2
        if width <= needed:
            raise ValueError(
                f"the matcher input is {width} px wide, but SGBM searches up to "
                f"{self.max_disparity:g} px (sgbm.min_disparity + sgbm.num_disparities) plus "
                f"half a block: it needs more than {needed} px; lower sgbm.num_disparities or "
                "raise input_scale")
