"""BatchNorm folded into the convolution before it, for inference.

An eval-mode BatchNorm is a per-channel affine map, so `bn(conv(x, w))` equals `conv(x, w') + b'`
with `w'` the weight scaled per output channel and `b'` a new bias: one kernel instead of two,
and no separate normalisation pass over the activations.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

BN_EPS = 1e-5
"""BatchNorm epsilon of every PSMNet BatchNorm (PyTorch's default)."""


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel `module.` prefix from every key (no-op when absent)."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def batchnorm_state(state_dict: Mapping[str, torch.Tensor], prefix: str
                    ) -> dict[str, torch.Tensor]:
    """{"weight", "bias", "running_mean", "running_var"} of the BatchNorm at `prefix`."""
    return {name: state_dict[f"{prefix}.{name}"]
            for name in ("weight", "bias", "running_mean", "running_var")}


def fold_bn(weight: torch.Tensor, bn: Mapping[str, torch.Tensor], *, transposed: bool = False,
            eps: float = BN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the bias-free convolution before it.

    weight: conv weight, (C_out, C_in, k...) or, for a transposed conv, (C_in, C_out, k...).
    bn: {"weight", "bias", "running_mean", "running_var"} of the BatchNorm, each (C_out,).
    Returns (weight, bias) in float32 with bn(conv(x, w)) == conv(x, weight) + bias; the
    arithmetic is done in float64.
    """
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + eps)
    bias = bn["bias"].double() - bn["running_mean"].double() * scale
    shape = [1, -1] if transposed else [-1, 1]
    shape += [1] * (weight.dim() - 2)
    folded = weight.double() * scale.view(shape)
    return folded.float(), bias.float()


_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm_(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a bias-free convolution inside an
    `nn.Sequential` (PSMNet's conv_bn pairs): the convolution gets the folded weight and a bias,
    the BatchNorm becomes `nn.Identity`. The module must be in eval mode. Returns how many
    BatchNorms were folded.
    """
    if module.training:
        raise ValueError("fold_batchnorm_ needs an eval-mode module (model.eval())")
    folded = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequential) - 1):
            conv, bn = sequential[index], sequential[index + 1]
            if not (isinstance(conv, _CONVS) and isinstance(bn, _BATCHNORMS)
                    and conv.bias is None and bn.track_running_stats):
                continue
            weight, bias = fold_bn(conv.weight.detach(), {
                "weight": bn.weight.detach(), "bias": bn.bias.detach(),
                "running_mean": bn.running_mean, "running_var": bn.running_var},
                transposed=isinstance(conv, nn.ConvTranspose3d), eps=bn.eps)
            conv.weight = nn.Parameter(weight.to(conv.weight.device), requires_grad=False)
            conv.bias = nn.Parameter(bias.to(conv.weight.device), requires_grad=False)
            sequential[index + 1] = nn.Identity()
            folded += 1
    return folded
