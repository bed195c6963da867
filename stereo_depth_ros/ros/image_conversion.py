"""sensor_msgs/Image <-> numpy.

`image_to_numpy` checks the message (supported encoding, sizes, `step`, length of `data`) and then
uses cv_bridge when it is importable, else the package's own path: a zero-copy, read-only strided
view of `msg.data` that honours row padding (`step > width * bytes_per_pixel`) and `is_bigendian`.
Both paths return the same array (the cv_bridge one is a thin adapter: the checks run first).

`numpy_to_image` builds a message from an array with a dense `step`.
"""

from __future__ import annotations

import array
from typing import NamedTuple

import numpy as np
from sensor_msgs.msg import Image

from stereo_depth_ros.backends.base import to_mono


class EncodingInfo(NamedTuple):
    dtype: np.dtype
    channels: int


ENCODINGS: dict[str, EncodingInfo] = {
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}
_ALIASES = {"8UC1": "mono8", "16UC1": "mono16", "8UC3": "bgr8", "8UC4": "bgra8"}


class ImageConversionError(ValueError):
    """A message that cannot be turned into an array; `field` names the offending field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedEncodingError(ImageConversionError):
    """The message's encoding is not one of ENCODINGS."""


class ImageDataError(ImageConversionError):
    """Size, step or data length inconsistent."""


def encoding_info(encoding: str) -> EncodingInfo:
    """dtype and channel count of a supported encoding; UnsupportedEncodingError otherwise."""
    name = _ALIASES.get(encoding, encoding)
    try:
        return ENCODINGS[name]
    except KeyError:
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)})",
            "encoding") from None


def check_image_message(msg: Image) -> EncodingInfo:
    """Validate an Image message's encoding and layout; raise an ImageConversionError subclass."""
    info = encoding_info(msg.encoding)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise ImageDataError(f"empty image: width={width}, height={height}", "width/height")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ImageDataError(f"step={step} is smaller than width*bytes_per_pixel="
                             f"{width}*{info.channels * info.dtype.itemsize}={row_bytes}", "step")
    needed = step * height
    if len(msg.data) < needed:
        raise ImageDataError(f"data has {len(msg.data)} bytes, shorter than step*height="
                             f"{step}*{height}={needed}", "data")
    return info


def _native_image_to_numpy(msg: Image, info: EncodingInfo) -> np.ndarray:
    """Zero-copy read-only view of msg.data (row padding skipped via strides)."""
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    buffer = msg.data if isinstance(msg.data, (bytes, bytearray, memoryview, array.array)) \
        else bytes(msg.data)
    shape = (int(msg.height), int(msg.width)) + ((info.channels,) if info.channels > 1 else ())
    strides = (int(msg.step), info.channels * dtype.itemsize) + \
        ((dtype.itemsize,) if info.channels > 1 else ())
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buffer, offset=0, strides=strides)
    if not dtype.isnative:
        view = view.astype(dtype.newbyteorder("="))
    view.flags.writeable = False
    return view


class _CvBridgeAdapter:
    """Adapter over cv_bridge.CvBridge (only used when cv_bridge imports)."""

    def __init__(self, bridge_module) -> None:
        self._bridge = bridge_module.CvBridge()

    def __call__(self, msg: Image, info: EncodingInfo) -> np.ndarray:
        result = np.asarray(self._bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
        return result.astype(result.dtype.newbyteorder("="), copy=False)


def _load_cv_bridge():
    try:
        import cv_bridge  # noqa: PLC0415  (optional dependency)
        return _CvBridgeAdapter(cv_bridge)
    except Exception:  # noqa: BLE001  (ImportError, or the ROS 1 PyPI package breaking on NumPy 2)
        return None


_BRIDGE = _load_cv_bridge()


def conversion_backend() -> str:
    """'cv_bridge' or 'numpy' (the in-package path)."""
    return "cv_bridge" if _BRIDGE is not None else "numpy"


def image_to_numpy(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """Array of an Image message: (H, W) or (H, W, C) in the message's encoding and channel order.

    mono8/bgr8/rgb8/bgra8/rgba8 -> uint8, mono16 -> uint16, 32FC1 -> float32. The array may be a
    read-only view of msg.data; copy it before writing. Raises UnsupportedEncodingError or
    ImageDataError (both ValueError) naming the field.
    """
    info = check_image_message(msg)
    bridge = _BRIDGE if use_cv_bridge is None or use_cv_bridge else None
    if use_cv_bridge and bridge is None:
        raise RuntimeError("cv_bridge is not importable")
    if bridge is not None:
        return bridge(msg, info)
    return _native_image_to_numpy(msg, info)


def numpy_to_image(image: np.ndarray, encoding: str, header=None) -> Image:
    """Image message of an array; step = width * bytes_per_pixel, little-endian data."""
    info = encoding_info(encoding)
    array_in = np.asarray(image)
    expected_ndim = 2 if info.channels == 1 else 3
    if array_in.ndim == 3 and info.channels == 1 and array_in.shape[2] == 1:
        array_in = array_in[:, :, 0]
    if array_in.ndim != expected_ndim or (
            info.channels > 1 and array_in.shape[2] != info.channels):
        raise ValueError(f"array of shape {array_in.shape} does not fit encoding {encoding!r} "
                         f"({info.channels} channel(s))")
    if array_in.dtype != info.dtype:
        raise ValueError(f"array dtype {array_in.dtype} does not fit encoding {encoding!r} "
                         f"(needs {info.dtype})")
    data = np.ascontiguousarray(array_in, dtype=info.dtype.newbyteorder("<"))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.shape[1] * info.channels * info.dtype.itemsize)
    msg.data = array.array("B", data.tobytes())
    return msg


def to_matcher_input(image: np.ndarray, encoding: str, scale16: float | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3) or mono (H, W) as the backends take it (architecture: Images).

    bgr8/bgra8/rgba8 are reordered/stripped; mono16 is scaled by `scale16` (255 / the pair's max
    by default, so both images of a pair must pass the same value).
    """
    name = _ALIASES.get(encoding, encoding)
    if name == "mono8":
        return image
    if name == "rgb8":
        return image
    if name == "bgr8":
        return image[:, :, ::-1]
    if name == "rgba8":
        return image[:, :, :3]
    if name == "bgra8":
        return image[:, :, 2::-1]
    if name == "mono16":
        if scale16 is None:
            peak = int(image.max()) if image.size else 0
            scale16 = 255.0 / peak if peak else 1.0
        return np.clip(image.astype(np.float32) * scale16 + 0.5, 0, 255).astype(np.uint8)
    raise UnsupportedEncodingError(f"encoding {encoding!r} cannot be used as a stereo input "
                                   "image (use mono8, mono16, bgr8, rgb8, bgra8 or rgba8)",
                                   "encoding")


def pair_to_matcher_input(left: np.ndarray, left_encoding: str, right: np.ndarray,
                          right_encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair in backend form with the same channel count (mono if either is)."""
    scale16 = None
    if "mono16" in (_ALIASES.get(left_encoding, left_encoding),
                    _ALIASES.get(right_encoding, right_encoding)):
        peak = max(int(left.max()) if left.size else 0, int(right.max()) if right.size else 0)
        scale16 = 255.0 / peak if peak else 1.0
    left_in = to_matcher_input(left, left_encoding, scale16)
    right_in = to_matcher_input(right, right_encoding, scale16)
    if left_in.ndim != right_in.ndim:
        left_in, right_in = to_mono(left_in), to_mono(right_in)
    return np.ascontiguousarray(left_in), np.ascontiguousarray(right_in)
