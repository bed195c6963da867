"""InputPadder: top/right padding to a multiple of 16 (>= 256 px) and exact crop back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereo_depth_ros.core.padding import InputPadder


@pytest.mark.parametrize("height,width,padded", [
    (375, 1242, (384, 1248)),
    (376, 1241, (384, 1248)),
    (100, 130, (256, 256)),
    (256, 512, (256, 512)),
    (384, 1248, (384, 1248)),
    (257, 255, (272, 256)),
])
def test_round_trip_numpy_and_torch(height, width, padded):
    rng = np.random.default_rng(height * 10000 + width)
    image = rng.standard_normal((3, height, width)).astype(np.float32)
    padder = InputPadder(image.shape, multiple=16, min_size=256)
    assert padder.padded_shape == padded
    assert (padder.top, padder.right) == (padded[0] - height, padded[1] - width)

    out = padder.pad(image)
    assert out.shape == (3, *padded) and out.dtype == np.float32
    # The padding sits on the top rows and right columns and is zero; the image keeps its place.
    assert np.all(out[:, :padder.top] == 0) and np.all(out[:, :, width:] == 0)
    assert np.array_equal(out[:, padder.top:, :width], image)
    assert np.array_equal(padder.unpad(out), image)

    tensor = torch.from_numpy(image)[None]
    left, right = padder.pad(tensor, tensor + 1)
    assert left.shape == right.shape == (1, 3, *padded)
    assert torch.equal(padder.unpad(left), tensor)
    assert torch.equal(padder.unpad(right), tensor + 1)


def test_exact_multiple_is_a_no_op():
    image = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    padder = InputPadder(image.shape, multiple=16, min_size=256)
    assert (padder.top, padder.right) == (0, 0)
    assert padder.pad(image) is image
    assert np.array_equal(padder.unpad(image), image)


def test_hand_checked_official_amounts():
    # Official rule: top_pad = (H // 16 + 1) * 16 - H when H % 16 != 0.
    padder = InputPadder((375, 1242))
    assert (padder.top, padder.right) == (9, 6)


def test_errors():
    padder = InputPadder((100, 130), min_size=256)
    with pytest.raises(ValueError, match="expected"):
        padder.pad(np.zeros((101, 130)))
    with pytest.raises(ValueError, match="expected"):
        padder.unpad(np.zeros((100, 130)))
    with pytest.raises(ValueError, match="empty"):
        InputPadder((0, 5))
