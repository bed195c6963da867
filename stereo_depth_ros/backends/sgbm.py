"""OpenCV semi-global block matching (StereoSGBM): the weight-free baseline backend.

Options (px unless noted; the OpenCV names in brackets). Their defaults, ranges and steps are
the node's `sgbm.<option>` parameters' (`config.PARAMS`), written once there:
- min_disparity [minDisparity]: smallest disparity searched (may be negative).
- num_disparities [numDisparities]: size of the search range, a multiple of 16; the searched
  range is [min_disparity, min_disparity + num_disparities).
- block_size [blockSize]: odd matching window side (3..11 is typical).
- p1, p2 [P1, P2]: smoothness penalties for disparity steps of 1 px and of more than 1 px;
  None or 0 = OpenCV's suggestion (`config.sgbm_penalties`). p2 must exceed p1.
- uniqueness_ratio [uniquenessRatio]: margin in % by which the best cost must beat the second
  best.
- speckle_window_size [speckleWindowSize]: largest connected region (px count) removed as a
  speckle, 0 = off.
- speckle_range [speckleRange]: largest disparity variation in px inside one speckle region.
- disp12_max_diff [disp12MaxDiff]: left-right check tolerance in whole px, negative = off.
- pre_filter_cap [preFilterCap]: clipping of the x-derivative prefilter (OpenCV's pixel table
  overflows above 127).
- mode: "sgbm" (5 paths), "hh" (full 8 paths, more memory), "sgbm_3way", "hh4".
- grayscale: match on BT.601 luma (default) rather than on the three RGB channels.

Output: disparity = OpenCV's fixed-point value / 16 as float32; pixels OpenCV marks invalid
(value below min_disparity, including the unsearchable left band of width about
min_disparity + num_disparities) are NaN. No confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from stereo_depth_ros.backends.base import to_mono, to_rgb
from stereo_depth_ros.backends.opencv_matcher import OpenCvMatcherBackend, plain_value
from stereo_depth_ros.config import SGBM_PREFIX, SPECS, ParamSpec, sgbm_penalties

CV2_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}
"""config.SGBM_MODES' names -> OpenCV's StereoSGBM modes."""


def _spec(option: str) -> ParamSpec:
    """The node parameter `sgbm.<option>`: the option's default, type, range and help."""
    return SPECS[SGBM_PREFIX + option]


@dataclass(frozen=True)
class SgbmParams:
    """Validated SGBM options (see the module docstring); each is checked against its
    `sgbm.<option>` parameter spec, so a bad value raises ValueError naming the parameter, the
    value and the allowed range."""

    min_disparity: int = _spec("min_disparity").default
    num_disparities: int = _spec("num_disparities").default
    block_size: int = _spec("block_size").default
    p1: int | None = _spec("p1").default or None
    p2: int | None = _spec("p2").default or None
    uniqueness_ratio: int = _spec("uniqueness_ratio").default
    speckle_window_size: int = _spec("speckle_window_size").default
    speckle_range: int = _spec("speckle_range").default
    disp12_max_diff: int = _spec("disp12_max_diff").default
    pre_filter_cap: int = _spec("pre_filter_cap").default
    mode: str = _spec("mode").default
    grayscale: bool = _spec("grayscale").default

    def __post_init__(self) -> None:
        for option in fields(self):
            value = getattr(self, option.name)
            if option.name in ("p1", "p2"):          # None and 0 both mean OpenCV's suggestion
                value = 0 if value is None else value
            value = _spec(option.name).check(plain_value(value))
            if option.name in ("p1", "p2"):
                value = value or None
            object.__setattr__(self, option.name, value)
        self.penalties()

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def penalties(self) -> tuple[int, int]:
        """(P1, P2) actually used, defaults filled in (`config.sgbm_penalties`)."""
        return sgbm_penalties(self.p1, self.p2, self.block_size, self.channels)


class SgbmBackend(OpenCvMatcherBackend):
    """StereoBackend around cv2.StereoSGBM; parameters as in SgbmParams, changeable live (see
    `opencv_matcher.OpenCvMatcherBackend`)."""

    name = "sgbm"
    label = "SGBM"

    def __init__(self, **options: object) -> None:
        super().__init__(SgbmParams(**options))

    def _build(self, params: SgbmParams) -> cv2.StereoSGBM:
        p1, p2 = params.penalties()
        return cv2.StereoSGBM_create(
            minDisparity=params.min_disparity, numDisparities=params.num_disparities,
            blockSize=params.block_size, P1=p1, P2=p2, disp12MaxDiff=params.disp12_max_diff,
            preFilterCap=params.pre_filter_cap, uniquenessRatio=params.uniqueness_ratio,
            speckleWindowSize=params.speckle_window_size, speckleRange=params.speckle_range,
            mode=CV2_MODES[params.mode])

    def _prepare(self, params: SgbmParams, left: np.ndarray, right: np.ndarray):
        if params.grayscale:
            return to_mono(left), to_mono(right)
        return to_rgb(left), to_rgb(right)

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
