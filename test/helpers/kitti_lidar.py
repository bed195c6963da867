"""The LiDAR test bench: a small KITTI raw drive whose ground truth is known exactly (Velodyne
scans of fronto-parallel planes through a known, non-trivial calibration; optional OXTS), for the
lidar evaluation, kitti2bag and live-evaluation tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from helpers.kitti import LEFT_STAMPS, RIGHT_STAMPS, _write, random_dot_pair


# ============================================================== LiDAR test bench (raw drive)
#
# A small drive whose ground truth is known exactly: the rectified colour cameras look at
# fronto-parallel planes (horizontal bands of rows, one depth each, integer disparities), and the
# Velodyne scans are points sampled on the same planes (plus points off the image and behind the
# camera), written in Velodyne coordinates through a known, non-trivial calibration.

LIDAR_FX = 200.0
LIDAR_CX, LIDAR_CY = 96.0, 48.0
LIDAR_BASELINE_M = 0.54                      # fx * B = 108 px m
CAM2_OFFSET_M = (0.06, 0.001, 0.003)         # t_2 = K^-1 P_rect_02[:, 3]: not only along x
BAND_DISPARITIES = (2, 4, 8, 16)             # rows top to bottom: 54, 27, 13.5, 6.75 m
VELO_OFFSETS_NS = (-4_000_000, 11_000_000, -23_000_000, 7_000_000)
"""Scan stamp minus left camera stamp, per frame (KITTI's are a few ms to tens of ms apart)."""


def _rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)[0]


R_RECT_00 = _rotation((0.3, 1.0, -0.2), 0.012)
# Velodyne (x forward, y left, z up) -> unrectified camera 0 (x right, y down, z forward), tilted
VELO_TO_CAM0_R = _rotation((1.0, 0.2, 0.1), 0.02) @ np.array([[0.0, -1.0, 0.0],
                                                             [0.0, 0.0, -1.0],
                                                             [1.0, 0.0, 0.0]])
VELO_TO_CAM0_T = np.array([-0.0041, -0.0763, -0.2718])


def kitti_timestamp_text(ns: int) -> str:
    """ns since the epoch -> KITTI's 'YYYY-MM-DD hh:mm:ss.nnnnnnnnn' (UTC)."""
    import datetime as dt
    seconds, fraction = divmod(int(ns), 10**9)
    return (dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            + f".{fraction:09d}")


def lidar_k() -> np.ndarray:
    return np.array([[LIDAR_FX, 0.0, LIDAR_CX], [0.0, LIDAR_FX, LIDAR_CY], [0.0, 0.0, 1.0]])


def lidar_projections() -> tuple[np.ndarray, np.ndarray]:
    """(P_rect_02, P_rect_03) of the LiDAR drive: K [I | t_2] and K [I | t_2 - (B, 0, 0)]."""
    k = lidar_k()
    t2 = np.array(CAM2_OFFSET_M)
    t3 = t2 - np.array([LIDAR_BASELINE_M, 0.0, 0.0])
    return np.hstack([k, (k @ t2)[:, None]]), np.hstack([k, (k @ t3)[:, None]])


def camera_from_velodyne() -> np.ndarray:
    """T_cam2_velo the tests expect: [I | t_2] @ R_rect_00 @ [R | T] (4x4)."""
    velo_to_cam0 = np.eye(4)
    velo_to_cam0[:3, :3], velo_to_cam0[:3, 3] = VELO_TO_CAM0_R, VELO_TO_CAM0_T
    rect = np.eye(4)
    rect[:3, :3] = R_RECT_00
    offset = np.eye(4)
    offset[:3, 3] = CAM2_OFFSET_M
    return offset @ rect @ velo_to_cam0


def _calib_line(key: str, values) -> str:
    return f"{key}: " + " ".join(f"{v:.12e}" for v in np.asarray(values, float).reshape(-1))


def lidar_calib_texts() -> tuple[str, str]:
    """(calib_cam_to_cam.txt, calib_velo_to_cam.txt) of the LiDAR drive."""
    p2, p3 = lidar_projections()
    cam_to_cam = "\n".join([
        "calib_time: 09-Jan-2012 13:57:47",
        _calib_line("R_rect_00", R_RECT_00),
        _calib_line("P_rect_00", np.hstack([lidar_k(), np.zeros((3, 1))])),
        _calib_line("S_rect_02", [192, 96]),
        _calib_line("R_rect_02", np.eye(3)),
        _calib_line("P_rect_02", p2),
        _calib_line("S_rect_03", [192, 96]),
        _calib_line("P_rect_03", p3),
    ]) + "\n"
    velo_to_cam = "\n".join([
        "calib_time: 15-Mar-2012 11:37:16",
        _calib_line("R", VELO_TO_CAM0_R),
        _calib_line("T", VELO_TO_CAM0_T),
        "delta_f: 0.000000e+00 0.000000e+00",
        "delta_c: 0.000000e+00 0.000000e+00",
    ]) + "\n"
    return cam_to_cam, velo_to_cam


@dataclass
class LidarDrive:
    """What make_lidar_drive wrote: the drive folder, the true depth image of the left camera
    (every frame looks at the same planes), the scans in Velodyne coordinates (N, 4) and, per
    scan, the true camera-frame points, plus the stamps."""

    drive: Path
    depth_m: np.ndarray
    scans: list[np.ndarray]
    camera_points: list[np.ndarray]
    left_stamps_ns: list[int]
    scan_stamps_ns: list[int]
    bands: list[tuple[int, int, float]]          # (first row, last row, depth m)

    @property
    def size(self) -> tuple[int, int]:
        return self.depth_m.shape


def band_layout(height: int) -> list[tuple[int, int, float]]:
    """(first row, last row, depth) per band, top to bottom (depth = fx * B / disparity)."""
    rows = height // len(BAND_DISPARITIES)
    return [(i * rows, (i + 1) * rows - 1 if i < len(BAND_DISPARITIES) - 1 else height - 1,
             LIDAR_FX * LIDAR_BASELINE_M / d) for i, d in enumerate(BAND_DISPARITIES)]


def lidar_scene_images(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) BGR images of the band planes: band rows of right(x) = left(x + d)."""
    left = np.zeros((height, width, 3), np.uint8)
    right = np.zeros_like(left)
    for index, ((first, last, _), d) in enumerate(zip(band_layout(height), BAND_DISPARITIES)):
        rows = last - first + 1
        band_left, band_right = random_dot_pair(rows, width, shift=d, seed=seed * 10 + index)
        left[first:last + 1], right[first:last + 1] = band_left, band_right
    return left, right


def sample_scan(rng, height: int, width: int, per_band: int = 60, off_image: int = 20,
                behind: int = 15) -> np.ndarray:
    """(N, 3) camera-frame points on the band planes: `per_band` inside the image per band (their
    nearest pixel is in the band), `off_image` on the planes' extension left and right of the
    image, `behind` behind the camera."""
    k_inv = np.linalg.inv(lidar_k())
    points = []
    for first, last, depth in band_layout(height):
        u = rng.uniform(-0.49, width - 0.51, per_band)
        v = rng.uniform(first - 0.49, last + 0.49, per_band)
        rays = np.stack([u, v, np.ones_like(u)], axis=1) @ k_inv.T
        points.append(rays * depth)
        side = rng.choice([-1.0, 1.0], off_image // len(BAND_DISPARITIES) + 1)
        u_off = np.where(side < 0, rng.uniform(-60, -1, side.size),
                         rng.uniform(width + 1, width + 60, side.size))
        v_off = rng.uniform(first, last, side.size)
        points.append(np.stack([u_off, v_off, np.ones_like(u_off)], axis=1) @ k_inv.T * depth)
    back = rng.uniform(-10, 10, (behind, 3))
    back[:, 2] = rng.uniform(-30, -1, behind)
    points.append(back)
    return np.concatenate(points)


def make_lidar_drive(root: Path, n_frames: int = 3, size: tuple[int, int] = (96, 192),
                     per_band: int = 60) -> LidarDrive:
    """KITTI raw synced drive with Velodyne scans of known planes; see the section comment."""
    height, width = size
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0002_sync"
    date.mkdir(parents=True, exist_ok=True)
    cam_to_cam, velo_to_cam = lidar_calib_texts()
    (date / "calib_cam_to_cam.txt").write_text(cam_to_cam)
    (date / "calib_velo_to_cam.txt").write_text(velo_to_cam)
    from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp

    velo_from_camera = np.linalg.inv(camera_from_velodyne())
    rng = np.random.default_rng(2024)
    left_stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:n_frames]]
    scan_stamps = [t + VELO_OFFSETS_NS[k] for k, t in enumerate(left_stamps)]
    scans, camera_points = [], []
    for k in range(n_frames):
        left, right = lidar_scene_images(height, width, seed=k)
        _write(drive / "image_02" / "data" / f"{k:010d}.png", left)
        _write(drive / "image_03" / "data" / f"{k:010d}.png", right)
        cam = sample_scan(rng, height, width, per_band=per_band)
        velo = cam @ velo_from_camera[:3, :3].T + velo_from_camera[:3, 3]
        scan = np.hstack([velo, rng.uniform(0, 1, (len(velo), 1))]).astype("<f4")
        path = drive / "velodyne_points" / "data" / f"{k:010d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(scan.tobytes())
        scans.append(scan)
        camera_points.append(cam)

    (drive / "image_02" / "timestamps.txt").write_text("\n".join(LEFT_STAMPS[:n_frames]) + "\n")
    (drive / "image_03" / "timestamps.txt").write_text("\n".join(RIGHT_STAMPS[:n_frames]) + "\n")
    (drive / "velodyne_points" / "timestamps.txt").write_text(
        "\n".join(kitti_timestamp_text(t) for t in scan_stamps) + "\n")
    depth = np.zeros(size, np.float32)
    for first, last, value in band_layout(height):
        depth[first:last + 1] = value
    return LidarDrive(drive, depth, scans, camera_points, left_stamps, scan_stamps,
                      band_layout(height))


OXTS_LINE = ("49.015003823272 8.4342971002335 116.43032836914 0.035752 0.00903 -1.0636 "
             "-2.5 -10.3 10.6 0.12 -0.02 0.1 0.2 9.8 0.3 -0.4 9.7 0.01 -0.02 0.03 0.011 "
             "-0.021 0.031 0.35 0.05 4 10 4 4 5")
IMU_TO_VELO_R = _rotation((0.0, 0.0, 1.0), 0.014)
IMU_TO_VELO_T = np.array([-0.8086759, 0.3195559, -0.7997231])


def add_oxts(drive: Path, n_frames: int, offsets_ns=(2_000_000, -3_000_000, 5_000_000,
                                                     1_000_000)) -> list[int]:
    """oxts/data/*.txt (OXTS_LINE with the yaw changed per frame), oxts/timestamps.txt and
    calib_imu_to_velo.txt; returns the OXTS stamps."""
    from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp

    stamps = [parse_kitti_timestamp(s) + offsets_ns[k] for k, s in
              enumerate(LEFT_STAMPS[:n_frames])]
    for k in range(n_frames):
        values = OXTS_LINE.split()
        values[5] = f"{-1.0636 + 0.1 * k:.4f}"
        path = drive / "oxts" / "data" / f"{k:010d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(values) + "\n")
    (drive / "oxts" / "timestamps.txt").write_text(
        "\n".join(kitti_timestamp_text(t) for t in stamps) + "\n")
    (drive.parent / "calib_imu_to_velo.txt").write_text(
        "calib_time: 25-May-2012 16:47:16\n" + _calib_line("R", IMU_TO_VELO_R) + "\n"
        + _calib_line("T", IMU_TO_VELO_T) + "\n")
    return stamps
