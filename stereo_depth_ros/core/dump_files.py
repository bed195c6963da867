"""The files `stereo_depth_dump` writes per frame (numpy/cv2 only): colour disparity and depth
PNGs, 16-bit millimetre depth PNG, float32 depth .npy (and depth uncertainty .npy where it is
published), PLY point cloud and a labelled montage, plus the summary entry of the frame. The
ROS side that assembles frames from the node's topics is `ros.dump_node`; the command line is
`tools.dump`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros.core.disparity_io import colorize
from stereo_depth_ros.core.geometry import depth_to_millimetres, depth_to_points


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None = None,
              binary: bool = True) -> int:
    """Write the finite points of (H, W, 3) or (N, 3) float32 metres with uint8 RGB colours.

    binary: `format binary_little_endian 1.0` (15 bytes per vertex: 3 float32 + 3 uchar), else
    `format ascii 1.0`. Returns the number of vertices written.
    """
    xyz = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = (np.full(xyz.shape, 200, dtype=np.uint8) if colors is None
           else np.asarray(colors, dtype=np.uint8).reshape(-1, 3))
    if rgb.shape != xyz.shape:
        raise ValueError(f"colours {rgb.shape} do not match points {xyz.shape}")
    keep = np.isfinite(xyz).all(axis=1)
    xyz, rgb = xyz[keep], rgb[keep]
    header = "\n".join([
        "ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment stereo_depth_ros: left optical frame (x right, y down, z forward), metres",
        f"element vertex {len(xyz)}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue",
        "end_header"]) + "\n"
    with Path(path).open("wb") as handle:
        handle.write(header.encode("ascii"))
        if binary:
            vertex = np.empty(len(xyz), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                       ("red", "u1"), ("green", "u1"),
                                                       ("blue", "u1")]))
            vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
            vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
            handle.write(vertex.tobytes())
        else:
            for (x, y, z), (r, g, b) in zip(xyz.tolist(), rgb.tolist()):
                handle.write(f"{x:.5f} {y:.5f} {z:.5f} {r} {g} {b}\n".encode("ascii"))
    return int(len(xyz))


def _robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [low, high])
    if vmax <= vmin:
        vmax = vmin + 1e-3
    return float(vmin), float(vmax)


def colorize_disparity(disparity: np.ndarray) -> np.ndarray:
    """(H, W) px, NaN invalid -> BGR uint8 (TURBO over the 1st-99th percentile, invalid black)."""
    vmin, vmax = _robust_range(disparity)
    return colorize(disparity, vmin, vmax)


def colorize_depth(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres, NaN invalid -> BGR uint8: MAGMA on -log depth, near bright, invalid black."""
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(np.isfinite(depth) & (depth > 0), -np.log(depth), np.nan)
    vmin, vmax = _robust_range(values, 2.0, 98.0)
    return colorize(values, vmin, vmax, colormap=cv2.COLORMAP_MAGMA)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    scale = max(0.4, min(out.shape[1], 1200) / 900.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def make_montage(left_rgb: np.ndarray | None, disparity_bgr: np.ndarray, depth_bgr: np.ndarray,
                 labels: tuple[str, str, str] = ("left", "disparity", "depth")) -> np.ndarray:
    """Side by side BGR image: left | colour disparity | colour depth (left grey if missing)."""
    height, width = disparity_bgr.shape[:2]
    if left_rgb is None:
        left_bgr = np.full((height, width, 3), 64, dtype=np.uint8)
    else:
        left_bgr = np.asarray(left_rgb)
        left_bgr = (cv2.cvtColor(left_bgr, cv2.COLOR_GRAY2BGR) if left_bgr.ndim == 2
                    else left_bgr[:, :, ::-1])
        if left_bgr.shape[:2] != (height, width):
            left_bgr = cv2.resize(left_bgr, (width, height), interpolation=cv2.INTER_AREA)
    depth_bgr = depth_bgr if depth_bgr.shape[:2] == (height, width) else cv2.resize(
        depth_bgr, (width, height), interpolation=cv2.INTER_NEAREST)
    panels = [_label(np.ascontiguousarray(p), text)
              for p, text in zip((left_bgr, disparity_bgr, depth_bgr), labels)]
    return np.hstack(panels)


def points_from_depth(depth_m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 points in the optical frame from depth and a 3x3 K (NaN where invalid):
    `core.geometry.depth_to_points` with K's fx, fy, cx, cy."""
    return depth_to_points(depth_m, k[0, 0], k[1, 1], k[0, 2], k[1, 2])


@dataclass
class FrameData:
    """One frame's outputs as arrays (what the ROS side hands to `write_frame`)."""

    stamp_ns: int
    disparity: np.ndarray                  # (H, W) float32 px, NaN invalid
    depth_m: np.ndarray                    # (H, W) float32 m, NaN invalid
    points: np.ndarray | None = None       # (H, W, 3) float32 m, NaN invalid
    colors: np.ndarray | None = None       # (H, W, 3) uint8 RGB for the points
    left_rgb: np.ndarray | None = None     # (H, W, 3) uint8 RGB or (H, W) mono
    depth_std_m: np.ndarray | None = None  # (H, W) float32 sigma_Z m (depth/uncertainty), NaN


def write_frame(out_dir: Path, index: int, frame: FrameData, ply: str = "binary") -> dict:
    """Write one frame's files into out_dir; return its summary entry (files and statistics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{index:06d}"
    files = {}
    disparity_bgr = colorize_disparity(frame.disparity)
    depth_bgr = colorize_depth(frame.depth_m)
    paths = {"disparity_png": out_dir / f"{prefix}_disparity.png",
             "depth_mm_png": out_dir / f"{prefix}_depth_mm.png",
             "depth_npy": out_dir / f"{prefix}_depth.npy",
             "montage_png": out_dir / f"{prefix}_montage.png"}
    cv2.imwrite(str(paths["disparity_png"]), disparity_bgr)
    cv2.imwrite(str(paths["depth_mm_png"]), depth_to_millimetres(frame.depth_m)[0])
    np.save(paths["depth_npy"], np.asarray(frame.depth_m, dtype=np.float32))
    if frame.depth_std_m is not None:
        paths["depth_uncertainty_npy"] = out_dir / f"{prefix}_depth_uncertainty.npy"
        np.save(paths["depth_uncertainty_npy"], np.asarray(frame.depth_std_m, dtype=np.float32))
    valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
    depth_valid = frame.depth_m[valid]
    stats = {"valid_fraction": float(valid.mean()) if valid.size else 0.0}
    if depth_valid.size:
        p5, p50, p95 = np.percentile(depth_valid, [5, 50, 95])
        stats.update(depth_min_m=float(depth_valid.min()), depth_p5_m=float(p5),
                     depth_median_m=float(p50), depth_p95_m=float(p95),
                     depth_max_m=float(depth_valid.max()))
    if frame.depth_std_m is not None:
        std_valid = np.asarray(frame.depth_std_m)[np.isfinite(frame.depth_std_m)]
        if std_valid.size:
            stats["depth_std_median_m"] = float(np.median(std_valid))
    disparity_valid = frame.disparity[np.isfinite(frame.disparity)]
    if disparity_valid.size:
        stats.update(disparity_min_px=float(disparity_valid.min()),
                     disparity_max_px=float(disparity_valid.max()))
    labels = ("left", "disparity (px)", "depth " + (
        f"{stats['depth_p5_m']:.1f}-{stats['depth_p95_m']:.1f} m" if depth_valid.size else ""))
    cv2.imwrite(str(paths["montage_png"]),
                make_montage(frame.left_rgb, disparity_bgr, depth_bgr, labels))
    if ply != "none" and frame.points is not None:
        paths["ply"] = out_dir / f"{prefix}_points.ply"
        stats["ply_vertices"] = write_ply(paths["ply"], frame.points, frame.colors,
                                          binary=(ply == "binary"))
    files = {key: path.name for key, path in paths.items()}
    return {"index": index, "stamp_ns": int(frame.stamp_ns), "files": files, **stats}
