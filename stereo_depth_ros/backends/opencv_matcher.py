"""What OpenCV's two stereo matchers (StereoSGBM, StereoBM) share as backends.

A subclass names its parameter dataclass (frozen, validating, with `min_disparity`,
`num_disparities` and `block_size`), builds the cv2 matcher in `_build` and prepares the pair in
`_prepare`; live changes, the searched range, the border, the fixed-point conversion and the
invalid marking are written once here. Thread-safe: `update` swaps (params, matcher) under a
lock, and a compute() in flight finishes with the old matcher.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, replace

import cv2
import numpy as np

from stereo_depth_ros.backends.base import DisparityResult, validate_pair


def plain_value(value: object) -> object:
    """numpy scalars as Python's, and integral floats as int, so that an option's
    `config.ParamSpec.check` sees the types the node's parameters have."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value


class OpenCvMatcherBackend:
    """Base of SgbmBackend and BmBackend: compute() takes a rectified uint8 pair, (H, W, 3) RGB
    or (H, W) mono, and returns DisparityResult(disparity (H, W) float32 px, NaN invalid,
    confidence None, timings_s)."""

    name = ""
    label = ""                       # "SGBM", "BM": how error messages name the matcher
    delta_d = 1.0 / cv2.StereoMatcher_DISP_SCALE
    """Disparity step: OpenCV's fixed-point output is in 1/16 px."""

    def __init__(self, params) -> None:
        self._lock = threading.Lock()
        self._apply(params)

    def _build(self, params):
        """The cv2 matcher for `params` (subclasses)."""
        raise NotImplementedError

    def _prepare(self, params, left: np.ndarray, right: np.ndarray):
        """The pair as the cv2 matcher takes it (subclasses)."""
        raise NotImplementedError

    def _apply(self, params) -> None:
        matcher = self._build(params)
        with self._lock:
            self._state = (params, matcher)

    @property
    def params(self):
        return self._state[0]

    @property
    def matcher(self):
        """The OpenCV matcher compute() runs (for reading its settings back; rebuilt by update)."""
        return self._state[1]

    @property
    def min_disparity(self) -> float:
        return float(self.params.min_disparity)

    @property
    def max_disparity(self) -> float:
        return float(self.params.min_disparity + self.params.num_disparities)

    @property
    def border(self) -> int:
        """Pixels lost at each image border to half the matching window."""
        return self.params.block_size // 2

    def update(self, **changes: object):
        """Change parameters while running (e.g. block_size=7); all or nothing: unknown names or
        invalid values raise ValueError and leave the backend unchanged."""
        known = set(asdict(self.params))
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown {self.label} parameter(s) {', '.join(unknown)}; expected "
                             f"{', '.join(sorted(known))}")
        params = replace(self.params, **changes)
        self._apply(params)
        return params

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        """Disparity of a rectified pair; see the class docstring."""
        with self._lock:
            params, matcher = self._state
        start = time.perf_counter()
        left, right = validate_pair(left, right)
        left, right = (np.ascontiguousarray(image)
                       for image in self._prepare(params, left, right))
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
        return f"{type(self).__name__}({self.params})"
