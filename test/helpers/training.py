"""A tiny stereo network with PSMNet's training interface, and a torchrun entry point that
trains it with stereo_depth_train's own code (training.runner.run with build_model).

PSMNet needs 256x512 pixels per BatchNorm group (its 64-px SPP pooling), about 10 s per pair
and step on one CPU thread; this network takes a few milliseconds, so the data-parallel tests
can compare several complete runs. It keeps what matters to data parallelism: BatchNorm (per
process, with running statistics), PSMNet's concatenation cost volume and its float32
soft-argmin, and one output in train and eval mode (as PSMNet basic).

    python -m torch.distributed.run --standalone --nproc_per_node=2 test/helpers/training.py \\
        --rank-weights DIR <stereo_depth_train options>

writes, besides what stereo_depth_train writes on rank 0, every rank's final model state to
DIR/rank<r>.pt, so a test can compare the replicas itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.regression import regress_disparity

TINY_VARIANT = "tiny"

# stereo_depth_train options of the tiny data-parallel runs: 6 synthetic 256x544 scenes, 4 for
# training (256x512 crops) and 2 for validation, global batch 2
SEED = 5
TINY = ["--dataset", "synthetic", "--count", "6", "--val-count", "2", "--size", "256x544",
        "--crop", "256x512", "--batch-size", "2", "--max-disparity", "16", "--device", "cpu",
        "--save-every", "1", "--val-every", "2", "--seed", str(SEED), "--quiet"]


class TinyStereo(nn.Module):
    """Features at 1/4 resolution (two stride-2 convolutions, BatchNorm) -> concatenation volume
    with max_disparity / 4 levels -> two 3-D convolutions (BatchNorm) -> float32 regression.

    Input: left, right (B, 3, H, W) float32 normalised RGB, H and W multiples of 4.
    Output (train and eval mode): (B, 1, H, W) float32 disparity px in [0, max_disparity - 1].
    """

    def __init__(self, *, max_disparity: int = 16):
        super().__init__()
        self.variant = TINY_VARIANT
        self.max_disparity = int(max_disparity)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 4, 3, stride=2, padding=1))
        self.aggregate = nn.Sequential(
            nn.Conv3d(8, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
            nn.Conv3d(4, 1, 3, padding=1))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        volume = build_concat_volume(self.features(left), self.features(right),
                                     self.max_disparity // 4)
        return regress_disparity(self.aggregate(volume), self.max_disparity,
                                 tuple(left.shape[-2:]), align_corners=True)[0]


def build_tiny_stereo(variant: str, *, max_disparity: int) -> TinyStereo:
    """training.runner.run's build_model: the --model value is ignored (always TinyStereo)."""
    return TinyStereo(max_disparity=max_disparity)


def main(argv: list[str] | None = None) -> int:
    """Train TinyStereo as stereo_depth_train would, then save this rank's model state."""
    from stereo_depth_ros.tools import train
    from stereo_depth_ros.training import runner

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--rank-weights", type=Path, required=True)
    known, rest = own.parse_known_args(argv)
    result = runner.run(train.build_parser().parse_args(rest), build_model=build_tiny_stereo)
    known.rank_weights.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result["model"].state_dict(), known.rank_weights / f"rank{rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
