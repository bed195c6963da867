"""Camera image encodings -> the matcher's input, without ROS (sensor_msgs/image_encodings and
cv_bridge's conversions, written for numpy/cv2).

Two steps:
- `decode_raw(encoding, width, height, step, is_bigendian, data)`: the bytes of an Image message
  as an array in the encoding's own layout (row padding skipped, big-endian honoured): (H, W) or
  (H, W, C) uint8/uint16/float32; YUV422 as (H, W, 2) uint8; Bayer as the (H, W) mosaic.
- `to_matcher_input(image, encoding)`: uint8 RGB (H, W, 3) or mono (H, W), as the backends take
  it: colour reordered and alpha dropped, Bayer debayered (OpenCV's names are shifted by one row
  and column against ROS's, as in cv_bridge), YUV422 in both byte orders (`yuv422` = UYVY,
  `yuv422_yuy2` = YUYV), 16-bit scaled by 255/65535 as cv_bridge's convertTo does.
`decode_compressed(format, data)` reads image_transport's "compressed" JPEG/PNG payloads.
Every problem raises an ImageConversionError naming the field and the value.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


class EncodingInfo(NamedTuple):
    """Byte layout of an encoding: element dtype and channels per pixel."""

    dtype: np.dtype
    channels: int


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")
ENCODINGS: dict[str, EncodingInfo] = {
    "mono8": EncodingInfo(_U8, 1), "mono16": EncodingInfo(_U16, 1),
    "bgr8": EncodingInfo(_U8, 3), "rgb8": EncodingInfo(_U8, 3),
    "bgra8": EncodingInfo(_U8, 4), "rgba8": EncodingInfo(_U8, 4),
    "bgr16": EncodingInfo(_U16, 3), "rgb16": EncodingInfo(_U16, 3),
    "bgra16": EncodingInfo(_U16, 4), "rgba16": EncodingInfo(_U16, 4),
    "yuv422": EncodingInfo(_U8, 2), "yuv422_yuy2": EncodingInfo(_U8, 2),
    "32FC1": EncodingInfo(_F32, 1),
    **{f"bayer_{p}8": EncodingInfo(_U8, 1) for p in BAYER_PATTERNS},
    **{f"bayer_{p}16": EncodingInfo(_U16, 1) for p in BAYER_PATTERNS},
}
ALIASES = {"8UC1": "mono8", "16UC1": "mono16", "8UC3": "bgr8", "8UC4": "bgra8",
           "16UC3": "bgr16", "16UC4": "bgra16"}
NOT_STEREO_INPUTS = ("32FC1",)
"""Encodings an Image may carry but a stereo camera does not (depth)."""

# ROS names the 2x2 Bayer block from the first row and column, OpenCV from the second: the
# codes are shifted (cv_bridge does the same).
_BAYER_TO_RGB = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                 "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
_YUV_TO_RGB = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2}
_SCALE_16_TO_8 = 255.0 / 65535.0


class ImageConversionError(ValueError):
    """An image that cannot be turned into an array; `field` names the offending field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedEncodingError(ImageConversionError):
    """The encoding is not one of ENCODINGS, or not usable as a stereo input."""


class ImageDataError(ImageConversionError):
    """Size, step or data length inconsistent."""


class CompressedDataError(ImageConversionError):
    """A compressed payload that does not decode (corrupt, truncated, wrong format)."""


def canonical(encoding: str) -> str:
    """The encoding's canonical name (aliases such as 8UC3 resolved)."""
    return ALIASES.get(encoding, encoding)


def layout(encoding: str) -> EncodingInfo:
    """dtype and channel count of a known encoding; UnsupportedEncodingError otherwise."""
    try:
        return ENCODINGS[canonical(encoding)]
    except KeyError:
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)} and the "
            f"aliases {', '.join(ALIASES)})", "encoding") from None


def _check_yuv422_width(encoding: str, width: int) -> None:
    if canonical(encoding) in _YUV_TO_RGB and width % 2:
        raise ImageDataError(f"{encoding} packs two pixels in 4 bytes: width={width} must be "
                             "even", "width")


def check_layout(encoding: str, width: int, height: int, step: int, nbytes: int
                 ) -> EncodingInfo:
    """Validate an image's size, step and data length for its encoding."""
    info = layout(encoding)
    if width <= 0 or height <= 0:
        raise ImageDataError(f"empty image: width={width}, height={height}", "width/height")
    pixel_bytes = info.channels * info.dtype.itemsize
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDataError(f"step={step} is smaller than width*bytes_per_pixel="
                             f"{width}*{pixel_bytes}={row_bytes}", "step")
    _check_yuv422_width(encoding, width)
    needed = step * height                          # sensor_msgs/Image: size is step * rows
    if nbytes < needed:
        raise ImageDataError(f"data has {nbytes} bytes, shorter than step*height="
                             f"{step}*{height}={needed}", "data")
    return info


def decode_raw(encoding: str, width: int, height: int, step: int, is_bigendian: bool,
               data) -> np.ndarray:
    """The image bytes as an array in the encoding's layout (see the module docstring).

    A zero-copy, read-only strided view of `data` when the byte order is native (copy it
    before writing); a native-order copy for big-endian multi-byte data. Row padding of any
    size (even not a whole number of pixels) is skipped.
    """
    info = check_layout(encoding, int(width), int(height), int(step), len(data))
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    buffer = data if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(
        data, "buffer_info") else bytes(data)
    shape = (int(height), int(width)) + ((info.channels,) if info.channels > 1 else ())
    strides = (int(step), info.channels * dtype.itemsize) + (
        (dtype.itemsize,) if info.channels > 1 else ())
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buffer, offset=0, strides=strides)
    if not dtype.isnative:
        view = view.astype(dtype.newbyteorder("="))
    view.flags.writeable = False
    return view


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 scaled by 255/65535 and rounded, as cv_bridge's convertTo does."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image.astype(np.float32) * np.float32(_SCALE_16_TO_8)), 0,
                   255).astype(np.uint8)


def to_matcher_input(image: np.ndarray, encoding: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) or mono (H, W) from an image in `encoding` (see the module doc)."""
    name = canonical(encoding)
    info = layout(name)
    if name in NOT_STEREO_INPUTS:
        raise UnsupportedEncodingError(
            f"encoding {encoding!r} cannot be a stereo input image (a camera publishes mono, "
            "colour, Bayer or YUV422 images)", "encoding")
    expected = (info.channels,) if info.channels > 1 else ()
    if image.ndim != 2 + len(expected) or tuple(image.shape[2:]) != expected:
        raise ImageDataError(f"an image of shape {image.shape} is not {encoding}", "data")
    if name.startswith("bayer_"):
        rgb = cv2.cvtColor(np.ascontiguousarray(image), _BAYER_TO_RGB[name[6:10]])
        return _to_8bit(rgb)
    if name in _YUV_TO_RGB:
        _check_yuv422_width(encoding, image.shape[1])
        return cv2.cvtColor(np.ascontiguousarray(image), _YUV_TO_RGB[name])
    image = _to_8bit(image)
    if name.startswith("mono"):
        return image
    if name.startswith("rgb"):
        return image[:, :, :3]
    return image[:, :, 2::-1]                                     # bgr, bgra


def pair_to_matcher_input(left: np.ndarray, left_encoding: str, right: np.ndarray,
                          right_encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair in backend form with the same channel count (mono if either is)."""
    left_in = to_matcher_input(left, left_encoding)
    right_in = to_matcher_input(right, right_encoding)
    if left_in.ndim != right_in.ndim:
        left_in, right_in = _luma(left_in), _luma(right_in)
    return np.ascontiguousarray(left_in), np.ascontiguousarray(right_in)


def _luma(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from RGB with the ITU-R BT.601 weights (mono passes through)."""
    if image.ndim == 2:
        return image
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(image.astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------- compressed transport

COMPRESSED_FORMATS = ("jpeg", "png")


def parse_compressed_format(text: str) -> tuple[str, str]:
    """image_transport's CompressedImage.format -> (original encoding, compression).

    "bgr8; jpeg compressed bgr8" -> ("bgr8", "jpeg"); old publishers' bare "jpeg"/"png" ->
    ("", "jpeg"/"png"). compressedDepth and anything else -> UnsupportedEncodingError.
    """
    text = (text or "").strip()
    original, _, rest = text.partition(";")
    original, rest = original.strip(), rest.strip().lower()
    if not rest:                                            # "jpeg" or "png" alone
        original, rest = "", original.lower()
    compression = rest.split()[0] if rest else ""
    if "compresseddepth" in text.lower().replace(" ", ""):
        raise UnsupportedEncodingError(
            f"format {text!r} is compressedDepth (a depth image), not a camera image", "format")
    if compression not in COMPRESSED_FORMATS:
        raise UnsupportedEncodingError(
            f"format {text!r}: expected '<encoding>; jpeg|png compressed <encoding>' (or "
            f"'jpeg'/'png')", "format")
    return original, compression


def decode_compressed(format_text: str, data) -> tuple[np.ndarray, str]:
    """A CompressedImage payload -> (array, its encoding) ready for `to_matcher_input`.

    JPEG and PNG are decoded with OpenCV as stored (colour comes back in BGR order, 16-bit PNG
    stays 16-bit); the returned encoding says which (mono8, bgr8, bgra8, mono16, bgr16, bgra16).
    Corrupt or truncated data raises CompressedDataError.
    """
    original, compression = parse_compressed_format(format_text)
    buffer = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview))
                           else data, dtype=np.uint8)
    if buffer.size == 0:
        raise CompressedDataError(f"empty {compression} payload", "data")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CompressedDataError(f"{compression} payload of {buffer.size} bytes does not decode "
                                  f"(corrupt or truncated; format {format_text!r})", "data")
    bits = 16 if image.dtype == np.uint16 else 8
    if image.dtype not in (np.uint8, np.uint16):
        raise CompressedDataError(f"{compression} payload decodes to {image.dtype}, not an "
                                  "8- or 16-bit image", "data")
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = {1: f"mono{bits}", 3: f"bgr{bits}", 4: f"bgra{bits}"}.get(channels)
    if encoding is None:
        raise CompressedDataError(f"{compression} payload has {channels} channels", "data")
    if channels == 1 and image.ndim == 3:
        image = image[:, :, 0]
    return image, encoding
