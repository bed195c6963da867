"""core.image_encodings: every camera encoding to the matcher's input, with values checked.

No ROS and no torch: runs on the oldest supported stack too (make test-oldest).
"""

from __future__ import annotations

import struct

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


# ------------------------------------------------------------------------- hand-written bytes
# The layouts where decoders differ, with the message bytes written out and the expected arrays
# typed in by hand (no numpy reshaping shared with the code under test).

def test_rgb8_step_one_byte_longer_than_a_row():
    # width 2, height 2, step 2*3 + 1 = 7: row 1 starts at byte 7, not at a pixel boundary
    data = bytes([1, 2, 3, 4, 5, 6, 0xEE,
                  11, 12, 13, 14, 15, 16, 0xEE])
    got = enc.decode_raw("rgb8", 2, 2, 7, False, data)
    np.testing.assert_array_equal(got, [[[1, 2, 3], [4, 5, 6]],
                                        [[11, 12, 13], [14, 15, 16]]])
    assert got.dtype == np.uint8
    # bgr8 on the same bytes: to_matcher_input reverses each pixel, padding never leaks in
    bgr = enc.decode_raw("bgr8", 2, 2, 7, False, data)
    np.testing.assert_array_equal(enc.to_matcher_input(bgr, "bgr8"),
                                  [[[3, 2, 1], [6, 5, 4]], [[13, 12, 11], [16, 15, 14]]])


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_odd_step_in_both_byte_orders(encoding, bigendian):
    # width 3, height 2, step 3*2 + 3 = 9: odd, so row 1's samples are not 2-byte aligned
    order = ">" if bigendian else "<"
    rows = [(0x0102, 0xFFFE, 0x1234), (0x8000, 0x0001, 0xABCD)]
    data = b"".join(struct.pack(order + "3H", *row) + b"\x7f\x7f\x7f" for row in rows)
    assert len(data) == 18
    got = enc.decode_raw(encoding, 3, 2, 9, bigendian, data)
    assert got.dtype == np.uint16 and got.dtype.isnative
    np.testing.assert_array_equal(got, [[0x0102, 0xFFFE, 0x1234], [0x8000, 0x0001, 0xABCD]])


def test_big_endian_mono16_bytes_are_not_read_little_endian():
    # 0x0100 big-endian is 256; read little-endian it would be 1
    got = enc.decode_raw("mono16", 2, 1, 4, True, b"\x01\x00\x00\x02")
    np.testing.assert_array_equal(got, [[256, 2]])
    got = enc.decode_raw("mono16", 2, 1, 4, False, b"\x01\x00\x00\x02")
    np.testing.assert_array_equal(got, [[1, 512]])


def test_rgb16_big_endian_with_padding_that_is_not_a_whole_pixel():
    # width 2, height 2, step 2*6 + 2 = 14: padding is one uint16, not one 6-byte pixel
    pixels = [[(1, 2, 3), (0x1000, 0x2000, 0xFFFF)],
              [(4, 5, 6), (0x0A0B, 0x0C0D, 0x0E0F)]]
    data = b"".join(b"".join(struct.pack(">3H", *px) for px in row) + b"\x00\x99"
                    for row in pixels)
    got = enc.decode_raw("rgb16", 2, 2, 14, True, data)
    np.testing.assert_array_equal(got, pixels)
    # and scaled to 8 bit as cv_bridge does: round(v * 255 / 65535)
    np.testing.assert_array_equal(enc.to_matcher_input(got, "rgb16")[0, 1], [16, 32, 255])


def test_32fc1_big_endian_with_odd_step():
    data = struct.pack(">2f", 1.5, -2.25) + b"\x01" + struct.pack(">2f", 1e-3, 7.0) + b"\x01"
    got = enc.decode_raw("32FC1", 2, 2, 9, True, data)
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.array([[1.5, -2.25], [1e-3, 7.0]], np.float32))


def test_byte_order_flag_does_not_touch_8_bit_data():
    data = bytes([10, 20, 30, 40, 50, 60])
    for bigendian in (False, True):
        np.testing.assert_array_equal(enc.decode_raw("rgb8", 1, 2, 3, bigendian, data),
                                      [[[10, 20, 30]], [[40, 50, 60]]])


def test_bytes_after_the_last_row_are_ignored():
    # sensor_msgs/Image needs step*height bytes; a longer buffer must not shift anything
    got = enc.decode_raw("mono8", 3, 2, 4, False, bytes([1, 2, 3, 0, 4, 5, 6, 0, 99, 98]))
    np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 6]])


def _red_mosaic_bytes(pattern: str, width: int, height: int, value: int, bits: int,
                      bigendian: bool, padding: int) -> tuple[bytes, int]:
    """Bayer bytes of a pure red scene, written pixel by pixel: `value` on the red sites of
    the ROS pattern (named from the 2x2 block at (0, 0)), 0 elsewhere; rows padded."""
    fmt = ("B" if bits == 8 else "H")
    order = ">" if bigendian else "<"
    rows = []
    for y in range(height):
        row = b""
        for x in range(width):
            colour = pattern[2 * (y % 2) + (x % 2)]
            row += struct.pack(order + fmt, value if colour == "r" else 0)
        rows.append(row + b"\x55" * padding)
    return b"".join(rows), len(rows[0])


@pytest.mark.parametrize("pattern", enc.BAYER_PATTERNS)
@pytest.mark.parametrize("bits, bigendian, padding", [(8, False, 1), (16, True, 3),
                                                      (16, False, 1)])
def test_bayer_with_odd_width_and_height(pattern, bits, bigendian, padding):
    width, height = 7, 5                      # odd: the mosaic ends half way through a block
    value = 200 if bits == 8 else 200 * 257
    data, step = _red_mosaic_bytes(pattern, width, height, value, bits, bigendian, padding)
    encoding = f"bayer_{pattern}{bits}"
    mosaic = enc.decode_raw(encoding, width, height, step, bigendian, data)
    assert mosaic.shape == (5, 7)
    # the raw mosaic, site by site (first row of rggb: R G R G R G R)
    red_sites = {"rggb": (0, 0), "bggr": (1, 1), "gbrg": (1, 0), "grbg": (0, 1)}[pattern]
    for y in range(height):
        for x in range(width):
            expected = value if (y % 2, x % 2) == red_sites else 0
            assert mosaic[y, x] == expected, (y, x)
    rgb = enc.to_matcher_input(mosaic, encoding)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    # a pure red scene is pure red everywhere, the odd last column and row included
    assert (rgb == np.array([200, 0, 0], np.uint8)).all(), rgb


@pytest.mark.parametrize("encoding, macropixel", [("yuv422", [128, 16, 128, 235]),
                                                  ("yuv422_yuy2", [16, 128, 235, 128])])
def test_yuv422_one_macropixel_per_row_with_odd_padding(encoding, macropixel):
    # two pixels in four bytes: Y=16 is black and Y=235 white in BT.601 video range
    # (U = V = 128: no colour); step 4 + 3 = 7
    data = bytes(macropixel + [1, 2, 3] + macropixel + [1, 2, 3])
    raw = enc.decode_raw(encoding, 2, 2, 7, False, data)
    assert raw.shape == (2, 2, 2)
    np.testing.assert_array_equal(enc.to_matcher_input(raw, encoding),
                                  [[[0, 0, 0], [255, 255, 255]]] * 2)


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
@pytest.mark.parametrize("width", [5, 7])
def test_yuv422_odd_width_is_refused_naming_the_width(encoding, width):
    with pytest.raises(enc.ImageDataError) as error:
        enc.decode_raw(encoding, width, 2, 2 * width + 2, False, bytes(4 * width + 4))
    assert str(error.value) == (f"{encoding} packs two pixels in 4 bytes: width={width} must "
                                "be even")
    assert error.value.field == "width"
    # an odd-width array handed straight to to_matcher_input: the same error, not cv2.error
    with pytest.raises(enc.ImageDataError, match=f"width={width} must be even") as error:
        enc.to_matcher_input(np.zeros((2, width, 2), np.uint8), encoding)
    assert error.value.field == "width"


@pytest.mark.parametrize("args, field, message", [
    (("rgb8", 5, 2, 16, False, bytes(31)), "data",
     "data has 31 bytes, shorter than step*height=16*2=32"),
    (("rgb16", 5, 2, 29, False, bytes(60)), "step",
     "step=29 is smaller than width*bytes_per_pixel=5*6=30"),
    (("mono16", 5, 3, 13, True, bytes(38)), "data",
     "data has 38 bytes, shorter than step*height=13*3=39"),
    (("mono16", 5, 3, 9, True, bytes(60)), "step",
     "step=9 is smaller than width*bytes_per_pixel=5*2=10"),
    (("bayer_grbg8", 7, 0, 7, False, b""), "width/height", "empty image: width=7, height=0"),
])
def test_error_messages_give_field_and_values(args, field, message):
    with pytest.raises(enc.ImageDataError) as error:
        enc.decode_raw(*args)
    assert str(error.value) == message
    assert error.value.field == field
