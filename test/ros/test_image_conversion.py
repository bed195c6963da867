"""sensor_msgs/Image <-> numpy: every encoding, row padding, byte order, bad messages."""

from __future__ import annotations

import struct
import sys
import types

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.ros_messages import image_msg, stamp  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from stereo_depth_ros.ros import image_conversion as ic  # noqa: E402

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(7)


def _sample(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    info = ic.ENCODINGS[encoding]
    if encoding.startswith("yuv422"):
        width += width % 2                  # two pixels share four bytes: even widths only
    shape = (height, width) + ((info.channels,) if info.channels > 1 else ())
    if info.dtype == np.float32:
        values = RNG.normal(size=shape).astype(np.float32)
        values[0, 0] = np.nan
        return values
    return RNG.integers(0, np.iinfo(info.dtype).max, size=shape, dtype=info.dtype)


@pytest.mark.parametrize("encoding", list(ic.ENCODINGS))
def test_round_trip_every_encoding(encoding):
    array = _sample(encoding)
    msg = ic.numpy_to_image(array, encoding)
    assert msg.step == array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3
                                                          else 1)
    back = ic.image_to_numpy(msg)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("encoding", list(ic.ENCODINGS))
@pytest.mark.parametrize("pad", [1, 3, 64])
def test_row_padding_is_skipped(encoding, pad):
    array = _sample(encoding, 6, 9)
    msg = image_msg(array, encoding, stamp(1), pad=pad)
    assert msg.step > array.shape[1] * array.itemsize
    np.testing.assert_array_equal(ic.image_to_numpy(msg), array)


def test_native_path_is_a_read_only_zero_copy_view():
    array = _sample("bgr8", 4, 6)
    msg = image_msg(array, "bgr8", stamp(1), pad=2)
    view = ic.image_to_numpy(msg, use_cv_bridge=False)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable


def test_big_endian_mono16_and_float():
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    msg = image_msg(values.astype(">u2"), "mono16", stamp(1))
    msg.is_bigendian = 1
    out = ic.image_to_numpy(msg)
    np.testing.assert_array_equal(out, values)
    assert out.dtype.isnative
    depth = np.linspace(0.5, 9.5, 12, dtype=np.float32).reshape(3, 4)
    msg = image_msg(depth.astype(">f4"), "32FC1", stamp(1))
    msg.is_bigendian = 1
    np.testing.assert_array_equal(ic.image_to_numpy(msg), depth)


def test_short_data_is_rejected_naming_step_and_height():
    msg = ic.numpy_to_image(_sample("rgb8", 4, 5), "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(ic.ImageDataError, match=r"data has 59 bytes, shorter than "
                       r"step\*height=15\*4=60") as info:
        ic.image_to_numpy(msg)
    assert info.value.field == "data"
    assert isinstance(info.value, ValueError)


def test_step_smaller_than_a_row_is_rejected():
    msg = ic.numpy_to_image(_sample("mono16", 4, 5), "mono16")
    msg.step = 9
    with pytest.raises(ic.ImageDataError, match=r"step=9 is smaller than width\*bytes_per_pixel"):
        ic.image_to_numpy(msg)


def test_empty_image_is_rejected():
    msg = ic.numpy_to_image(_sample("mono8", 4, 5), "mono8")
    msg.width = 0
    with pytest.raises(ic.ImageDataError, match="empty image"):
        ic.image_to_numpy(msg)


def test_unsupported_encoding_names_the_encoding_and_the_supported_list():
    msg = ic.numpy_to_image(_sample("mono8", 4, 4), "mono8")
    msg.encoding = "nv21"
    with pytest.raises(ic.UnsupportedEncodingError, match=r"'nv21'.*mono8, mono16, bgr8"):
        ic.image_to_numpy(msg)


def test_numpy_to_image_checks_dtype_and_channels():
    with pytest.raises(ValueError, match="dtype"):
        ic.numpy_to_image(np.zeros((3, 3), np.float64), "32FC1")
    with pytest.raises(ValueError, match="channel"):
        ic.numpy_to_image(np.zeros((3, 3), np.uint8), "rgb8")


def test_matcher_input_channel_orders():
    rgb = _sample("rgb8", 3, 4)
    np.testing.assert_array_equal(ic.to_matcher_input(rgb[:, :, ::-1], "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(ic.to_matcher_input(rgba, "rgba8"), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((3, 4, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(ic.to_matcher_input(bgra, "bgra8"), rgb)
    with pytest.raises(ic.UnsupportedEncodingError):
        ic.to_matcher_input(np.zeros((2, 2), np.float32), "32FC1")


def test_mono16_is_scaled_as_cv_bridge_does_and_mixed_pairs_become_mono():
    left = np.array([[0, 257], [32896, 65535]], np.uint16)
    right = np.array([[0, 4095], [1000, 2000]], np.uint16)
    left8, right8 = ic.pair_to_matcher_input(left, "mono16", right, "mono16")
    np.testing.assert_array_equal(left8, [[0, 1], [128, 255]])      # 255/65535, rounded
    np.testing.assert_array_equal(right8, [[0, 16], [4, 8]])
    colour = _sample("bgr8", 2, 2)
    mono = _sample("mono8", 2, 2)
    a, b = ic.pair_to_matcher_input(colour, "bgr8", mono, "mono8")
    assert a.shape == b.shape == (2, 2) and a.dtype == np.uint8


def _reference_bridge_module():
    """A stand-in for cv_bridge: a plain, copying row-by-row decoder (no shared code)."""
    def imgmsg_to_cv2(msg, desired_encoding="passthrough"):
        assert desired_encoding == "passthrough"
        info = ic.ENCODINGS[msg.encoding]
        dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
        raw = bytes(msg.data)
        rows = []
        for row in range(msg.height):
            start = row * msg.step
            chunk = raw[start:start + msg.width * info.channels * info.dtype.itemsize]
            rows.append(np.frombuffer(chunk, dtype=dtype))
        out = np.stack(rows)
        return out.reshape(msg.height, msg.width, info.channels) if info.channels > 1 else out

    return types.SimpleNamespace(CvBridge=lambda: types.SimpleNamespace(
        imgmsg_to_cv2=imgmsg_to_cv2))


@pytest.mark.parametrize("encoding", list(ic.ENCODINGS))
def test_cv_bridge_adapter_and_native_path_give_identical_arrays(encoding, monkeypatch):
    array = _sample(encoding, 4, 6)
    msg = image_msg(array, encoding, stamp(1), pad=5)
    native = ic.image_to_numpy(msg, use_cv_bridge=False)
    monkeypatch.setattr(ic, "_BRIDGE", ic._CvBridgeAdapter(_reference_bridge_module()))
    assert ic.conversion_backend() == "cv_bridge"
    bridged = ic.image_to_numpy(msg)
    assert bridged.dtype == native.dtype and bridged.shape == native.shape
    np.testing.assert_array_equal(bridged, native)
    # The checks run before the bridge is asked, so both paths reject the same messages.
    msg.data = msg.data[:-1]
    with pytest.raises(ic.ImageDataError):
        ic.image_to_numpy(msg)


def test_real_cv_bridge_matches_when_installed():
    cv_bridge = pytest.importorskip("cv_bridge")
    adapter = ic._CvBridgeAdapter(cv_bridge)
    for encoding in ic.ENCODINGS:
        array = _sample(encoding, 4, 6)
        msg = image_msg(array, encoding, stamp(1), pad=4)
        if ic.cv_bridge_reads_it(msg, ic.check_image_message(msg)):
            np.testing.assert_array_equal(adapter(msg), ic.image_to_numpy(msg, False))


def test_in_package_path_is_used_here():
    # cv_bridge is not on PyPI for ROS 2 (the PyPI package is ROS 1 code and fails on NumPy 2).
    try:
        import cv_bridge  # noqa: F401
    except Exception:  # noqa: BLE001
        assert ic.conversion_backend() == "numpy"


# ------------------------------------------------------------------ hand-built messages, cv_bridge

# cv_bridge reads multi-byte data in the host's byte order: the routing cases below are written
# for a little-endian host (is_bigendian=1 is the foreign order), as every ROS 2 tier-1 platform is
little_endian_host = pytest.mark.skipif(sys.byteorder != "little",
                                        reason="routing cases assume a little-endian host")


def _raw_msg(encoding: str, width: int, height: int, step: int, data: bytes,
             is_bigendian: int = 0) -> Image:
    msg = Image()
    msg.encoding, msg.width, msg.height, msg.step = encoding, width, height, step
    msg.is_bigendian = is_bigendian
    msg.data = data                   # rclpy keeps it as array.array('B')
    return msg


def _be16(*values: int) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


def _le16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}H", *values)


# (id, message fields, expected array typed by hand, whether cv_bridge reads it as we do)
HAND_CASES = [
    ("rgb8-dense", ("rgb8", 2, 2, 6, bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), 0),
     [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], True),
    ("rgb8-pad-whole-pixel", ("rgb8", 1, 2, 6, bytes([1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0, 0]), 0),
     [[[1, 2, 3]], [[4, 5, 6]]], True),
    ("rgb8-step-w*3+1", ("rgb8", 2, 2, 7, bytes([1, 2, 3, 4, 5, 6, 99,
                                                 7, 8, 9, 10, 11, 12, 99]), 0),
     [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], False),
    ("mono8-big-endian-flag", ("mono8", 3, 1, 3, bytes([7, 8, 9]), 1), [[7, 8, 9]], True),
    ("mono16-step-w*2+3", ("mono16", 2, 2, 7, _le16(1, 0x0203) + b"\xee\xee\xee"
                           + _le16(0x8000, 65535) + b"\xee\xee\xee", 0),
     [[1, 0x0203], [0x8000, 65535]], False),
    ("mono16-big-endian", ("mono16", 3, 1, 6, _be16(1, 256, 0xABCD), 1),
     [[1, 256, 0xABCD]], False),
    ("16UC1-big-endian-step-w*2+3", ("16UC1", 2, 2, 7, _be16(0x0102, 9) + b"\x00\x00\x00"
                                     + _be16(0xFF00, 0x00FF) + b"\x00\x00\x00", 1),
     [[0x0102, 9], [0xFF00, 0x00FF]], False),
    ("rgb16-big-endian", ("rgb16", 1, 2, 6, _be16(1, 2, 0x1000) + _be16(0xFFFF, 0, 0x0A0B), 1),
     [[[1, 2, 0x1000]], [[0xFFFF, 0, 0x0A0B]]], False),
    ("rgb16-pad-one-sample", ("rgb16", 1, 2, 8, _le16(1, 2, 3, 0) + _le16(4, 5, 6, 0), 0),
     [[[1, 2, 3]], [[4, 5, 6]]], False),
    ("mono16-little-endian-pad-whole-pixel", ("mono16", 2, 1, 6, _le16(300, 400, 0), 0),
     [[300, 400]], True),
    ("bayer_rggb8-odd-width", ("bayer_rggb8", 5, 1, 6, bytes([1, 2, 3, 4, 5, 0]), 0),
     [[1, 2, 3, 4, 5]], True),
    ("yuv422-step-w*2+1", ("yuv422", 2, 1, 5, bytes([128, 16, 128, 235, 0]), 0),
     [[[128, 16], [128, 235]]], False),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_in_package_path_on_hand_built_messages(case):
    _, fields, expected, _ = case
    msg = _raw_msg(*fields)
    got = ic.image_to_numpy(msg, use_cv_bridge=False)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, np.array(expected, dtype=got.dtype))
    assert got.dtype == ic.ENCODINGS[ic.canonical(msg.encoding)].dtype


@little_endian_host
@pytest.mark.parametrize("case", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_cv_bridge_reads_it_only_for_native_order_whole_pixel_rows(case):
    _, fields, _, bridge_ok = case
    msg = _raw_msg(*fields)
    assert ic.cv_bridge_reads_it(msg, ic.check_image_message(msg)) is bridge_ok


class _RecordingCvBridgeModule(types.ModuleType):
    """A fake `cv_bridge` module: records every message handed to it and decodes it the way a
    plain buffer-wrapping decoder does (native byte order, step // pixel_bytes columns), so a
    message it should not have been given would also come back wrong."""

    def __init__(self):
        super().__init__("cv_bridge")
        self.handed: list[tuple] = []
        module = self

        class CvBridge:
            def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
                module.handed.append((msg.encoding, msg.width, msg.step, msg.is_bigendian))
                info = ic.ENCODINGS[ic.canonical(msg.encoding)]
                pixel = info.dtype.itemsize * info.channels
                flat = np.frombuffer(bytes(msg.data), dtype=info.dtype)
                columns = msg.step // pixel
                image = flat[:msg.height * columns * info.channels].reshape(
                    msg.height, columns, info.channels)[:, :msg.width]
                return image[:, :, 0] if info.channels == 1 else image

        self.CvBridge = CvBridge


@pytest.fixture
def recording_bridge(monkeypatch):
    module = _RecordingCvBridgeModule()
    monkeypatch.setitem(sys.modules, "cv_bridge", module)
    adapter = ic._load_cv_bridge()              # the real loader finds the fake module
    assert adapter is not None
    monkeypatch.setattr(ic, "_BRIDGE", adapter)
    assert ic.conversion_backend() == "cv_bridge"
    return module


@little_endian_host
def test_cv_bridge_is_never_handed_padding_or_byte_order_it_misreads(recording_bridge):
    for name, fields, expected, bridge_ok in HAND_CASES:
        msg = _raw_msg(*fields)
        before = len(recording_bridge.handed)
        got = ic.image_to_numpy(msg)
        handed = len(recording_bridge.handed) - before
        assert handed == (1 if bridge_ok else 0), name
        np.testing.assert_array_equal(got, np.array(expected, dtype=got.dtype), err_msg=name)
    handed_fields = recording_bridge.handed
    assert handed_fields, "well-formed images should go to cv_bridge"
    for encoding, width, step, is_bigendian in handed_fields:
        info = ic.ENCODINGS[ic.canonical(encoding)]
        assert step % (info.dtype.itemsize * info.channels) == 0, (encoding, step)
        assert info.dtype.itemsize == 1 or is_bigendian == 0, encoding


@little_endian_host
def test_fake_bridge_really_misreads_what_is_kept_from_it(recording_bridge):
    # The reason for the routing: forced through cv_bridge, an odd step and big-endian data
    # come back wrong (the recording fake decodes as a buffer-wrapping cv_bridge would).
    odd_step = _raw_msg("rgb8", 2, 2, 7, bytes([1, 2, 3, 4, 5, 6, 99,
                                                7, 8, 9, 10, 11, 12, 99]))
    forced = ic.image_to_numpy(odd_step, use_cv_bridge=True)
    assert forced.tolist() != [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]
    big = _raw_msg("mono16", 2, 1, 4, _be16(1, 256), is_bigendian=1)
    assert ic.image_to_numpy(big, use_cv_bridge=True).tolist() != [[1, 256]]
    assert ic.image_to_numpy(big).tolist() == [[1, 256]]
    # use_cv_bridge=False never asks it
    count = len(recording_bridge.handed)
    dense = _raw_msg("mono8", 2, 1, 2, bytes([5, 6]))
    assert ic.image_to_numpy(dense, use_cv_bridge=False).tolist() == [[5, 6]]
    assert len(recording_bridge.handed) == count


def test_invalid_messages_are_refused_before_cv_bridge_is_asked(recording_bridge):
    cases = [
        (("rgb8", 5, 2, 14, bytes(28)), "step",
         "step=14 is smaller than width*bytes_per_pixel=5*3=15"),
        (("mono16", 5, 3, 13, bytes(38)), "data",
         "data has 38 bytes, shorter than step*height=13*3=39"),
        (("yuv422_yuy2", 5, 1, 10, bytes(10)), "width",
         "yuv422_yuy2 packs two pixels in 4 bytes: width=5 must be even"),
    ]
    for fields, field, message in cases:
        with pytest.raises(ic.ImageDataError) as error:
            ic.image_to_numpy(_raw_msg(*fields))
        assert str(error.value) == message
        assert error.value.field == field
    assert recording_bridge.handed == []


def test_cv_bridge_that_fails_to_load_is_not_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv_bridge", None)          # import raises ImportError
    assert ic._load_cv_bridge() is None
    broken = types.ModuleType("cv_bridge")

    def broken_bridge():
        raise AttributeError("_ARRAY_API not found")             # ROS 1 build on NumPy 2

    broken.CvBridge = broken_bridge
    monkeypatch.setitem(sys.modules, "cv_bridge", broken)
    assert ic._load_cv_bridge() is None
