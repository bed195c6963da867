"""sensor_msgs/Image <-> numpy: every encoding, row padding, byte order, bad messages."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_helpers import image_msg, stamp  # noqa: E402
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
