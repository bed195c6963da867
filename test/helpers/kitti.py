"""Small KITTI-format trees built by the tests: raw synced drive, stereo 2015 and stereo 2012.

Images are random-dot pairs whose right view is the left view shifted by a known number of px, so
a matcher finds that disparity and depth = fx * B / shift with the colour-camera baseline B.
The P_rect / T entries are the real 2011_09_26 ones (left P_rect_02[0,3] = +44.857 px); K, D, R are
realistic fillers that the converter must ignore for rectified images.
The LiDAR test bench (Velodyne scans of known planes, OXTS) is in helpers.kitti_lidar.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FX = 721.5377
BASELINE_M = (44.85728 + 339.5242) / 721.5377      # 0.53272 m (cam2 - cam3)
WRONG_BASELINE_M = 339.5242 / 721.5377             # 0.4706 m (P_rect_03 alone)

RAW_CALIB_TEXT = "\n".join([
    "calib_time: 09-Jan-2012 13:57:47",
    "corner_dist: 9.950000e-02",
    "S_00: 1.392000e+03 5.120000e+02",
    "K_00: 9.842439e+02 0.000000e+00 6.900000e+02 0.000000e+00 9.808141e+02 2.331966e+02 "
    "0.000000e+00 0.000000e+00 1.000000e+00",
    "D_00: -3.728755e-01 2.037299e-01 2.219027e-03 1.383707e-03 -7.233722e-02",
    "S_rect_00: 1.242000e+03 3.750000e+02",
    "P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 "
    "1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00",
    "S_rect_01: 1.242000e+03 3.750000e+02",
    "P_rect_01: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 "
    "1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00",
    "K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 "
    "0.000000e+00 0.000000e+00 1.000000e+00",
    "D_02: -3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02",
    "T_02: 5.956621e-02 2.900141e-04 2.577209e-03",
    "S_rect_02: 1.242000e+03 3.750000e+02",
    "R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 "
    "-9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01",
    "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
    "1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03",
    "K_03: 9.037596e+02 0.000000e+00 6.957519e+02 0.000000e+00 9.019653e+02 2.242509e+02 "
    "0.000000e+00 0.000000e+00 1.000000e+00",
    "D_03: -3.639558e-01 1.788651e-01 6.029694e-04 -3.922424e-04 -5.382460e-02",
    "T_03: -4.731050e-01 5.551470e-03 -5.250882e-03",
    "S_rect_03: 1.242000e+03 3.750000e+02",
    "R_rect_03: 9.998321e-01 -7.193136e-03 1.685599e-02 7.232804e-03 9.999712e-01 "
    "-2.293585e-03 -1.683901e-02 2.415116e-03 9.998553e-01",
    "P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 "
    "1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03",
]) + "\n"

# KITTI 2012 / odometry style: P0..P3, 12 numbers each
P_CALIB_TEXT = "\n".join([
    "P0: 7.215377e+02 0 6.095593e+02 0 0 7.215377e+02 1.728540e+02 0 0 0 1 0",
    "P1: 7.215377e+02 0 6.095593e+02 -3.875744e+02 0 7.215377e+02 1.728540e+02 0 0 0 1 0",
    "P2: 7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 2.163791e-01 "
    "0 0 1 2.745884e-03",
    "P3: 7.215377e+02 0 6.095593e+02 -3.395242e+02 0 7.215377e+02 1.728540e+02 2.199936e+00 "
    "0 0 1 2.729905e-03",
]) + "\n"

LEFT_STAMPS = ["2011-09-26 13:02:25.964389445", "2011-09-26 13:02:26.068252802",
               "2011-09-26 13:02:26.172100353", "2011-09-26 13:02:26.275973380"]
# the right camera's own timestamps differ slightly (as in the real drives)
RIGHT_STAMPS = ["2011-09-26 13:02:25.964381504", "2011-09-26 13:02:26.068245506",
                "2011-09-26 13:02:26.172093281", "2011-09-26 13:02:26.275965942"]


def random_dot_pair(height: int, width: int, shift: int, seed: int = 0,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) uint8 BGR images with right(x) = left(x + shift): disparity `shift` px."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 2 + 1, (width + shift) // 2 + 1, 3),
                          dtype=np.uint8)
    wide = cv2.resize(coarse, ((width + shift) // 2 * 2 + 2, height // 2 * 2 + 2),
                      interpolation=cv2.INTER_NEAREST)[:height, : width + shift]
    wide = cv2.GaussianBlur(wide, (3, 3), 0)
    left = np.ascontiguousarray(wide[:, :width])
    right = np.ascontiguousarray(wide[:, shift: shift + width])
    return left, right


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def make_raw_drive(root: Path, n_frames: int = 3, size: tuple[int, int] = (96, 160),
                   shift: int = 8) -> Path:
    """KITTI raw synced drive under root; returns the drive folder."""
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    date.mkdir(parents=True, exist_ok=True)
    (date / "calib_cam_to_cam.txt").write_text(RAW_CALIB_TEXT)
    for k in range(n_frames):
        left, right = random_dot_pair(*size, shift=shift, seed=k)
        _write(drive / "image_02" / "data" / f"{k:010d}.png", left)
        _write(drive / "image_03" / "data" / f"{k:010d}.png", right)
    (drive / "image_02" / "timestamps.txt").write_text("\n".join(LEFT_STAMPS[:n_frames]) + "\n")
    (drive / "image_03" / "timestamps.txt").write_text("\n".join(RIGHT_STAMPS[:n_frames]) + "\n")
    return drive


def gt_png(height: int, width: int, shift: int) -> np.ndarray:
    """KITTI uint16 ground truth: shift * 256 everywhere except an invalid (0) left border."""
    gt = np.full((height, width), shift * 256, dtype=np.uint16)
    gt[:, :shift] = 0
    return gt


def make_stereo_2015(root: Path, scenes: int = 2, size: tuple[int, int] = (96, 160),
                     shift: int = 8) -> Path:
    """KITTI stereo 2015 training split (image_2, image_3, disp_occ_0, calib_cam_to_cam)."""
    split = root / "training"
    for scene in range(scenes):
        for frame in (10, 11):
            left, right = random_dot_pair(*size, shift=shift, seed=10 * scene + frame)
            _write(split / "image_2" / f"{scene:06d}_{frame}.png", left)
            _write(split / "image_3" / f"{scene:06d}_{frame}.png", right)
        _write(split / "disp_occ_0" / f"{scene:06d}_10.png", gt_png(*size, shift))
        (split / "calib_cam_to_cam").mkdir(exist_ok=True)
        (split / "calib_cam_to_cam" / f"{scene:06d}.txt").write_text(RAW_CALIB_TEXT)
    return split


def make_stereo_2012(root: Path, scenes: int = 2, size: tuple[int, int] = (96, 160),
                     shift: int = 8) -> Path:
    """KITTI stereo 2012 training split (colored_0, colored_1, disp_occ, calib with P0..P3)."""
    split = root / "training"
    for scene in range(scenes):
        left, right = random_dot_pair(*size, shift=shift, seed=scene)
        _write(split / "colored_0" / f"{scene:06d}_10.png", left)
        _write(split / "colored_1" / f"{scene:06d}_10.png", right)
        _write(split / "disp_occ" / f"{scene:06d}_10.png", gt_png(*size, shift))
        (split / "calib").mkdir(exist_ok=True)
        (split / "calib" / f"{scene:06d}.txt").write_text(P_CALIB_TEXT)
    return split


def _calib_value(key: str) -> np.ndarray:
    for line in RAW_CALIB_TEXT.splitlines():
        name, _, values = line.partition(":")
        if name == key:
            return np.array([float(v) for v in values.split()], dtype=np.float64)
    raise KeyError(key)


KITTI2BAG_IMU_FROM_BASE_T = (-2.71 / 2.0 - 0.05, 0.32, 0.93)
KITTI2BAG_VELO_FROM_IMU_T = (-0.8086759, 0.3195559, -0.7997231)
KITTI2BAG_SCAN_OFFSET_NS = 5_000_000


def kitti2bag_static_edges() -> list[tuple[str, str, np.ndarray]]:
    """(parent, child, T_parent_child) of the synthetic kitti2bag bag's /tf_static, laid out as
    kitti2bag writes them: base_link -> imu_link -> velo_link and imu_link -> camera_*; the camera
    transforms are chosen so that T_camera_color_left_velo_link = camera_from_velodyne()."""
    from helpers.kitti_lidar import IMU_TO_VELO_R, LIDAR_BASELINE_M, camera_from_velodyne

    base_imu = np.eye(4)
    base_imu[:3, 3] = KITTI2BAG_IMU_FROM_BASE_T
    velo_imu = np.eye(4)
    velo_imu[:3, :3] = IMU_TO_VELO_R
    velo_imu[:3, 3] = KITTI2BAG_VELO_FROM_IMU_T
    imu_velo = np.linalg.inv(velo_imu)
    imu_left = imu_velo @ np.linalg.inv(camera_from_velodyne())
    left_right = np.eye(4)
    left_right[0, 3] = LIDAR_BASELINE_M
    return [("base_link", "imu_link", base_imu), ("imu_link", "velo_link", imu_velo),
            ("imu_link", "camera_color_left", imu_left),
            ("imu_link", "camera_color_right", imu_left @ left_right)]


def make_kitti2bag_ros1(path: Path, n_frames: int = 2, size: tuple[int, int] = (96, 160),
                        shift: int = 8, scan_points: int = 40) -> Path:
    """A ROS 1 bag laid out like tomas789/kitti2bag's raw_synced output (colour cameras, Velodyne,
    static transforms and a GPS fix).

    Like the real tool: rectified images on `image_raw` (bgr8), camera_info with the *raw* K and a
    non-zero D, R = R_rect and P = P_rect, frame ids camera_color_left / camera_color_right, each
    camera stamped with its own timestamps.txt, a /kitti/oxts/gps/fix topic that is not part of
    the stereo pair, /kitti/velo/pointcloud (x, y, z, i in velo_link, stamped
    KITTI2BAG_SCAN_OFFSET_NS after the left camera; point k of frame f is (10 + f, k, 1)) and an
    unlatched /tf_static (kitti2bag_static_edges) written once per frame.
    """
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from stereo_depth_ros.core.transforms import quaternion_from_rotation

    ts = get_typestore(Stores.ROS1_NOETIC)
    ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms",
                                   "tf2_msgs/msg/TFMessage"))
    types = ts.types
    height, width = size

    def header(seq, stamp_ns, frame_id):
        return types["std_msgs/msg/Header"](
            seq=seq, stamp=types["builtin_interfaces/msg/Time"](
                sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def camera_info(seq, stamp_ns, frame_id, cam):
        # kitti2bag pip 1.5 swaps width and height (tomas789/kitti2bag#42): do the same
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                        width=0, do_rectify=False)
        return types["sensor_msgs/msg/CameraInfo"](
            header=header(seq, stamp_ns, frame_id), height=width, width=height,
            distortion_model="plumb_bob", D=_calib_value(f"D_{cam}"), K=_calib_value(f"K_{cam}"),
            R=_calib_value(f"R_rect_{cam}"), P=_calib_value(f"P_rect_{cam}"), binning_x=0,
            binning_y=0, roi=roi)

    def image(seq, stamp_ns, frame_id, array):
        return types["sensor_msgs/msg/Image"](
            header=header(seq, stamp_ns, frame_id), height=height, width=width, encoding="bgr8",
            is_bigendian=0, step=width * 3, data=np.frombuffer(array.tobytes(), np.uint8))

    def tf_static(seq, stamp_ns):
        items = []
        for parent, child, matrix in kitti2bag_static_edges():
            qx, qy, qz, qw = quaternion_from_rotation(matrix[:3, :3])
            x, y, z = matrix[:3, 3]
            items.append(types["geometry_msgs/msg/TransformStamped"](
                header=header(seq, stamp_ns, parent), child_frame_id=child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                    rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
        return types["tf2_msgs/msg/TFMessage"](transforms=items)

    def cloud(seq, stamp_ns, frame):
        points = np.zeros((scan_points, 4), "<f4")
        points[:, 0] = 10.0 + frame
        points[:, 1] = np.arange(scan_points)
        points[:, 2] = 1.0
        fields = [types["sensor_msgs/msg/PointField"](name=name, offset=4 * i, datatype=7,
                                                      count=1)
                  for i, name in enumerate("xyzi")]
        return types["sensor_msgs/msg/PointCloud2"](
            header=header(seq, stamp_ns, "velo_link"), height=1, width=scan_points,
            fields=fields, is_bigendian=False, point_step=16, row_step=16 * scan_points,
            data=np.frombuffer(points.tobytes(), np.uint8), is_dense=True)

    from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp

    with Writer(path) as writer:
        conns = {}

        def put(topic, msg, msgtype, t):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t, ts.serialize_ros1(msg, msgtype))

        for k in range(n_frames):
            left, right = random_dot_pair(height, width, shift=shift, seed=100 + k)
            t_left = parse_kitti_timestamp(LEFT_STAMPS[k])
            t_right = parse_kitti_timestamp(RIGHT_STAMPS[k])
            fix = types["sensor_msgs/msg/NavSatFix"](
                header=header(k, t_left, "imu_link"),
                status=types["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
                latitude=49.0, longitude=8.4, altitude=110.0,
                position_covariance=np.zeros(9), position_covariance_type=0)
            put("/kitti/oxts/gps/fix", fix, "sensor_msgs/msg/NavSatFix", t_left)
            put("/tf_static", tf_static(k, t_left), "tf2_msgs/msg/TFMessage", t_left)
            t_scan = t_left + KITTI2BAG_SCAN_OFFSET_NS
            put("/kitti/velo/pointcloud", cloud(k, t_scan, k), "sensor_msgs/msg/PointCloud2",
                t_scan)
            for side, cam, stamp, array in (("right", "03", t_right, right),
                                            ("left", "02", t_left, left)):
                frame = f"camera_color_{side}"
                base = f"/kitti/camera_color_{side}"
                put(f"{base}/image_raw", image(k, stamp, frame, array),
                    "sensor_msgs/msg/Image", stamp)
                put(f"{base}/camera_info", camera_info(k, stamp, frame, cam),
                    "sensor_msgs/msg/CameraInfo", stamp)
    return path


def read_bag(path: Path) -> dict[str, list]:
    """topic -> [(bag time ns, message)] using rosbags with the ROS 2 typestore."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out
