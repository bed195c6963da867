"""PSMNet (Chang & Chen, CVPR 2018): stacked-hourglass and basic variants.

Wiring only; the stages live in feature.py, cost_volume.py, hourglass.py and regression.py and
each is callable on its own (`extract_features`, `build_cost_volume`, `aggregate`, `regress`), so a
faster inference path can reuse or replace single stages. Attribute names equal the official
state_dict keys, so the official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.feature import FEATURE_CHANNELS, FeatureExtraction
from stereo_depth_ros.models.hourglass import Hourglass
from stereo_depth_ros.models.layers import conv_bn_3d, init_official_
from stereo_depth_ros.models.regression import regress_disparity

SIZE_MULTIPLE = 16
"""Input height, width and max_disparity must be multiples of this (two stride-2 3-D stages)."""


def _classifier() -> nn.Sequential:
    """conv_bn_3d(32->32)+ReLU, then Conv3d(32->1): one matching score per (level, y, x)."""
    return nn.Sequential(
        conv_bn_3d(32, 32, 3, 1, 1), nn.ReLU(inplace=True),
        nn.Conv3d(32, 1, kernel_size=3, padding=1, stride=1, bias=False),
    )


def _residual_3d() -> nn.Sequential:
    """conv_bn_3d+ReLU+conv_bn_3d at 32 channels (the caller adds the input)."""
    return nn.Sequential(
        conv_bn_3d(32, 32, 3, 1, 1), nn.ReLU(inplace=True),
        conv_bn_3d(32, 32, 3, 1, 1),
    )


class PSMNetBase(nn.Module):
    """Shared parts: feature extraction, cost volume, regression and the forward passes.

    Subclasses define `aggregate(cost) -> list of low-resolution costs (B, 1, D/4, H/4, W/4)`, the
    last of which is the final one.

    Inputs of `forward`: left, right (B, 3, H, W) float32, RGB scaled to [0, 1] and then
    normalized with the ImageNet mean/std (see `models.checkpoint.OFFICIAL_PREPROCESSING`);
    H and W multiples of 16 and >= 256.
    """

    variant = ""

    def __init__(self, max_disparity: int = 192, *, align_corners: bool = True) -> None:
        super().__init__()
        if max_disparity <= 0 or max_disparity % SIZE_MULTIPLE:
            raise ValueError(f"max_disparity must be a positive multiple of {SIZE_MULTIPLE}, "
                             f"got {max_disparity}")
        self.max_disparity = int(max_disparity)
        self.align_corners = bool(align_corners)
        # checkpoint key: do not rename
        self.feature_extraction = FeatureExtraction(align_corners=align_corners)
        # checkpoint key: do not rename
        self.dres0 = nn.Sequential(
            conv_bn_3d(2 * FEATURE_CHANNELS, 32, 3, 1, 1), nn.ReLU(inplace=True),
            conv_bn_3d(32, 32, 3, 1, 1), nn.ReLU(inplace=True),
        )

    @property
    def num_levels(self) -> int:
        """Disparity levels of the 1/4-resolution cost volume (max_disparity // 4)."""
        return self.max_disparity // 4

    def extract_features(self, left: torch.Tensor, right: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalized images -> two (B, 32, H/4, W/4) feature maps (same weights)."""
        return self.feature_extraction(left), self.feature_extraction(right)

    def build_cost_volume(self, left_features: torch.Tensor, right_features: torch.Tensor
                          ) -> torch.Tensor:
        """Two (B, 32, H/4, W/4) feature maps -> (B, 64, D/4, H/4, W/4) float32 volume."""
        return build_concat_volume(left_features, right_features, self.num_levels)

    def aggregate(self, cost: torch.Tensor) -> list[torch.Tensor]:
        """(B, 64, D/4, H/4, W/4) volume -> list of (B, 1, D/4, H/4, W/4) costs, final last."""
        return self.aggregate_from(self.dres0(cost))

    def aggregate_from(self, cost0: torch.Tensor) -> list[torch.Tensor]:
        """The 3-D CNN after dres0: (B, 32, D/4, H/4, W/4) -> the costs of `aggregate`."""
        raise NotImplementedError

    def regress(self, cost: torch.Tensor, size: tuple[int, int], *,
                with_confidence: bool = False, with_uncertainty: bool = False) -> tuple:
        """(B, 1, D/4, H/4, W/4) cost -> ((B, 1, H, W) disparity px, confidence or None), plus
        sigma_d (B, 1, H, W) px with `with_uncertainty`.

        Always float32; see `regression.regress_disparity` for the definitions.
        """
        return regress_disparity(cost, self.max_disparity, size,
                                 align_corners=self.align_corners,
                                 with_confidence=with_confidence,
                                 with_uncertainty=with_uncertainty)

    def _check_input(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"expected left and right of equal shape (B, 3, H, W), got "
                             f"{tuple(left.shape)} and {tuple(right.shape)}")
        height, width = left.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or min(height, width) < 256:
            raise ValueError(f"input size {height}x{width} must be a multiple of "
                             f"{SIZE_MULTIPLE} and at least 256x256: pad it first "
                             "(core.padding.InputPadder)")

    def _costs(self, left: torch.Tensor, right: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(left, right)
        left_features, right_features = self.extract_features(left, right)
        cost = self.build_cost_volume(left_features, right_features)
        del left_features, right_features
        return self.aggregate(cost)

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        """Disparity of the left image.

        left, right: (B, 3, H, W) float32, normalized RGB (see the class docstring).
        Eval mode: (B, 1, H, W) float32 disparity, px in [0, max_disparity - 1].
        Train mode: stackhourglass returns (pred1, pred2, pred3), each (B, 1, H, W); basic returns
        one (B, 1, H, W) tensor, as the official models do.
        """
        size = tuple(left.shape[-2:])
        costs = self._costs(left, right)
        if self.training and len(costs) > 1:
            return tuple(self.regress(c, size)[0] for c in costs)
        return self.regress(costs[-1], size)[0]

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final disparity and its confidence, both (B, 1, H, W) float32.

        Confidence is the softmax probability mass within +-2 px of the regressed disparity
        (`regression.window_confidence`), in [0, 1]. Meant for eval mode.
        """
        size = tuple(left.shape[-2:])
        disparity, confidence = self.regress(self._costs(left, right)[-1], size,
                                             with_confidence=True)
        return disparity, confidence


class PSMNetStackHourglass(PSMNetBase):
    """Stacked-hourglass PSMNet: three hourglasses with intermediate supervision.

    State dict: 514 entries (85 of them BatchNorm `num_batches_tracked`), 5,224,768 parameters.
    """

    variant = "stackhourglass"

    def __init__(self, max_disparity: int = 192, *, align_corners: bool = True) -> None:
        super().__init__(max_disparity, align_corners=align_corners)
        # checkpoint key: do not rename (dres1-4, classif1-3)
        self.dres1 = _residual_3d()
        self.dres2 = Hourglass(32)
        self.dres3 = Hourglass(32)
        self.dres4 = Hourglass(32)
        self.classif1 = _classifier()
        self.classif2 = _classifier()
        self.classif3 = _classifier()
        init_official_(self)

    def aggregate_from(self, cost0: torch.Tensor) -> list[torch.Tensor]:
        """dres0's output (B, 32, D/4, H/4, W/4) -> [cost1, cost2, cost3], each
        (B, 1, D/4, H/4, W/4).

        cost2 includes cost1 and cost3 includes cost2 (the official accumulation).
        """
        cost0 = self.dres1(cost0) + cost0
        out1, pre1, post1 = self.dres2(cost0, None, None)
        out1 = out1 + cost0
        out2, _, post2 = self.dres3(out1, pre1, post1)
        out2 = out2 + cost0
        # The third hourglass gets pre1 (not pre2) as presqu: an official quirk the weights need.
        out3, _, _ = self.dres4(out2, pre1, post2)
        out3 = out3 + cost0
        cost1 = self.classif1(out1)
        cost2 = self.classif2(out2) + cost1
        cost3 = self.classif3(out3) + cost2
        return [cost1, cost2, cost3]


class PSMNetBasic(PSMNetBase):
    """Basic PSMNet: four residual 3-D blocks, one classifier. 3,672,896 parameters."""

    variant = "basic"

    def __init__(self, max_disparity: int = 192, *, align_corners: bool = True) -> None:
        super().__init__(max_disparity, align_corners=align_corners)
        # checkpoint key: do not rename (dres1-4, classify)
        self.dres1 = _residual_3d()
        self.dres2 = _residual_3d()
        self.dres3 = _residual_3d()
        self.dres4 = _residual_3d()
        self.classify = _classifier()
        init_official_(self)

    def aggregate_from(self, cost0: torch.Tensor) -> list[torch.Tensor]:
        """dres0's output (B, 32, D/4, H/4, W/4) -> [cost], (B, 1, D/4, H/4, W/4)."""
        for block in (self.dres1, self.dres2, self.dres3, self.dres4):
            cost0 = block(cost0) + cost0
        return [self.classify(cost0)]


VARIANTS: dict[str, type[PSMNetBase]] = {
    "stackhourglass": PSMNetStackHourglass,
    "basic": PSMNetBasic,
}
