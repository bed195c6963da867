"""Disparity files: .npy, PFM (bottom-up rows, inf invalid), KITTI uint16 PNG (0 invalid)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core.disparity_io import (colorize, read_disparity, read_kitti_png,
                                                read_pfm, write_disparity, write_kitti_png,
                                                write_pfm)


@pytest.fixture
def disparity() -> np.ndarray:
    values = np.random.default_rng(0).uniform(0.5, 190.0, (7, 11)).astype(np.float32)
    values[2, 3] = np.nan
    values[0, 0] = 0.0
    return values


def test_npy_round_trip_is_exact(tmp_path, disparity):
    write_disparity(tmp_path / "d.npy", disparity)
    np.testing.assert_array_equal(read_disparity(tmp_path / "d.npy"), disparity)


def test_pfm_round_trip_and_orientation(tmp_path, disparity):
    path = tmp_path / "d.pfm"
    write_disparity(path, disparity)
    loaded = read_disparity(path)
    expected = disparity.copy()
    np.testing.assert_array_equal(loaded, expected)  # NaN -> inf on disk -> NaN again
    raw = read_pfm(path)
    assert np.isposinf(raw[2, 3])
    # On disk the bottom row comes first (the PFM rule): check the first stored value.
    data = path.read_bytes()
    header_end = data.index(b"-1.0\n") + len(b"-1.0\n")
    assert data[:header_end] == b"Pf\n11 7\n-1.0\n"
    first = np.frombuffer(data[header_end:header_end + 4], "<f4")[0]
    assert first == disparity[-1, 0]


def test_pfm_big_endian_and_colour(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "be.pfm"
    path.write_bytes(b"Pf\n3 2\n1.0\n" + np.flipud(values).astype(">f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), values)
    colour = np.repeat(values[:, :, None], 3, axis=2)
    path = tmp_path / "colour.pfm"
    path.write_bytes(b"PF\n3 2\n-1.0\n" + np.flipud(colour).astype("<f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), values)


def test_kitti_png_encoding(tmp_path, disparity):
    path = tmp_path / "d.png"
    write_kitti_png(path, disparity)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert raw[2, 3] == 0 and raw[0, 0] == 0  # NaN and 0 px are both "invalid"
    assert raw[1, 1] == round(float(disparity[1, 1]) * 256)
    loaded = read_kitti_png(path)
    assert np.isnan(loaded[2, 3]) and np.isnan(loaded[0, 0])
    keep = np.isfinite(disparity) & (disparity > 0)
    np.testing.assert_allclose(loaded[keep], disparity[keep], atol=0.5 / 256)


def test_kitti_png_hand_decoded(tmp_path):
    raw = np.array([[0, 256, 300, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "gt.png"), raw)
    loaded = read_disparity(tmp_path / "gt.png")
    np.testing.assert_array_equal(loaded, [[np.nan, 1.0, 300 / 256, 65535 / 256]])


def test_bad_files_and_extensions(tmp_path, disparity):
    with pytest.raises(ValueError, match="unsupported"):
        write_disparity(tmp_path / "d.txt", disparity)
    with pytest.raises(ValueError, match="unsupported"):
        read_disparity(tmp_path / "d.exr")
    (tmp_path / "bad.pfm").write_bytes(b"P6\n1 1\n255\n")
    with pytest.raises(ValueError, match="not a PFM"):
        read_pfm(tmp_path / "bad.pfm")
    (tmp_path / "short.pfm").write_bytes(b"Pf\n4 4\n-1.0\n" + b"\0" * 8)
    with pytest.raises(ValueError, match="truncated"):
        read_pfm(tmp_path / "short.pfm")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        read_kitti_png(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="2-D"):
        write_pfm(tmp_path / "x.pfm", np.zeros((2, 2, 2)))


def test_colorize_marks_invalid_black(disparity):
    image = colorize(disparity)
    assert image.shape == disparity.shape + (3,) and image.dtype == np.uint8
    assert (image[2, 3] == 0).all()
    assert colorize(np.full((2, 2), np.nan)).max() == 0
