"""Fixing bags made by tomas789/kitti2bag (ROS 1) for a stereo node, without ROS.

kitti2bag writes one camera_info per camera as KITTI's raw calibration: K/D/R of the unrectified
camera and the rectified P, with both P[0,3] non-zero, and stamps left and right separately. For
the rectified images it actually stores, a stereo node needs D = 0, R = I, K = P[:3,:3], left
P[0,3] = 0, right P[0,3] = -fx * B (B from the difference of the two P[0,3] terms), the image's
size, and one stamp and frame id per stereo frame. `KittiStereoGrouper` does exactly that;
`PRESETS` name the bag topics of the colour and grey pairs, and the LiDAR ground truth that
kitti2bag also stores: `/kitti/velo/pointcloud` (played as `velodyne_points`) and `/tf_static`
(played latched; its transforms to the left camera's frame are renamed with the stereo frame id
when one is given, so the scan -> camera chain still resolves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.core.kitti_calib import CalibrationFileError, rectified_stereo_calibration
from stereo_depth_ros.core.stamps import set_stamp, stamp_to_ns

ROLES = ("left_image", "right_image", "left_info", "right_info")
"""The four messages of a stereo frame, in the node's input order."""


class BagError(RuntimeError):
    """The bag cannot be played (missing, unreadable, or lacks the topics asked for)."""


@dataclass(frozen=True)
class Preset:
    """Bag topics of one stereo pair, mapped to the node's inputs (and camera_info fixed)."""

    name: str
    topics: dict[str, str]           # role -> bag topic
    extras: dict[str, str] = field(default_factory=dict)
    """Other bag topics played when the bag has them: bag topic -> output topic."""
    camera_frame: str | None = None
    """The left camera's frame id in the bag (renamed to the stereo frame id in /tf_static)."""

    def frame_renames(self, frame_id: str | None) -> dict[str, str]:
        """Frame ids to rename in /tf_static when the stereo frames get `frame_id`."""
        if not frame_id or not self.camera_frame or self.camera_frame == frame_id:
            return {}
        return {self.camera_frame: frame_id}

    def role_of(self, topic: str) -> str | None:
        for role, name in self.topics.items():
            if name == topic:
                return role
        return None


KITTI2BAG_VELODYNE = "/kitti/velo/pointcloud"
"""kitti2bag's Velodyne topic (PointCloud2 x, y, z, i in frame velo_link)."""


def _kitti2bag_preset(name: str, camera: str) -> Preset:
    base = f"/kitti/camera_{camera}"
    return Preset(name, {"left_image": f"{base}_left/image_raw",
                         "right_image": f"{base}_right/image_raw",
                         "left_info": f"{base}_left/camera_info",
                         "right_info": f"{base}_right/camera_info"},
                  extras={KITTI2BAG_VELODYNE: topics.LIDAR_POINTS,
                          topics.TF_STATIC: topics.TF_STATIC},
                  camera_frame=f"camera_{camera}_left")


PRESETS = {"kitti2bag": _kitti2bag_preset("kitti2bag", "color"),
           "kitti2bag-gray": _kitti2bag_preset("kitti2bag-gray", "gray")}


class KittiStereoGrouper:
    """Groups kitti2bag's per-camera messages into stereo frames and rewrites them.

    push(role, msg, t) takes rosbags ROS 2 message objects (role in ROLES) in bag order and returns
    the frames completed so far as lists of (role, msg, t). A frame is a left image, the right
    image within `tolerance_ns` of it, and each image's camera_info (same stamp within the
    tolerance). Everything in a frame gets the left stamp and one frame id; camera_info is
    replaced by the rectified one. Messages that can no longer complete a frame are dropped and
    counted in `dropped`.
    """

    def __init__(self, tolerance_ns: int = 20_000_000, frame_id: str | None = None) -> None:
        self.tolerance_ns = int(tolerance_ns)
        self.frame_id = frame_id
        self.buffers: dict[str, list] = {role: [] for role in ROLES}
        self.dropped: dict[str, int] = {role: 0 for role in ROLES}
        self.frames = 0
        self.notes: list[str] = []

    @staticmethod
    def _stamp(msg) -> int:
        return stamp_to_ns(msg.header.stamp)

    def push(self, role: str, msg, t: int) -> list[list[tuple[str, object, int]]]:
        self.buffers[role].append((self._stamp(msg), msg, t))
        return self._collect(final=False)

    def flush(self) -> list[list[tuple[str, object, int]]]:
        frames = self._collect(final=True)
        for role, items in self.buffers.items():
            self.dropped[role] += len(items)
            items.clear()
        return frames

    def _find(self, role: str, stamp: int) -> int | None:
        for index, (other, _, _) in enumerate(self.buffers[role]):
            if abs(other - stamp) <= self.tolerance_ns:
                return index
        return None

    def _hopeless(self, role: str, stamp: int) -> bool:
        """True when `role` already holds a later message, so a match for `stamp` cannot come."""
        return any(other > stamp + self.tolerance_ns for other, _, _ in self.buffers[role])

    def _collect(self, final: bool) -> list[list[tuple[str, object, int]]]:
        frames = []
        while self.buffers["left_image"]:
            left_stamp = self.buffers["left_image"][0][0]
            # anything older than the oldest left image can never be paired
            for role in ("right_image", "left_info", "right_info"):
                keep = [item for item in self.buffers[role]
                        if item[0] >= left_stamp - self.tolerance_ns]
                self.dropped[role] += len(self.buffers[role]) - len(keep)
                self.buffers[role] = keep
            left_info = self._find("left_info", left_stamp)
            right_image = self._find("right_image", left_stamp)
            right_info = None
            if right_image is not None:
                right_info = self._find("right_info", self.buffers["right_image"][right_image][0])
            if None not in (left_info, right_image, right_info):
                frames.append(self._emit(left_info, right_image, right_info))
                continue
            missing = [(role, left_stamp) for role, index in
                       (("left_info", left_info), ("right_image", right_image)) if index is None]
            if right_image is not None and right_info is None:
                missing.append(("right_info", self.buffers["right_image"][right_image][0]))
            if final or any(self._hopeless(role, stamp) for role, stamp in missing):
                self.buffers["left_image"].pop(0)
                self.dropped["left_image"] += 1
                continue
            break
        return frames

    def _emit(self, left_info_index: int, right_image_index: int,
              right_info_index: int) -> list[tuple[str, object, int]]:
        left_stamp, left_image, t_left = self.buffers["left_image"].pop(0)
        _, left_info, t_li = self.buffers["left_info"].pop(left_info_index)
        _, right_image, t_right = self.buffers["right_image"].pop(right_image_index)
        _, right_info, t_ri = self.buffers["right_info"].pop(right_info_index)
        frame_id = self.frame_id or left_image.header.frame_id or left_info.header.frame_id
        t_out = max(t_left, t_li, t_right, t_ri)
        if (left_image.width, left_image.height) != (right_image.width, right_image.height):
            raise BagError(f"left image is {left_image.width}x{left_image.height} but right "
                           f"is {right_image.width}x{right_image.height}")
        p_left = np.asarray(left_info.p, dtype=np.float64).reshape(3, 4)
        p_right = np.asarray(right_info.p, dtype=np.float64).reshape(3, 4)
        try:
            calib = rectified_stereo_calibration(
                p_left, p_right, int(left_image.width), int(left_image.height),
                baseline_source="projection", source="kitti2bag camera_info")
        except CalibrationFileError as exc:
            raise BagError(str(exc)) from None
        if (left_info.width, left_info.height) != (left_image.width, left_image.height) and \
                not self.notes:
            self.notes.append(f"camera_info says {left_info.width}x{left_info.height}, image is "
                              f"{left_image.width}x{left_image.height}: using the image size")
        for msg in (left_image, right_image, left_info, right_info):
            set_stamp(msg.header.stamp, left_stamp)
            msg.header.frame_id = frame_id
        for msg, side in ((left_info, "left"), (right_info, "right")):
            values = calib.camera_info_fields(side)
            msg.width, msg.height = values["width"], values["height"]
            msg.distortion_model = values["distortion_model"]
            msg.d = np.array(values["d"], dtype=np.float64)
            msg.k = np.array(values["k"], dtype=np.float64)
            msg.r = np.array(values["r"], dtype=np.float64)
            msg.p = np.array(values["p"], dtype=np.float64)
            msg.binning_x = msg.binning_y = 0
            msg.roi.x_offset = msg.roi.y_offset = msg.roi.width = msg.roi.height = 0
            msg.roi.do_rectify = False
        self.frames += 1
        return [("left_info", left_info, t_out), ("right_info", right_info, t_out),
                ("left_image", left_image, t_out), ("right_image", right_image, t_out)]
