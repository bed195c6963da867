"""Reading stereo images from disk into the backends' input format: (H, W, 3) uint8 RGB.

The file's content decides the format, not its extension (DrivingStereo's ``.jpg`` files are RGBA
PNGs). Grey images are replicated to three channels, alpha is dropped, 16-bit images are scaled
to 8 bits (value / 257).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; ValueError if missing or not an image."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (empty, truncated or unknown format)")
    return to_rgb8(image, bgr=True, name=str(path))


def to_rgb8(image: np.ndarray, bgr: bool = False, name: str = "image") -> np.ndarray:
    """Convert (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16/float to (H, W, 3) uint8 RGB.

    bgr: the colour channels are in OpenCV's BGR(A) order. Floats are taken as [0, 1] when their
    maximum is <= 1, else as [0, 255].
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"{name}: unsupported image shape {image.shape}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype.kind == "f":
        finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        image = np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)
