"""Synthetic stereo scenes with exactly known disparity, for tests and demos.

A scene is a stack of textured planes seen by a rectified rig: a background plane whose disparity
may vary linearly with the image row (a tilted plane, e.g. a floor) and an optional fronto-parallel
foreground rectangle. Each plane carries a random-dot texture defined continuously in left-image
coordinates (bilinear interpolation of a seeded noise grid), so the right view is the left view
shifted by the plane's disparity, sub-pixel shifts included, and both views are exact point
samples. `make_unrectified_pair` renders the same scene through distorted, rotated cameras with
calibration (K, D, R, P) such that core.rectify gives the rectified scene back (up to resampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.rectify import CameraCalibration, undistort_points


@dataclass
class SyntheticScene:
    """A rectified pair with ground truth.

    left, right: (H, W, 3) uint8 RGB. disparity: (H, W) float32 px (x_left - x_right), NaN where
    the left pixel is occluded in the right view or falls outside it. depth: (H, W) float32 metres
    of the surface seen by every left pixel (finite everywhere). rig: the rectified camera pair.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    depth: np.ndarray
    rig: StereoRig
    seed: int = 0
    texture_cell_px: float = 1.0
    layers: list = field(default_factory=list, repr=False)

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: pixels with known, matchable disparity."""
        return np.isfinite(self.disparity)


@dataclass
class UnrectifiedPair:
    """Raw (distorted, unrectified) views of a SyntheticScene and their calibrations.

    left, right: (H, W, 3) uint8 RGB raw images. left_calibration, right_calibration: K, D, R, P
    (P = the scene rig's rectified projection matrices). scene: the rectified ground truth.
    """

    left: np.ndarray
    right: np.ndarray
    left_calibration: CameraCalibration
    right_calibration: CameraCalibration
    scene: SyntheticScene


@dataclass
class _Layer:
    """One textured plane: disparity d(v) = disparity + slope * (v - v_ref); region in left px."""

    disparity: float
    slope: float
    v_ref: float
    box: tuple[float, float, float, float] | None  # (u0, v0, u1, v1) left px, None = everywhere
    texture: np.ndarray  # (Hg, Wg, 3) float64 noise grid, tiled periodically

    def disparity_at(self, v: np.ndarray) -> np.ndarray:
        return self.disparity + self.slope * (v - self.v_ref)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.box is None:
            return np.ones(np.broadcast(u, v).shape, dtype=bool)
        u0, v0, u1, v1 = self.box
        return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def _sample_texture(texture: np.ndarray, u: np.ndarray, v: np.ndarray,
                    cell_px: float) -> np.ndarray:
    """Bilinear sample of a periodic noise grid at continuous px (u, v) -> (..., 3) float64."""
    rows, cols = texture.shape[:2]
    x = np.asarray(u, dtype=np.float64) / cell_px
    y = np.asarray(v, dtype=np.float64) / cell_px
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    c0 = x0.astype(np.int64) % cols
    r0 = y0.astype(np.int64) % rows
    c1 = (c0 + 1) % cols
    r1 = (r0 + 1) % rows
    top = texture[r0, c0] * (1 - fx) + texture[r0, c1] * fx
    bottom = texture[r1, c0] * (1 - fx) + texture[r1, c1] * fx
    return top * (1 - fy) + bottom * fy


def _nearest_layer(layers: list[_Layer], u: np.ndarray, v: np.ndarray,
                   view: str) -> tuple[np.ndarray, np.ndarray]:
    """Index of the visible layer at view px (u, v), and the left-image u of that surface point."""
    best = np.full(u.shape, -1, dtype=np.int64)
    best_disparity = np.full(u.shape, -np.inf)
    best_u_left = np.array(u, dtype=np.float64, copy=True)
    for index, layer in enumerate(layers):
        disparity = np.broadcast_to(layer.disparity_at(v), u.shape)
        u_left = u + disparity if view == "right" else u
        hit = layer.contains(u_left, v) & (disparity > best_disparity)
        best[hit] = index
        best_disparity[hit] = disparity[hit]
        best_u_left[hit] = u_left[hit]
    return best, best_u_left


def _render(layers: list[_Layer], u: np.ndarray, v: np.ndarray, view: str,
            cell_px: float) -> np.ndarray:
    """Intensities (..., 3) float64 in [0, 255] of the view at continuous px (u, v)."""
    index, u_left = _nearest_layer(layers, u, v, view)
    image = np.zeros(u.shape + (3,), dtype=np.float64)
    for i, layer in enumerate(layers):
        hit = index == i
        if np.any(hit):
            image[hit] = _sample_texture(layer.texture, u_left[hit], v[hit], cell_px)
    return image


def _to_uint8(image: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    if noise_std > 0:
        image = image + rng.normal(0.0, noise_std, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _left_disparity(layers: list[_Layer], u: np.ndarray, v: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(disparity (H, W) float64 px of the layer each left pixel sees, matchable bool mask).

    A left pixel is matchable when its point lies inside the right image and the right view
    sees the same layer there (otherwise it is half-occluded)."""
    index, _ = _nearest_layer(layers, u, v, "left")
    disparity = np.empty(u.shape, dtype=np.float64)
    for i, layer in enumerate(layers):
        hit = index == i
        disparity[hit] = np.broadcast_to(layer.disparity_at(v), u.shape)[hit]
    u_right = u - disparity
    index_right, _ = _nearest_layer(layers, u_right, v, "right")
    width = u.shape[1]
    return disparity, (u_right >= 0) & (u_right <= width - 1) & (index_right == index)


def make_scene(height: int = 120, width: int = 160, *, background_disparity: float = 6.5,
               background_slope: float = 0.0, foreground_disparity: float | None = 17.25,
               foreground_box: tuple[float, float, float, float] | None = None,
               fx: float = 200.0, fy: float | None = None, baseline_m: float = 0.1,
               cx_offset: float = 0.0, texture_cell_px: float = 1.0, noise_std: float = 0.0,
               seed: int = 0) -> SyntheticScene:
    """Render a rectified random-dot pair with exactly known disparity.

    background_disparity: px at the middle row; background_slope: px per row (a tilted plane).
    foreground_disparity: px of a fronto-parallel rectangle (None = no foreground);
    foreground_box: (u0, v0, u1, v1) in left px, default the central third.
    fx, fy: px; baseline_m: metres; cx_offset = cx_left - cx_right px (disparities include it,
    depth = fx * B / (d - cx_offset)). texture_cell_px: noise grid spacing (>= 1 px gives texture
    that survives resampling). noise_std: per-view Gaussian intensity noise. Deterministic in seed.
    """
    if height < 8 or width < 8:
        raise ValueError(f"scene must be at least 8x8 px, got {height}x{width}")
    if texture_cell_px <= 0:
        raise ValueError(f"texture_cell_px must be > 0, got {texture_cell_px}")
    fy = fx if fy is None else fy
    cx_left = (width - 1) / 2.0
    rig = StereoRig(fx=fx, fy=fy, cx_left=cx_left, cx_right=cx_left - cx_offset,
                    cy=(height - 1) / 2.0, baseline_m=baseline_m, width=width, height=height)
    rng = np.random.default_rng(seed)
    rows = int(np.ceil(height * 2 / texture_cell_px)) + 4
    cols = int(np.ceil(width * 2 / texture_cell_px)) + 4

    def texture() -> np.ndarray:
        return rng.uniform(20.0, 235.0, (rows, cols, 3))

    v_ref = (height - 1) / 2.0
    layers = [_Layer(float(background_disparity), float(background_slope), v_ref, None,
                     texture())]
    if foreground_disparity is not None:
        if foreground_box is None:
            foreground_box = (width / 3.0, height / 3.0, 2.0 * width / 3.0, 2.0 * height / 3.0)
        layers.append(_Layer(float(foreground_disparity), 0.0, v_ref,
                             tuple(float(x) for x in foreground_box), texture()))
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    for layer in layers:
        lowest = layer.disparity_at(v).min()
        if lowest - cx_offset <= 0:
            raise ValueError(f"layer disparity {lowest:.3f} px is not beyond cx_offset "
                             f"{cx_offset} px: the plane would be at or behind infinity")
    left = _render(layers, u, v, "left", texture_cell_px)
    right = _render(layers, u, v, "right", texture_cell_px)

    disparity, matchable = _left_disparity(layers, u, v)
    depth = fx * baseline_m / (disparity - cx_offset)
    ground_truth = np.where(matchable, disparity, np.nan).astype(np.float32)
    return SyntheticScene(left=_to_uint8(left, rng, noise_std),
                          right=_to_uint8(right, rng, noise_std), disparity=ground_truth,
                          depth=depth.astype(np.float32), rig=rig, seed=seed,
                          texture_cell_px=texture_cell_px, layers=layers)


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    rotation, _ = cv2.Rodrigues(np.array([rx, ry, rz], dtype=np.float64))
    return rotation


def make_unrectified_pair(scene: SyntheticScene | None = None, *,
                          distortion: tuple[float, ...] = (-0.12, 0.03, 0.001, -0.0015, 0.0),
                          rotation_deg: float = 1.5, focal_scale: float = 1.03,
                          principal_shift_px: tuple[float, float] = (2.5, -1.5),
                          texture_cell_px: float = 2.0, **scene_options) -> UnrectifiedPair:
    """Render a scene through distorted, slightly rotated raw cameras.

    scene: a scene from make_scene (built with texture_cell_px and scene_options when None).
    distortion: plumb_bob (k1, k2, p1, p2, k3) for both cameras. rotation_deg: magnitude of the
    rectifying rotations R (opposite small rotations per camera). focal_scale, principal_shift_px:
    how the raw K differs from the rectified P. The raw views are exact point samples of the scene;
    rectifying them with core.rectify.Rectifier(left_calibration, right_calibration, W, H)
    reproduces scene.left/right up to bilinear resampling and a black border.
    """
    if scene is None:
        scene = make_scene(texture_cell_px=texture_cell_px, **scene_options)
    if not scene.layers:
        raise ValueError("scene has no layers (build it with make_scene)")
    rig = scene.rig
    cell_px = scene.texture_cell_px
    height, width = rig.height, rig.width
    P_left, P_right = rig.projection_matrices()
    angle = np.deg2rad(rotation_deg)
    calibrations = []
    images = []
    for view, sign, P in (("left", 1.0, P_left), ("right", -1.0, P_right)):
        K = np.array([[rig.fx * focal_scale, 0.0, P[0, 2] + sign * principal_shift_px[0]],
                      [0.0, rig.fy * focal_scale, rig.cy + principal_shift_px[1]],
                      [0.0, 0.0, 1.0]])
        R = _rotation(sign * 0.3 * angle, sign * angle, -sign * 0.2 * angle)
        D = np.asarray(distortion, dtype=np.float64)
        calibration = CameraCalibration.create(K, D, R, P, name=view)
        # Raw pixel -> rectified pixel (inverse of what the rectify maps compute), then sample
        # the continuous scene there.
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        raw = np.stack([u.ravel(), v.ravel()], axis=1)
        rect = undistort_points(raw, calibration)
        image = _render(scene.layers, rect[:, 0].reshape(height, width),
                        rect[:, 1].reshape(height, width), view, cell_px)
        calibrations.append(calibration)
        images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return UnrectifiedPair(left=images[0], right=images[1], left_calibration=calibrations[0],
                           right_calibration=calibrations[1], scene=scene)
