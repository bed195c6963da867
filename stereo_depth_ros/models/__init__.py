"""PSMNet in plain PyTorch: builders and checkpoint loading.

    from stereo_depth_ros.models import build_psmnet, load_checkpoint
    model = build_psmnet("stackhourglass", max_disparity=192)
    load_checkpoint(model, path)
    model.eval(); disparity = model(left, right)   # normalized (B,3,H,W) -> (B,1,H,W) px
"""

from __future__ import annotations

from stereo_depth_ros.models.checkpoint import (OFFICIAL_PREPROCESSING, CheckpointError,
                                                PsmnetPreprocessing, load_checkpoint)
from stereo_depth_ros.models.psmnet import (VARIANTS, PSMNetBase, PSMNetBasic,
                                            PSMNetStackHourglass)

__all__ = [
    "OFFICIAL_PREPROCESSING", "CheckpointError", "PSMNetBase", "PSMNetBasic",
    "PSMNetStackHourglass", "PsmnetPreprocessing", "VARIANTS", "build_psmnet", "load_checkpoint",
]


def build_psmnet(variant: str = "stackhourglass", *, max_disparity: int = 192,
                 align_corners: bool = True) -> PSMNetBase:
    """Build a randomly initialised PSMNet (official init); load weights with `load_checkpoint`.

    variant: "stackhourglass" (the released weights) or "basic".
    max_disparity: full-resolution disparity levels, a positive multiple of 16 (192 upstream).
    align_corners: True (default) is what the released weights need; False reproduces the
        official code as it is (F.upsample without align_corners).
    """
    try:
        cls = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown PSMNet variant {variant!r}: expected one of "
                         f"{', '.join(VARIANTS)}") from None
    return cls(max_disparity, align_corners=align_corners)
