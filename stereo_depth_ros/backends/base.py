"""The interface every matching backend implements, and the input checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

PSMNET_DELTA_D_PX = 1.0 / 256.0
"""Disparity step reported in DisparityImage.delta_d by the PSMNet backends (psmnet, onnx): the
network regresses a continuous value, reported at KITTI's 1/256 px storage resolution."""


class InputSizeError(ValueError):
    """`check_input_size`: the backend is made for other image sizes (not merely too small)."""


@dataclass
class DisparityResult:
    """What a backend returns for one rectified pair.

    disparity: (H, W) float32, px at the input resolution (x_left - x_right), NaN where invalid.
    confidence: (H, W) float32 in [0, 1], or None when the backend has no confidence measure.
    uncertainty: (H, W) float32 sigma_d, px >= 0 (the standard deviation of the disparity
        estimate, at the input resolution), or None when the backend has none (SGBM).
    timings_s: seconds per stage, e.g. {"preprocess": .., "infer": .., "postprocess": ..}.
    """

    disparity: np.ndarray
    confidence: np.ndarray | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None


@runtime_checkable
class StereoBackend(Protocol):
    """A stereo matcher: `compute(left, right)` on a rectified pair.

    `min_disparity`/`max_disparity` give the searched range [min, max) in px at the input
    resolution; `delta_d` the smallest disparity step it reports (DisparityImage.delta_d).
    Each backend carries its own knowledge: `check_input_size` refuses sizes it cannot match
    (ValueError naming the limit), `update` applies live option changes (ValueError when an
    option cannot change while running), `describe` says what runs, for logs and reports.
    """

    name: str
    min_disparity: float
    max_disparity: float
    delta_d: float

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        ...

    def check_input_size(self, width: int, height: int) -> None:
        ...

    def update(self, **changes: object) -> object:
        ...

    def describe(self) -> str:
        ...


def validate_image(image: object, name: str) -> np.ndarray:
    """Check one input image: uint8, (H, W) or (H, W, 3), non-empty. Raise ValueError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} image must be uint8, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(f"{name} image must have 3 channels (RGB) or be 2-D mono, "
                         f"got shape {image.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"{name} image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} image is empty (shape {image.shape})")
    return image


def validate_pair(left: object, right: object) -> tuple[np.ndarray, np.ndarray]:
    """Check a stereo pair; both images must be valid and of the same size and channel count."""
    left_img = validate_image(left, "left")
    right_img = validate_image(right, "right")
    if left_img.shape != right_img.shape:
        raise ValueError(f"left and right images differ in size: left {left_img.shape}, "
                         f"right {right_img.shape}")
    return left_img, right_img


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 view or copy: mono is replicated to three channels."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image


def to_mono(image: np.ndarray) -> np.ndarray:
    """Return an (H, W) uint8 image (RGB converted with the ITU-R BT.601 luma weights)."""
    if image.ndim == 2:
        return image
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(image.astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)
