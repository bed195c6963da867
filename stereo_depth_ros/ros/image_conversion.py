"""sensor_msgs/Image and CompressedImage <-> numpy (the decoding rules live in
`core.image_encodings`; this module only reads the messages' fields).

`image_to_numpy` checks the message (known encoding, sizes, `step`, length of `data`) and then
uses cv_bridge when it is importable and reads the layout as the package does (native byte order,
row padding a whole number of pixels), else the package's own path: a zero-copy, read-only strided
view of `msg.data` that honours any row padding and `is_bigendian`. `compressed_to_numpy` decodes
image_transport's "compressed" payloads. `numpy_to_image` builds a message with a dense `step`.
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import Image

from stereo_depth_ros.core.image_encodings import (  # noqa: F401  (re-exported)
    ENCODINGS, CompressedDataError, EncodingInfo, ImageConversionError, ImageDataError,
    UnsupportedEncodingError, canonical, check_layout, decode_compressed, decode_raw, layout,
    pair_to_matcher_input, to_matcher_input)


def encoding_info(encoding: str) -> EncodingInfo:
    """dtype and channel count of a known encoding; UnsupportedEncodingError otherwise."""
    return layout(encoding)


def check_image_message(msg: Image) -> EncodingInfo:
    """Validate an Image message's encoding and layout; raise an ImageConversionError subclass."""
    return check_layout(msg.encoding, int(msg.width), int(msg.height), int(msg.step),
                        len(msg.data))


class _CvBridgeAdapter:
    """Adapter over cv_bridge.CvBridge (only used when cv_bridge imports)."""

    def __init__(self, bridge_module) -> None:
        self._bridge = bridge_module.CvBridge()

    def __call__(self, msg: Image) -> np.ndarray:
        result = np.asarray(self._bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
        return result.astype(result.dtype.newbyteorder("="), copy=False)


def _load_cv_bridge():
    try:
        import cv_bridge  # noqa: PLC0415  (optional dependency)
        return _CvBridgeAdapter(cv_bridge)
    except Exception:  # noqa: BLE001  (ImportError, or the ROS 1 PyPI package breaking on NumPy 2)
        return None


_BRIDGE = _load_cv_bridge()
_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def conversion_backend() -> str:
    """'cv_bridge' or 'numpy' (the in-package path)."""
    return "cv_bridge" if _BRIDGE is not None else "numpy"


def cv_bridge_reads_it(msg: Image, info: EncodingInfo) -> bool:
    """Whether cv_bridge reads this message as the package does: multi-byte data in the
    machine's byte order and rows padded by a whole number of pixels (cv_bridge builds a cv::Mat
    on the buffer; other layouts it misreads or refuses)."""
    pixel_bytes = info.channels * info.dtype.itemsize
    byte_order_ok = info.dtype.itemsize == 1 or bool(msg.is_bigendian) == _NATIVE_BIG_ENDIAN
    return byte_order_ok and int(msg.step) % pixel_bytes == 0


def image_to_numpy(msg: Image, use_cv_bridge: bool | None = None) -> np.ndarray:
    """Array of an Image message in its encoding's layout (core.image_encodings.decode_raw):
    (H, W) or (H, W, C) uint8/uint16/float32, YUV422 (H, W, 2). May be a read-only view of
    msg.data; copy before writing. Raises UnsupportedEncodingError or ImageDataError (both
    ValueError) naming the field. use_cv_bridge: None = when importable and it reads the layout
    right, True = always (RuntimeError without cv_bridge), False = never.
    """
    info = check_image_message(msg)
    if use_cv_bridge and _BRIDGE is None:
        raise RuntimeError("cv_bridge is not importable")
    if _BRIDGE is not None and use_cv_bridge is not False and (
            use_cv_bridge or cv_bridge_reads_it(msg, info)):
        return _BRIDGE(msg)
    return decode_raw(msg.encoding, int(msg.width), int(msg.height), int(msg.step),
                      bool(msg.is_bigendian), msg.data)


def compressed_to_numpy(msg) -> tuple[np.ndarray, str]:
    """A sensor_msgs/CompressedImage -> (array, its encoding); CompressedDataError for corrupt
    data, UnsupportedEncodingError for a format that is not JPEG/PNG (e.g. compressedDepth)."""
    return decode_compressed(msg.format, msg.data)


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
