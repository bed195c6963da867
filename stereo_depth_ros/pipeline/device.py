"""The pipeline's stages as torch operations, so a frame stays on the GPU from upload to outputs.

Each stage reproduces its host counterpart (cv2 / core.geometry) on a torch device:
- `DeviceRemap`: cv2.remap(INTER_LINEAR, BORDER_CONSTANT 0) from cv2's own fixed-point maps, so
  the sample positions and the 5-bit weights are the same (results within one grey level, from
  cv2's integer rounding);
- `DeviceAreaResize`: cv2.resize(INTER_AREA) as two matrix products whose weights come from cv2
  itself (resizing identity images), within one grey level;
- `depth_from_disparity`, `clip_depth`, `points_from_depth`: the float32 arithmetic of
  core.geometry, bit for bit;
- `HostCopies`: the outputs copied back through reused pinned buffers, one wait for all.

They run on the CPU as well (torch CPU tensors), which is how they are tested without a GPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stereo_depth_ros.core.camera import StereoRig

_FRACTION_BITS = 5                         # cv2's INTER_BITS: 1/32 px sample positions
_FRACTION_MASK = (1 << _FRACTION_BITS) - 1


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """Round half up and saturate to uint8 (cv2's fixed-point rounding)."""
    return values.add_(0.5).floor_().clamp_(0.0, 255.0).to(torch.uint8)


class DeviceRemap:
    """Bilinear remap of one camera's images on a torch device, from cv2's fixed-point maps.

    map1: (H, W, 2) int16 integer source column and row; map2: (H, W) uint16 fractions
    (row fraction * 32 + column fraction, in 1/32 px), as cv2.initUndistortRectifyMap(CV_16SC2)
    returns them. source_size: (height, width) of the raw image. Source pixels outside the
    image read as 0 (BORDER_CONSTANT).
    """

    def __init__(self, map1: np.ndarray, map2: np.ndarray, source_size: tuple[int, int],
                 device: torch.device) -> None:
        src_h, src_w = source_size
        self.source_size = (int(src_h), int(src_w))
        self.size = tuple(map2.shape)
        x0 = map1[..., 0].astype(np.int64).ravel()
        y0 = map1[..., 1].astype(np.int64).ravel()
        fractions = map2.astype(np.int64).ravel()
        ax = (fractions & _FRACTION_MASK).astype(np.float32) / (1 << _FRACTION_BITS)
        ay = (fractions >> _FRACTION_BITS).astype(np.float32) / (1 << _FRACTION_BITS)
        indices, weights = [], []
        for dy, wy in ((0, 1.0 - ay), (1, ay)):
            for dx, wx in ((0, 1.0 - ax), (1, ax)):
                x, y = x0 + dx, y0 + dy
                inside = (x >= 0) & (x < src_w) & (y >= 0) & (y < src_h)
                indices.append(np.clip(y, 0, src_h - 1) * src_w + np.clip(x, 0, src_w - 1))
                weights.append(np.where(inside, wy * wx, 0.0).astype(np.float32))
        self.indices = torch.from_numpy(np.stack(indices)).to(device)       # (4, H*W)
        self.weights = torch.from_numpy(np.stack(weights)).to(device)       # (4, H*W)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(h, w) or (h, w, C) uint8 on the device -> (H, W[, C]) uint8."""
        if tuple(image.shape[:2]) != self.source_size:
            raise ValueError(f"image has shape {tuple(image.shape)}, expected "
                             f"{self.source_size} from the calibration")
        channels = image.shape[2] if image.dim() == 3 else 1
        flat = image.reshape(-1, channels).float()
        out = flat[self.indices[0]] * self.weights[0].unsqueeze(1)
        for k in range(1, 4):
            out.addcmul_(flat[self.indices[k]], self.weights[k].unsqueeze(1))
        shape = (*self.size, channels) if image.dim() == 3 else self.size
        return _to_uint8(out).view(shape)


def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 weights of cv2's INTER_AREA along one axis (from cv2 itself)."""
    eye = np.eye(size_in, dtype=np.float32)
    return cv2.resize(eye, (size_in, size_out), interpolation=cv2.INTER_AREA)


class DeviceAreaResize:
    """cv2.resize(..., INTER_AREA) of uint8 images (downscaling) as two matrix products.

    source_size, target_size: (height, width).
    """

    def __init__(self, source_size: tuple[int, int], target_size: tuple[int, int],
                 device: torch.device) -> None:
        self.source_size = tuple(source_size)
        self.target_size = tuple(target_size)
        self.rows = torch.from_numpy(area_weights(source_size[0], target_size[0])).to(device)
        self.cols = torch.from_numpy(area_weights(source_size[1], target_size[1])).to(device)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(h, w[, C]) uint8 -> (h', w'[, C]) uint8."""
        values = image.float()
        if values.dim() == 2:
            values = values.unsqueeze(-1)
        height, width, channels = values.shape
        rows = self.rows @ values.reshape(height, width * channels)        # (h', w * C)
        rows = rows.view(-1, width, channels).permute(0, 2, 1)             # (h', C, w)
        out = (rows @ self.cols.t()).permute(0, 2, 1).contiguous()        # (h', w', C)
        out = _to_uint8(out)
        return out[..., 0] if image.dim() == 2 else out


def depth_from_disparity(disparity: torch.Tensor, rig: StereoRig) -> torch.Tensor:
    """core.geometry.disparity_to_depth on a tensor: fx * B / (d - cx_offset), NaN invalid."""
    focal_baseline = float(np.float32(rig.fx * rig.baseline_m))
    adjusted = disparity - float(np.float32(rig.cx_offset))
    valid = torch.isfinite(adjusted) & (adjusted > 0)
    depth = torch.full_like(adjusted, float("nan"))
    return torch.where(valid, focal_baseline / adjusted, depth)


def trusted(disparity: torch.Tensor, confidence: torch.Tensor | None,
            sigma: torch.Tensor | None, options, cx_offset: float,
            withheld: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """core.uncertainty.trusted on tensors, applied: (disparity, sigma) with NaN where a pixel
    fails options.confidence_threshold, options.max_relative_uncertainty or
    options.max_disparity_uncertainty (0 = off; the relative limit at full resolution, compared
    with options.input_scale * sigma; the other with sigma), or is in `withheld` ((H, W) bool
    tensor, e.g. `fattened`, `occluded`, or None)."""
    keep = None
    if confidence is not None and options.confidence_threshold > 0:
        keep = confidence >= options.confidence_threshold
    if sigma is not None and options.max_relative_uncertainty > 0:
        adjusted = disparity - float(np.float32(cx_offset))
        scale = float(np.float32(options.input_scale))
        limit = float(np.float32(options.max_relative_uncertainty))
        within = (adjusted > 0) & (sigma * scale <= adjusted * limit)
        keep = within if keep is None else keep & within
    if sigma is not None and options.max_disparity_uncertainty > 0:
        within = sigma <= float(np.float32(options.max_disparity_uncertainty))
        keep = within if keep is None else keep & within
    if withheld is not None:
        keep = ~withheld if keep is None else keep & ~withheld
    nan = torch.full_like(disparity, float("nan"))
    if keep is not None:
        disparity = torch.where(keep, disparity, nan)
    if sigma is not None:
        sigma = torch.where(torch.isfinite(disparity), sigma, nan)
    return disparity, sigma


def texture_sum(left: torch.Tensor, radius: int) -> torch.Tensor:
    """core.fattening.texture_sum on a (H, W[, 3]) uint8 tensor: (H, W) int64, exactly."""
    grey = left.to(torch.int64)
    grey = grey.sum(dim=2) if grey.dim() == 3 else grey * 3
    padded = torch.nn.functional.pad(grey[None, None].double(), (1, 1, 1, 1),
                                     mode="replicate")[0, 0].to(torch.int64)
    gradient = ((padded[1:-1, 2:] - padded[1:-1, :-2]).abs()
                + (padded[2:, 1:-1] - padded[:-2, 1:-1]).abs())
    size = 2 * radius + 1
    padded = torch.nn.functional.pad(gradient[None, None].double(), (radius,) * 4,
                                     mode="replicate")[0, 0].to(torch.int64)
    integral = torch.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=torch.int64,
                           device=left.device)
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    return (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])


def fattened(left: torch.Tensor, disparity: torch.Tensor, cx_offset: float) -> torch.Tensor:
    """core.fattening.fattened on tensors (the same integers and float32 comparisons): (H, W)
    bool tensor of the pixels of a fattened band."""
    from stereo_depth_ros.core import fattening as rule

    radius = rule.TEXTURE_RADIUS_PX
    limit = int(round(rule.TEXTURE_THRESHOLD * 3 * (2 * radius + 1) ** 2))
    flat = texture_sum(left, radius) < limit
    d = torch.nan_to_num(disparity.float(), nan=0.0)
    k = rule.JUMP_SPAN_PX
    padded = torch.cat([d[:, :1].expand(-1, k), d, d[:, -1:].expand(-1, k)], dim=1)
    right = padded[:, 2 * k:]
    edge = flat & (right - padded[:, :-2 * k] > float(np.float32(rule.JUMP_PX)))
    reach = right - float(np.float32(cx_offset))
    height, width = d.shape
    columns = torch.arange(width, device=d.device).expand(height, width)
    marker = torch.where(edge | ~flat, columns, torch.full_like(columns, -1))
    last = torch.cummax(marker, dim=1).values
    source = last.clamp(min=0)
    from_edge = (last >= 0) & torch.gather(edge, 1, source)
    within = (columns - source) <= torch.gather(reach, 1, source)
    return flat & from_edge & within


def occluded(disparity: torch.Tensor) -> torch.Tensor:
    """core.occlusion.occluded on a (H, W) float32 tensor (the same float32 comparisons): (H, W)
    bool tensor of the pixels the right camera cannot see."""
    from stereo_depth_ros.core.occlusion import OCCLUSION_MARGIN_PX

    d = disparity.float()
    columns = torch.arange(d.shape[1], device=d.device, dtype=torch.float32).expand_as(d)
    landing = torch.where(torch.isfinite(d), columns - d, torch.full_like(d, float("inf")))
    from_right = torch.flip(torch.cummin(torch.flip(landing, [1]), dim=1).values, [1])
    beyond = torch.cat([from_right[:, 1:], torch.full_like(d[:, :1], float("inf"))], dim=1)
    margin = float(np.float32(OCCLUSION_MARGIN_PX))
    return torch.isfinite(landing) & (beyond <= landing - margin)


def clip_depth(depth: torch.Tensor, min_m: float | None, max_m: float | None) -> torch.Tensor:
    """core.geometry.clip_depth on a tensor: NaN outside [min_m, max_m] (None = no bound)."""
    keep = torch.ones_like(depth, dtype=torch.bool)
    if min_m is not None:
        keep &= depth >= float(np.float32(min_m))
    if max_m is not None:
        keep &= depth <= float(np.float32(max_m))
    return torch.where(keep, depth, torch.full_like(depth, float("nan")))


class PointProjector:
    """core.geometry.depth_to_points on a tensor, with the per-column/row rays made once per rig.
    """

    def __init__(self, rig: StereoRig, device: torch.device) -> None:
        self.rig = rig
        ray_x = ((np.arange(rig.width, dtype=np.float64) - rig.cx_left) / rig.fx)
        ray_y = ((np.arange(rig.height, dtype=np.float64) - rig.cy) / rig.fy)
        self.ray_x = torch.from_numpy(ray_x.astype(np.float32)).to(device)
        self.ray_y = torch.from_numpy(ray_y.astype(np.float32)).to(device)

    def __call__(self, depth: torch.Tensor) -> torch.Tensor:
        """(H, W) metres -> (H, W, 3) float32, NaN where depth is not finite or <= 0."""
        z = torch.where(torch.isfinite(depth) & (depth > 0), depth,
                        torch.full_like(depth, float("nan")))
        return torch.stack([z * self.ray_x[None, :], z * self.ray_y[:, None], z], dim=-1)


class HostCopies:
    """Copies tensors to host numpy arrays: on CUDA through pinned buffers reused per name, with
    non-blocking copies and one wait for all of them; the arrays returned are the caller's own.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def fetch(self, tensors: dict[str, torch.Tensor | None]) -> dict[str, np.ndarray | None]:
        present = {name: t for name, t in tensors.items() if t is not None}
        if not present or next(iter(present.values())).device.type != "cuda":
            return {name: (None if t is None else t.cpu().numpy().copy())
                    for name, t in tensors.items()}
        staged = {}
        for name, tensor in present.items():
            buffer = self._buffers.get(name)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                self._buffers[name] = buffer
            buffer.copy_(tensor, non_blocking=True)
            staged[name] = buffer
        torch.cuda.current_stream(next(iter(present.values())).device).synchronize()
        return {name: (staged[name].numpy().copy() if name in staged else None)
                for name in tensors}
