"""PSMNet concatenation cost volume, built without a per-level Python loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def build_concat_volume(left_features: torch.Tensor, right_features: torch.Tensor,
                        num_levels: int, *,
                        dtype: torch.dtype | None = torch.float32,
                        memory_format: torch.memory_format = torch.contiguous_format
                        ) -> torch.Tensor:
    """Stack left features and right features shifted by each disparity level.

    left_features, right_features: (B, C, H, W) float, 1/4-resolution features.
    num_levels: D, the number of disparity levels (max_disparity // 4 for PSMNet).
    dtype: dtype of the volume; float32 (default) is what the official code always allocates.
        None keeps the features' dtype (e.g. for a reduced-precision path).
    memory_format: layout of the volume; `torch.channels_last_3d` gives the (B, D, H, W, 2C)
        memory order that cuDNN's reduced-precision 3-D convolutions read without a reorder.
    Returns (B, 2C, D, H, W): channels [0, C) hold left[..., x] and channels [C, 2C) hold
    right[..., x - i] at level i, for columns x >= i. Columns x < i are zero in both halves,
    exactly as in the official loop.
    """
    if left_features.shape != right_features.shape:
        raise ValueError(f"left and right features differ in shape: "
                         f"{tuple(left_features.shape)} vs {tuple(right_features.shape)}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    batch, channels, height, width = left_features.shape
    dtype = left_features.dtype if dtype is None else dtype
    volume = torch.empty((batch, 2 * channels, num_levels, height, width), dtype=dtype,
                         device=left_features.device, memory_format=memory_format)

    # Left half: the same features at every level, then zero the columns x < i.
    volume[:, :channels] = left_features.unsqueeze(2)
    levels = torch.arange(num_levels, device=left_features.device)
    columns = torch.arange(width, device=left_features.device)
    outside = (columns[None, :] < levels[:, None])[:, None, :]          # (D, 1, W)
    volume[:, :channels].masked_fill_(outside, 0)

    # Right half: zero-pad D-1 columns on the left; window k of width W starts at column k of the
    # padded map, so level i is window D-1-i, whose first i columns fall into the zero padding.
    padded = F.pad(right_features, (num_levels - 1, 0))
    windows = padded.unfold(3, width, 1)                                # (B, C, H, D, W)
    volume[:, channels:] = windows.flip(3).permute(0, 1, 3, 2, 4)
    return volume
