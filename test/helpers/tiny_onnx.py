"""A small exported network for the onnx tests: PSMNet basic with random (official-init) weights,
max_disparity 16, exported by stereo_depth_export for a 240x250 (HxW) matcher input, which pads
to 256x256 (the smallest size PSMNet's SPP takes), so export and inference take a few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

TINY_SIZE = (240, 250)            # matcher input (H, W); padded to 256x256
TINY_PADDED = (256, 256)
TINY_MAX_DISPARITY = 16
COST_SCALE = 1e-7


@dataclass(frozen=True)
class TinyExport:
    checkpoint: Path
    onnx_path: Path
    output: str                   # what the tool printed


def export_tiny(folder: Path, *extra: str, seed: int = 0) -> TinyExport:
    """Save a random basic PSMNet checkpoint in `folder`; export it with the tool."""
    import contextlib
    import io

    import torch

    from stereo_depth_ros.models import build_psmnet
    from stereo_depth_ros.tools.export import main

    torch.manual_seed(seed)
    model = build_psmnet("basic", max_disparity=TINY_MAX_DISPARITY)
    with torch.no_grad():
        # Official-init costs are huge (~1e7 here): the softmax is one-hot and every disparity
        # a whole level. Scaled down they give soft distributions, whose soft-argmin and
        # confidence are what the parity tests must compare.
        model.classify[-1].weight.mul_(COST_SCALE)
    checkpoint = folder / "tiny_basic.pth"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    onnx_path = folder / "tiny_basic.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--weights", str(checkpoint), "--model", "basic", "--max-disparity",
                     str(TINY_MAX_DISPARITY), "--size", f"{TINY_SIZE[0]}x{TINY_SIZE[1]}",
                     "--output", str(onnx_path), *extra])
    assert code == 0, printed.getvalue()
    return TinyExport(checkpoint, onnx_path, printed.getvalue())


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> TinyExport:
    return export_tiny(tmp_path_factory.mktemp("tiny_onnx"))
