"""Disparity file formats: PFM, KITTI uint16 PNG, .npy; and a colour map for viewing.

Conventions: disparity arrays are (H, W) float32 in px with NaN for invalid pixels. KITTI PNGs
store round(d * 256) as uint16 with 0 meaning invalid. PFM stores rows bottom-to-top (the format's
rule), and invalid pixels as +inf (what Middlebury and ETH3D ground truth use).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

KITTI_SCALE = 256.0


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a 1-channel PFM file as (H, W) float32, top row first; inf/NaN stay as they are."""
    path = Path(path)
    with path.open("rb") as handle:
        header = handle.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise ValueError(f"{path}: not a PFM file (header {header[:8]!r})")
        dims = handle.readline()
        while dims.startswith(b"#"):
            dims = handle.readline()
        match = re.match(rb"^\s*(\d+)\s+(\d+)\s*$", dims)
        if not match:
            raise ValueError(f"{path}: malformed PFM size line {dims[:40]!r}")
        width, height = int(match.group(1)), int(match.group(2))
        try:
            scale = float(handle.readline().strip())
        except ValueError:
            raise ValueError(f"{path}: malformed PFM scale line") from None
        channels = 3 if header == b"PF" else 1
        dtype = "<f4" if scale < 0 else ">f4"
        data = np.frombuffer(handle.read(), dtype=dtype)
    expected = width * height * channels
    if data.size < expected:
        raise ValueError(f"{path}: PFM truncated: {data.size} values, expected {expected}")
    image = data[:expected].reshape(height, width, channels) if channels == 3 else \
        data[:expected].reshape(height, width)
    if channels == 3:
        image = image[:, :, 0]
    return np.ascontiguousarray(np.flipud(image)).astype(np.float32)


def write_pfm(path: str | Path, disparity: np.ndarray) -> None:
    """Write (H, W) float32 as a 1-channel little-endian PFM; NaN is written as +inf."""
    array = np.asarray(disparity, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"write_pfm expects a 2-D array, got shape {array.shape}")
    array = np.where(np.isnan(array), np.float32(np.inf), array)
    height, width = array.shape
    with Path(path).open("wb") as handle:
        handle.write(b"Pf\n%d %d\n-1.0\n" % (width, height))
        handle.write(np.flipud(array).astype("<f4").tobytes())


def read_kitti_png(path: str | Path) -> np.ndarray:
    """Read a KITTI uint16 disparity PNG as (H, W) float32 px, NaN where the file holds 0."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: cannot read as an image")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: KITTI disparity must be 1-channel uint16, got {raw.dtype} "
                         f"shape {raw.shape}")
    disparity = raw.astype(np.float32) / KITTI_SCALE
    disparity[raw == 0] = np.nan
    return disparity


def write_kitti_png(path: str | Path, disparity: np.ndarray) -> None:
    """Write (H, W) disparity px as KITTI uint16 PNG (value * 256; NaN, <= 0 -> 0 invalid)."""
    array = np.asarray(disparity, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"write_kitti_png expects a 2-D array, got shape {array.shape}")
    valid = np.isfinite(array) & (array > 0)
    encoded = np.zeros(array.shape, dtype=np.uint16)
    encoded[valid] = np.clip(np.round(array[valid] * KITTI_SCALE), 1, 65535).astype(np.uint16)
    if not cv2.imwrite(str(path), encoded):
        raise ValueError(f"{path}: could not write PNG")


def read_disparity(path: str | Path) -> np.ndarray:
    """Read .pfm, .png (KITTI) or .npy disparity into (H, W) float32 px with NaN invalid."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pfm":
        disparity = read_pfm(path)
        disparity[~np.isfinite(disparity)] = np.nan
        return disparity
    if suffix == ".png":
        return read_kitti_png(path)
    if suffix == ".npy":
        return np.load(path).astype(np.float32)
    raise ValueError(f"{path}: unsupported disparity format {suffix!r} (use .npy, .pfm or .png)")


def write_disparity(path: str | Path, disparity: np.ndarray) -> None:
    """Write disparity by extension: .npy (float32, NaN invalid), .pfm, .png (KITTI uint16)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        np.save(path, np.asarray(disparity, dtype=np.float32))
    elif suffix == ".pfm":
        write_pfm(path, disparity)
    elif suffix == ".png":
        write_kitti_png(path, disparity)
    else:
        raise ValueError(f"{path}: unsupported output format {suffix!r} (use .npy, .pfm or .png)")


def colorize(values: np.ndarray, vmin: float | None = None, vmax: float | None = None,
             colormap: int = cv2.COLORMAP_TURBO) -> np.ndarray:
    """Map a float image to (H, W, 3) uint8 BGR with a colour map; invalid (NaN/inf) pixels black.

    vmin/vmax default to the finite range of the data.
    """
    array = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(array)
    if vmin is None:
        vmin = float(array[finite].min()) if finite.any() else 0.0
    if vmax is None:
        vmax = float(array[finite].max()) if finite.any() else 1.0
    span = max(vmax - vmin, 1e-6)
    scaled = np.zeros(array.shape, dtype=np.uint8)
    scaled[finite] = np.clip((array[finite] - vmin) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = cv2.applyColorMap(scaled, colormap)
    colored[~finite] = 0
    return colored
