"""core.image_encodings: every camera encoding to the matcher's input, with values checked.

No ROS and no torch: runs on the oldest supported stack too (make test-oldest).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core import image_encodings as enc

H, W = 24, 32


def _scene(seed: int = 0) -> np.ndarray:
    """A smooth colour image (H, W, 3) uint8 RGB: debayering is exact enough on it."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.stack([40 + 5 * u, 60 + 4 * v, 200 - 3 * u - 2 * v], axis=-1)
    return np.clip(rgb + seed, 0, 255).astype(np.uint8)


def _decode(encoding: str, array: np.ndarray, *, bigendian: bool = False,
            padding: int = 0) -> np.ndarray:
    """Serialize `array` as an Image message would carry it, then decode it back."""
    data = np.ascontiguousarray(array)
    if data.dtype.itemsize > 1:
        data = data.astype(data.dtype.newbyteorder(">" if bigendian else "<"))
    rows = data.reshape(data.shape[0], -1).view(np.uint8)
    step = rows.shape[1] + padding
    padded = np.zeros((rows.shape[0], step), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return enc.decode_raw(encoding, data.shape[1], data.shape[0], step, bigendian,
                          padded.tobytes())


# ------------------------------------------------------------------------- plain encodings

@pytest.mark.parametrize("encoding, make", [
    ("rgb8", lambda rgb: rgb), ("bgr8", lambda rgb: rgb[..., ::-1]),
    ("8UC3", lambda rgb: rgb[..., ::-1]),
    ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ("rgb16", lambda rgb: rgb.astype(np.uint16) * 257),
    ("bgr16", lambda rgb: rgb[..., ::-1].astype(np.uint16) * 257),
    ("rgba16", lambda rgb: np.dstack([rgb.astype(np.uint16) * 257,
                                      np.full(rgb.shape[:2], 9, np.uint16)])),
    ("bgra16", lambda rgb: np.dstack([rgb[..., ::-1].astype(np.uint16) * 257,
                                      np.full(rgb.shape[:2], 9, np.uint16)])),
])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("padding", [0, 3])           # 3: not a whole number of pixels
def test_colour_encodings_give_the_rgb_image(encoding, make, bigendian, padding):
    rgb = _scene()
    decoded = _decode(encoding, make(rgb), bigendian=bigendian, padding=padding)
    np.testing.assert_array_equal(enc.to_matcher_input(decoded, encoding), rgb)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono_encodings_and_cv_bridge_16_bit_scaling(bigendian):
    grey = _scene()[..., 1]
    np.testing.assert_array_equal(enc.to_matcher_input(_decode("mono8", grey), "mono8"), grey)
    wide = grey.astype(np.uint16) * 257                      # 8-bit values in 16-bit range
    got = enc.to_matcher_input(_decode("mono16", wide, bigendian=bigendian, padding=1),
                               "mono16")
    np.testing.assert_array_equal(got, grey)
    # 255/65535 and round, as cv_bridge's convertTo: 4095 (a 12-bit maximum) -> 16, not 255.
    twelve_bit = np.array([[0, 128, 4095, 65535, 32767, 32768]], np.uint16)
    np.testing.assert_array_equal(enc.to_matcher_input(twelve_bit, "16UC1"),
                                  [[0, 0, 16, 255, 127, 128]])


# ------------------------------------------------------------------------- Bayer

def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image with a Bayer pattern named as ROS names it (2x2 block from (0, 0))."""
    index = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, index[pattern[k]]]
    return mosaic


@pytest.mark.parametrize("pattern", enc.BAYER_PATTERNS)
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_is_debayered_with_the_right_colours(pattern, bits):
    rgb = _scene()
    source = rgb if bits == 8 else rgb.astype(np.uint16) * 257
    encoding = f"bayer_{pattern}{bits}"
    got = enc.to_matcher_input(_decode(encoding, _mosaic(source, pattern)), encoding)
    assert got.shape == rgb.shape and got.dtype == np.uint8
    inner = (slice(2, -2), slice(2, -2))
    error = np.abs(got[inner].astype(int) - rgb[inner])
    assert error.max() <= 3, (encoding, error.max())            # a smooth scene: near exact
    # A pure red patch stays red (swapped patterns would turn it blue or green).
    red = np.zeros_like(rgb)
    red[..., 0] = 200
    red_source = red if bits == 8 else red.astype(np.uint16) * 257
    red_got = enc.to_matcher_input(_mosaic(red_source, pattern), encoding)[4:-4, 4:-4]
    assert (red_got[..., 0] > 190).all() and (red_got[..., 1:] < 10).all()


# ------------------------------------------------------------------------- YUV422

def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """BT.601 video-range YUV 4:2:2 of an image whose pixel pairs share a colour."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    packed = np.zeros(rgb.shape[:2] + (2,), np.uint8)
    chroma = np.zeros(rgb.shape[:2], np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u[:, 0::2], v[:, 0::2]
    luma_first = order == "yuy2"
    packed[..., 0 if luma_first else 1] = y
    packed[..., 1 if luma_first else 0] = chroma
    return packed


@pytest.mark.parametrize("encoding, order", [("yuv422", "uyvy"), ("yuv422_yuy2", "yuy2")])
def test_yuv422_in_both_byte_orders(encoding, order):
    rgb = np.repeat(_scene()[:, 0::2], 2, axis=1)               # pairs share their colour
    got = enc.to_matcher_input(_decode(encoding, _yuv422(rgb, order)), encoding)
    assert got.shape == rgb.shape
    assert np.abs(got.astype(int) - rgb).max() <= 3
    # The other byte order reads luma as chroma: far off (so the orders are not confused).
    other = "yuv422_yuy2" if encoding == "yuv422" else "yuv422"
    wrong = enc.to_matcher_input(_yuv422(rgb, order), other)
    assert np.abs(wrong.astype(int) - rgb).mean() > 20


# ------------------------------------------------------------------------- pairs, errors

def test_a_mono_and_a_colour_image_pair_as_mono():
    rgb = _scene()
    left, right = enc.pair_to_matcher_input(rgb, "rgb8", rgb[..., 1].copy(), "mono8")
    assert left.ndim == right.ndim == 2


@pytest.mark.parametrize("call, field, text", [
    (lambda: enc.layout("nv12"), "encoding", "unsupported encoding 'nv12'"),
    (lambda: enc.to_matcher_input(np.zeros((2, 2), np.float32), "32FC1"), "encoding",
     "cannot be a stereo input"),
    (lambda: enc.decode_raw("rgb8", 4, 2, 11, False, bytes(24)), "step", "step=11"),
    (lambda: enc.decode_raw("mono16", 4, 3, 8, False, bytes(23)), "data", "data has 23 bytes"),
    (lambda: enc.decode_raw("yuv422", 3, 2, 6, False, bytes(12)), "width", "must be even"),
    (lambda: enc.decode_raw("mono8", 0, 2, 0, False, b""), "width/height", "empty image"),
])
def test_errors_name_the_field_and_the_value(call, field, text):
    with pytest.raises(enc.ImageConversionError, match=text) as error:
        call()
    assert error.value.field == field


# ------------------------------------------------------------------------- compressed

@pytest.mark.parametrize("fmt, expected", [
    ("bgr8; jpeg compressed bgr8", ("bgr8", "jpeg")),
    ("rgb8; jpeg compressed bgr8", ("rgb8", "jpeg")),
    ("mono16; png compressed mono16", ("mono16", "png")),
    ("png", ("", "png")), ("JPEG", ("", "jpeg")),
])
def test_compressed_format_strings(fmt, expected):
    assert enc.parse_compressed_format(fmt) == expected


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth", "bgr8; theora", ""])
def test_unsupported_compressed_formats(fmt):
    with pytest.raises(enc.UnsupportedEncodingError, match="format"):
        enc.parse_compressed_format(fmt)


def test_compressed_jpeg_and_png_decode_to_the_image():
    rgb = _scene()
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    image, encoding = enc.decode_compressed("rgb8; jpeg compressed bgr8", jpeg.tobytes())
    assert encoding == "bgr8"
    assert np.abs(enc.to_matcher_input(image, encoding).astype(int) - rgb).mean() < 3
    grey16 = rgb[..., 1].astype(np.uint16) * 257
    ok, png = cv2.imencode(".png", grey16)
    image, encoding = enc.decode_compressed("mono16; png compressed mono16", png.tobytes())
    assert encoding == "mono16"
    np.testing.assert_array_equal(enc.to_matcher_input(image, encoding), rgb[..., 1])


@pytest.mark.parametrize("payload", [b"", b"\xff\xd8\xff garbage", "truncated"])
def test_corrupt_compressed_data_is_a_specific_error(payload):
    if payload == "truncated":
        ok, png = cv2.imencode(".png", _scene())
        payload = png.tobytes()[: len(png) // 3]
    with pytest.raises(enc.CompressedDataError, match="payload") as error:
        enc.decode_compressed("bgr8; png compressed bgr8", payload)
    assert error.value.field == "data"
