"""LiDAR points against a depth image: KITTI scan files, point cloud buffers, projection, sampling.

Pure (numpy only). A scan is compared with a depth image of the camera it is projected into:

1. p_cam = T_cam_lidar @ p_lidar (the static LiDAR -> camera transform, `core.transforms`);
2. points with z <= `min_depth_m` are behind (or too close to) the camera and counted as such;
3. (u, v) = K @ p_cam / z with the depth image's own intrinsics K (its camera_info P[:, :3]; for a
   rectified camera the image is K [I | 0] in its own optical frame). Pixel centres are at
   integer coordinates (the camera_info convention), so a point falls into pixel
   (floor(u + 0.5), floor(v + 0.5)); points outside the W x H image are counted as outside;
4. the depth image is read at that pixel (nearest neighbour, no interpolation across depth
   edges); NaN, inf and values <= 0 are "no depth" there and the point is counted, not compared.

Motion within a scan is ignored: every point is taken as measured at the scan's stamp. KITTI's
raw Velodyne scans are not motion compensated; the scanner triggers the cameras when it faces
forward, so the part of a sweep that the camera sees is measured within about +-15 ms of the
image (a quarter of a 100 ms sweep), which at 10 m/s moves a point by up to ~0.15 m along the
driving direction. Compare at low speed or accept that floor in the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: sensor_msgs/PointField datatypes read here (the others hold no coordinates in practice).
FLOAT32, FLOAT64 = 7, 8
#: Points closer than this along the optical axis are treated as behind the camera.
DEFAULT_MIN_DEPTH_M = 0.1

XYZI_FIELDS = (("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1),
               ("intensity", 12, FLOAT32, 1))
"""(name, offset, datatype, count) of a KITTI scan as sensor_msgs/PointCloud2 (16 bytes/point)."""
XYZI_POINT_STEP = 16


class PointCloudError(ValueError):
    """A scan file or point cloud buffer cannot be read as points."""


def read_velodyne_bin(path: str | Path) -> np.ndarray:
    """A KITTI `velodyne_points/data/NNNNNNNNNN.bin`: (N, 4) float32 x, y, z (m, Velodyne frame:
    x forward, y left, z up) and reflectance in [0, 1]."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PointCloudError(f"{path}: cannot read scan ({exc.strerror})") from None
    if len(raw) % XYZI_POINT_STEP:
        raise PointCloudError(f"{path}: {len(raw)} bytes is not a whole number of 16-byte "
                              "points (float32 x, y, z, reflectance)")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 4).copy()


def pack_xyzi(points: np.ndarray) -> bytes:
    """(N, 4) x, y, z, intensity -> little-endian PointCloud2 data for XYZI_FIELDS."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise PointCloudError(f"points must be (N, 4) x, y, z, intensity, got {points.shape}")
    return np.ascontiguousarray(points, dtype="<f4").tobytes()


def xyz_from_cloud(data, fields, *, point_step: int, row_step: int, width: int, height: int,
                   is_bigendian: bool = False, source: str = "PointCloud2") -> np.ndarray:
    """(N, 3) float64 x, y, z of a PointCloud2 buffer; fields: (name, offset, datatype, count)
    tuples. x, y, z must be FLOAT32 or FLOAT64; other fields are ignored. Row padding (row_step >
    width * point_step) is skipped. Errors name the field or size that is wrong."""
    by_name = {name: (offset, datatype, count) for name, offset, datatype, count in fields}
    missing = [axis for axis in "xyz" if axis not in by_name]
    if missing:
        raise PointCloudError(f"{source}: no field {', '.join(missing)} (fields: "
                              f"{', '.join(by_name) or 'none'})")
    order = ">" if is_bigendian else "<"
    formats, offsets = [], []
    for axis in "xyz":
        offset, datatype, count = by_name[axis]
        if datatype not in (FLOAT32, FLOAT64) or count != 1:
            raise PointCloudError(f"{source}: field {axis} has datatype {datatype} x{count}; "
                                  "expected FLOAT32 (7) or FLOAT64 (8) x1")
        formats.append(order + ("f4" if datatype == FLOAT32 else "f8"))
        offsets.append(offset)
    if point_step <= 0 or any(o + np.dtype(f).itemsize > point_step
                              for o, f in zip(offsets, formats)):
        raise PointCloudError(f"{source}: point_step {point_step} does not hold the x, y, z "
                              "fields")
    if row_step < width * point_step:
        raise PointCloudError(f"{source}: row_step {row_step} < width {width} * point_step "
                              f"{point_step}")
    buffer = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview))
                           else data, dtype=np.uint8)
    if buffer.size < row_step * height:
        raise PointCloudError(f"{source}: data has {buffer.size} bytes, row_step * height = "
                              f"{row_step * height}")
    dtype = np.dtype({"names": ["x", "y", "z"], "formats": formats, "offsets": offsets,
                      "itemsize": point_step})
    rows = buffer[:row_step * height].reshape(height, row_step)[:, :width * point_step]
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)


@dataclass(frozen=True)
class Projection:
    """Where the points of a scan land in a W x H image.

    index: (M,) indices (into the scan) of the points that land inside the image;
    u, v: (M,) float64 image coordinates (pixel centres at integers); col, row: (M,) int pixel
    of each (nearest: floor(u + 0.5), floor(v + 0.5)); depth_m: (M,) float64 z in the camera
    frame;
    total: points in the scan; behind: z <= min_depth_m; outside: in front but off the image;
    not_finite: points with a NaN/inf coordinate (KITTI has none; some drivers pad with NaN).
    """

    index: np.ndarray
    u: np.ndarray
    v: np.ndarray
    col: np.ndarray
    row: np.ndarray
    depth_m: np.ndarray
    total: int
    behind: int
    outside: int
    not_finite: int

    @property
    def in_image(self) -> int:
        return int(self.index.size)


def project_points(points: np.ndarray, camera_from_lidar: np.ndarray, k: np.ndarray,
                   width: int, height: int, *,
                   min_depth_m: float = DEFAULT_MIN_DEPTH_M) -> Projection:
    """Project (N, 3+) LiDAR points (m; extra columns ignored) into an image.

    camera_from_lidar: (4, 4) T_cam_lidar; k: (3, 3) intrinsics of the image (P[:, :3] of its
    camera_info); width, height: image size in px.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise PointCloudError(f"points must be (N, 3) or wider, got shape {points.shape}")
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    transform = np.asarray(camera_from_lidar, dtype=np.float64).reshape(4, 4)
    xyz = points[:, :3]
    finite = np.all(np.isfinite(xyz), axis=1)
    cam = xyz @ transform[:3, :3].T + transform[:3, 3]
    z = cam[:, 2]
    in_front = finite & (z > min_depth_m)
    safe_z = np.where(in_front, z, 1.0)
    pixels = cam @ k.T
    u = pixels[:, 0] / safe_z
    v = pixels[:, 1] / safe_z
    col = np.floor(u + 0.5)
    row = np.floor(v + 0.5)
    inside = in_front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    index = np.flatnonzero(inside)
    return Projection(index=index, u=u[index], v=v[index], col=col[index].astype(np.int64),
                      row=row[index].astype(np.int64), depth_m=z[index], total=len(points),
                      behind=int(np.count_nonzero(finite & ~in_front)),
                      outside=int(np.count_nonzero(in_front & ~inside)),
                      not_finite=int(np.count_nonzero(~finite)))


def sample_depth(depth_m: np.ndarray, projection: Projection) -> np.ndarray:
    """(M,) float64 depth of the image at each projected point's pixel; NaN where the image has
    no depth (NaN, inf, <= 0, the REP 118 invalid values)."""
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth image must be (H, W), got shape {depth_m.shape}")
    values = depth_m[projection.row, projection.col].astype(np.float64)
    values[~np.isfinite(values) | (values <= 0)] = np.nan
    return values


@dataclass(frozen=True)
class ScanComparison:
    """A scan against a depth image: the projection and, per projected point, the image's depth
    (NaN where it has none). truth_m / estimate_m: the compared points only."""

    projection: Projection
    sampled_m: np.ndarray

    @property
    def has_depth(self) -> np.ndarray:
        return np.isfinite(self.sampled_m)

    @property
    def compared(self) -> int:
        return int(np.count_nonzero(self.has_depth))

    @property
    def no_depth(self) -> int:
        """Points inside the image where the depth image has no value."""
        return self.projection.in_image - self.compared

    @property
    def truth_m(self) -> np.ndarray:
        return self.projection.depth_m[self.has_depth]

    @property
    def estimate_m(self) -> np.ndarray:
        return self.sampled_m[self.has_depth]


def compare_scan(points: np.ndarray, depth_m: np.ndarray, k: np.ndarray,
                 camera_from_lidar: np.ndarray, *,
                 min_depth_m: float = DEFAULT_MIN_DEPTH_M) -> ScanComparison:
    """Project a scan into a depth image ((H, W) metres) and read the image at each point."""
    height, width = np.asarray(depth_m).shape[:2]
    projection = project_points(points, camera_from_lidar, k, width, height,
                                min_depth_m=min_depth_m)
    return ScanComparison(projection, sample_depth(depth_m, projection))
