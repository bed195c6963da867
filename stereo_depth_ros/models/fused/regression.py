"""Upsampling, softmax, soft-argmin and confidence a chunk of pixels at a time.

The reference (`models.regression.regress_disparity`) upsamples the (D/4, h, w) cost to a
(max_disparity, H, W) float32 volume before the softmax: 368 MB at 384x1248, written and read
several times. Here that volume never exists: the (h, w) -> (H, W) part of the trilinear
upsampling is a bilinear resize of the D/4-channel cost (the trilinear weights factor per axis),
and the D/4 -> max_disparity part is a (chunk, D/4) x (D/4, max_disparity) matrix product per
chunk of pixels, followed by the softmax, the soft-argmin, the window confidence and (when
asked) the standard deviation of that chunk's softmax, while the chunk's probabilities are in
cache.
Works on any device; on CUDA the chunk buffers stay in L2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stereo_depth_ros.models.regression import CONFIDENCE_RADIUS_PX


def interpolation_matrix(size_in: int, size_out: int, align_corners: bool) -> torch.Tensor:
    """(size_out, size_in) float32 matrix of PyTorch's 1-D linear interpolation weights.

    Made by interpolating the identity with F.interpolate itself, so the source positions and
    weights are exactly PyTorch's (align_corners True or False).
    """
    eye = torch.eye(size_in, dtype=torch.float32).unsqueeze(0)         # (1, in, in)
    mat = F.interpolate(eye, size=size_out, mode="linear", align_corners=align_corners)
    return mat[0].t().contiguous()


class ChunkedRegression:
    """Cost (B, 1, D, h, w) -> disparity (B, 1, H, W) px and confidence, in chunks of pixels.

    The confidence is the reference definition (`regression.window_confidence`): the probability
    mass of the integer levels within +-radius px of the regressed disparity.

    max_disparity: full-resolution disparity levels. align_corners: as the model.
    chunk_pixels: pixels per chunk; the two (chunk, max_disparity) float32 buffers are the only
        volume-sized memory (2 x 25 MB at the default).
    """

    def __init__(self, max_disparity: int, align_corners: bool, chunk_pixels: int = 32768,
                 radius: float = CONFIDENCE_RADIUS_PX) -> None:
        self.max_disparity = max_disparity
        self.align_corners = align_corners
        self.chunk_pixels = chunk_pixels
        self.radius = radius
        self._constants: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(self, levels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The (max_disparity, levels) level-interpolation matrix and the disparity values on
        `device`, made once (call it before capturing a CUDA graph: it copies to the device)."""
        key = (levels, str(device))
        if key not in self._constants:
            matrix = interpolation_matrix(levels, self.max_disparity, self.align_corners)
            values = torch.arange(self.max_disparity, dtype=torch.float32)
            self._constants[key] = (matrix.to(device), values.to(device))
        return self._constants[key]

    def __call__(self, cost: torch.Tensor, size: tuple[int, int], *,
                 with_confidence: bool = False, with_uncertainty: bool = False) -> tuple:
        """cost: (B, 1, D, h, w) -> disparity (B, 1, H, W) px and confidence or None; with
        `with_uncertainty` also sigma_d (B, 1, H, W) px, the softmax's standard deviation
        (`regression.disparity_std`), computed from the same chunk of probabilities."""
        batch, _, levels, _, _ = cost.shape
        height, width = size
        matrix, dvals = self.prepare(levels, cost.device)
        cost = F.interpolate(cost[:, 0].float(), size=size, mode="bilinear",
                             align_corners=self.align_corners)             # (B, D, H, W)
        disparity = cost.new_empty((batch, 1, height, width))
        confidence = cost.new_empty((batch, 1, height, width)) if with_confidence else None
        flat_cost = cost.view(batch, levels, -1)
        flat_disp = disparity.view(batch, -1)
        flat_conf = confidence.view(batch, -1) if with_confidence else None
        sigma = cost.new_empty((batch, 1, height, width)) if with_uncertainty else None
        flat_sigma = sigma.view(batch, -1) if with_uncertainty else None
        pixels = height * width
        chunk = min(pixels, self.chunk_pixels)
        logits_buffer = cost.new_empty((chunk, self.max_disparity))
        prob_buffer = cost.new_empty((chunk, self.max_disparity))
        matrix_t = matrix.t()
        for b in range(batch):
            for p0 in range(0, pixels, chunk):
                p1 = min(pixels, p0 + chunk)
                logits = logits_buffer[:p1 - p0]
                prob = prob_buffer[:p1 - p0]
                torch.mm(flat_cost[b, :, p0:p1].t(), matrix_t, out=logits)   # (n, Dmax)
                torch._softmax(logits, 1, False, out=prob)
                disp = flat_disp[b, p0:p1]
                torch.mv(prob, dvals, out=disp)
                if with_confidence:
                    flat_conf[b, p0:p1] = self._window_mass(prob, disp)
                if with_uncertainty:
                    # the logits are no longer needed: their buffer holds (d - mean)^2
                    self._std(prob, disp, dvals, logits, flat_sigma[b, p0:p1])
        if with_uncertainty:
            return disparity, confidence, sigma
        return disparity, confidence

    @staticmethod
    def _std(prob: torch.Tensor, disp: torch.Tensor, dvals: torch.Tensor,
             scratch: torch.Tensor, out: torch.Tensor) -> None:
        """out (n,) = sqrt(sum_d prob (d - disp)^2); prob, scratch (n, Dmax), disp (n,)."""
        torch.sub(dvals.unsqueeze(0), disp.unsqueeze(1), out=scratch)
        scratch.square_().mul_(prob)
        torch.sum(scratch, 1, out=out)
        out.clamp_(min=0.0).sqrt_()

    def _window_mass(self, prob: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
        """Mass of the levels d with |d - disp| <= radius; prob (n, Dmax) sums to 1 per row."""
        levels = prob.shape[1]
        span = int(2 * self.radius) + 1
        first = torch.ceil(disp - self.radius)
        candidates = first.unsqueeze(1) + torch.arange(span, dtype=disp.dtype,
                                                       device=disp.device).unsqueeze(0)
        inside = ((candidates <= (disp + self.radius).unsqueeze(1)) & (candidates >= 0)
                  & (candidates <= levels - 1))
        index = candidates.clamp(0, levels - 1).long()
        mass = (torch.gather(prob, 1, index) * inside).sum(dim=1)
        return mass.clamp_(0.0, 1.0)
