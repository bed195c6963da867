"""Pad images to the size a network needs and crop its output back (PSMNet's test-time rule).

The official PSMNet test scripts zero-pad the TOP and RIGHT sides to the next multiple of 16 and
crop the prediction back; the pad value is applied after normalization (0 = the ImageNet mean).
InputPadder also pads up to a minimum size (PSMNet's SPP needs at least 256 px), and is exact for
sizes that are already multiples (zero padding, a no-op crop).

No torch import here: arrays are padded through their own type, so numpy arrays and torch tensors
(anything with `new_zeros`) both work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class InputPadder:
    """Top/right zero padding of (..., H, W) arrays to a multiple of `multiple`, >= `min_size`.

    shape: the input shape; only the last two entries (H, W) are used.
    multiple: padded H and W are multiples of this (16 for PSMNet).
    min_size: padded H and W are at least this many px (default 256, for PSMNet's SPP), then
        rounded up to a multiple.
    value: fill value of the padding (0.0: the official PSMNet pad after normalization).

    Attributes: `top`, `right` (px added), `padded_shape` (H', W').
    """

    def __init__(self, shape: Sequence[int], *, multiple: int = 16, min_size: int = 256,
                 value: float = 0.0) -> None:
        if len(shape) < 2:
            raise ValueError(f"shape must end with (H, W), got {tuple(shape)}")
        height, width = int(shape[-2]), int(shape[-1])
        if height <= 0 or width <= 0:
            raise ValueError(f"cannot pad an empty image of size {height}x{width}")
        if multiple <= 0 or min_size < 0:
            raise ValueError(f"multiple must be > 0 and min_size >= 0, got {multiple}, {min_size}")
        self.height, self.width = height, width
        padded_height = _round_up(max(height, min_size), multiple)
        padded_width = _round_up(max(width, min_size), multiple)
        self.top = padded_height - height
        self.right = padded_width - width
        self.padded_shape = (padded_height, padded_width)
        self.value = value

    def _pad_one(self, array):
        if tuple(array.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"expected (..., {self.height}, {self.width}), got "
                             f"{tuple(array.shape)}")
        if self.top == 0 and self.right == 0:
            return array
        shape = (*array.shape[:-2], *self.padded_shape)
        if hasattr(array, "new_full"):                     # torch.Tensor
            out = array.new_full(shape, self.value)
        else:
            out = np.full(shape, self.value, dtype=np.asarray(array).dtype)
        out[..., self.top:, :self.width] = array
        return out

    def pad(self, *arrays):
        """Pad each (..., H, W) array (numpy or torch) to (..., H', W'); one array in, one out."""
        padded = tuple(self._pad_one(a) for a in arrays)
        return padded[0] if len(padded) == 1 else padded

    def unpad(self, array):
        """Crop a (..., H', W') array back to (..., H, W): drop the top rows and right columns.

        Returns a view (slice) of the input.
        """
        if tuple(array.shape[-2:]) != self.padded_shape:
            raise ValueError(f"expected (..., {self.padded_shape[0]}, {self.padded_shape[1]}), "
                             f"got {tuple(array.shape)}")
        return array[..., self.top:, :self.width]
