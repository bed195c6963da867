"""read_image_rgb: every common file layout becomes (H, W, 3) uint8 RGB."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core.image_io import read_image_rgb, to_rgb8

RGB = np.zeros((4, 5, 3), dtype=np.uint8)
RGB[..., 0] = 200  # red
RGB[..., 1] = np.arange(5, dtype=np.uint8) * 10
RGB[..., 2] = 7


def write(path, image) -> str:
    assert cv2.imwrite(str(path), image)
    return str(path)


def test_colour_png_comes_back_as_rgb(tmp_path):
    path = write(tmp_path / "colour.png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image_rgb(path), RGB)


def test_rgba_png_with_a_jpg_extension(tmp_path):
    # DrivingStereo ships RGBA PNG files named *.jpg: the content decides.
    bgra = cv2.cvtColor(RGB, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 17
    png = tmp_path / "frame.png"
    write(png, bgra)
    disguised = tmp_path / "frame_left.jpg"
    disguised.write_bytes(png.read_bytes())
    np.testing.assert_array_equal(read_image_rgb(disguised), RGB)


def test_grey_and_16_bit(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    image = read_image_rgb(write(tmp_path / "grey.png", grey))
    assert image.shape == (4, 5, 3)
    np.testing.assert_array_equal(image[..., 1], grey)
    deep = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    image = read_image_rgb(write(tmp_path / "deep.png", deep))
    np.testing.assert_array_equal(image[..., 0], np.round(deep / 257.0).astype(np.uint8))
    deep_colour = cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    np.testing.assert_array_equal(read_image_rgb(write(tmp_path / "c16.png", deep_colour)), RGB)


def test_real_drivingstereo_sample(assets_dir):
    path = next((assets_dir / "samples" / "drivingstereo").rglob("*_left.jpg"))
    image = read_image_rgb(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 5


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_image_rgb(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a file"):
        read_image_rgb(tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_rgb(junk)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_rgb(empty)


def test_to_rgb8_variants():
    np.testing.assert_array_equal(to_rgb8(RGB), RGB)
    np.testing.assert_array_equal(to_rgb8(np.ones((2, 2, 1), np.float32))[..., 0], 255)
    with pytest.raises(ValueError, match="shape"):
        to_rgb8(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="pixel type"):
        to_rgb8(np.zeros((2, 2), np.int32))
