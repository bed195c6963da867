"""Writing `bags.kitti_layout.FramePair`s into a ROS 2 bag (MCAP or sqlite3) with `rosbags`: the
stereo node's inputs with rectified camera_info, ground-truth disparity, Velodyne scans, OXTS
IMU/GPS and /tf_static. rosbags is imported when a bag is written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.bags.kitti_layout import (DEFAULT_FRAME_ID, TOPIC_DISPARITY_GT,
                                                TOPIC_LEFT_IMAGE, TOPIC_LEFT_INFO,
                                                TOPIC_RIGHT_IMAGE, TOPIC_RIGHT_INFO, FramePair,
                                                LayoutError, discover_frames)
from stereo_depth_ros.core.disparity_io import read_kitti_png
from stereo_depth_ros.core.kitti_calib import (RectifiedStereoCalibration, find_projection_keys,
                                               load_stereo_calibration, load_velodyne_to_camera,
                                               parse_calib_file, rigid_from_values)
from stereo_depth_ros.core.kitti_oxts import read_oxts_packet
from stereo_depth_ros.core.lidar import XYZI_FIELDS, XYZI_POINT_STEP, pack_xyzi, read_velodyne_bin
from stereo_depth_ros.core.stamps import ns_to_sec_nanosec
from stereo_depth_ros.core.transforms import StaticTransform, invert_rigid

LOG = logging.getLogger(__name__)


def read_image_for_ros(path: Path) -> tuple[np.ndarray, str]:
    """Read an image file as (array, ROS encoding): bgr8 (alpha dropped), mono8 or mono16."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise LayoutError(f"{path}: cannot be read as an image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.dtype == np.uint8:
        return np.ascontiguousarray(image), "bgr8"
    if image.ndim == 2 and image.dtype == np.uint8:
        return image, "mono8"
    if image.ndim == 2 and image.dtype == np.uint16:
        return image, "mono16"
    raise LayoutError(f"{path}: unsupported image type {image.dtype} with shape {image.shape}")


def _topic(namespace: str, name: str) -> str:
    parts = [p for p in namespace.strip("/").split("/") if p] + [name]
    return "/" + "/".join(parts)


class _MessageFactory:
    """rosbags message objects for one typestore (ROS 2 by default)."""

    def __init__(self, typestore):
        self.ts = typestore
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        sec, nanosec = ns_to_sec_nanosec(stamp_ns)
        time = self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def compressed_image(self, array: np.ndarray, encoding: str, compression: str,
                         stamp_ns: int, frame_id: str):
        """image_transport "compressed": JPEG or PNG of an 8-bit mono/bgr image, with the format
        string "<encoding>; <jpeg|png> compressed <encoding>" as compressed_image_transport
        writes it."""
        if encoding not in ("mono8", "bgr8"):
            raise LayoutError(f"--compress {compression}: images are {encoding}; only mono8 and "
                              "bgr8 images are compressed")
        ok, data = cv2.imencode(".jpg" if compression == "jpeg" else ".png", array,
                                [cv2.IMWRITE_JPEG_QUALITY, 95] if compression == "jpeg" else [])
        if not ok:
            raise LayoutError(f"OpenCV could not encode a {compression} image")
        return self.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame_id),
            format=f"{encoding}; {compression} compressed {encoding}",
            data=np.frombuffer(data.tobytes(), dtype=np.uint8))

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
        """(H, W) or (H, W, C) array of the encoding's dtype (little-endian) -> Image."""
        array = np.ascontiguousarray(array)
        height, width = array.shape[:2]
        data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        return self.types["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=data.size // height, data=data)

    def point_cloud(self, points: np.ndarray, stamp_ns: int, frame_id: str):
        """(N, 4) x, y, z, intensity -> unorganized PointCloud2 (XYZI_FIELDS, little-endian)."""
        point_field = self.types["sensor_msgs/msg/PointField"]
        return self.types["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame_id), height=1, width=len(points),
            fields=[point_field(name=name, offset=offset, datatype=datatype, count=count)
                    for name, offset, datatype, count in XYZI_FIELDS],
            is_bigendian=False, point_step=XYZI_POINT_STEP,
            row_step=XYZI_POINT_STEP * len(points),
            data=np.frombuffer(pack_xyzi(points), dtype=np.uint8),
            is_dense=bool(np.all(np.isfinite(points[:, :3]))))

    def tf_message(self, transforms: list[StaticTransform], stamp_ns: int):
        """tf2_msgs/TFMessage of static transforms (header.frame_id = parent)."""
        types = self.types
        items = []
        for edge in transforms:
            (x, y, z), (qx, qy, qz, qw) = edge.translation, edge.quaternion
            items.append(types["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, edge.parent), child_frame_id=edge.child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                    rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
        return types["tf2_msgs/msg/TFMessage"](transforms=items)

    def imu(self, packet, stamp_ns: int, frame_id: str):
        """sensor_msgs/Imu of an OXTS packet: orientation from roll/pitch/yaw, angular velocity
        and linear acceleration in the unit's frame; covariances unknown (all zero)."""
        types = self.types
        vector = types["geometry_msgs/msg/Vector3"]
        qx, qy, qz, qw = packet.orientation
        return types["sensor_msgs/msg/Imu"](
            header=self.header(stamp_ns, frame_id),
            orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
            orientation_covariance=np.zeros(9),
            angular_velocity=vector(*(float(v) for v in packet.angular_velocity)),
            angular_velocity_covariance=np.zeros(9),
            linear_acceleration=vector(*(float(v) for v in packet.linear_acceleration)),
            linear_acceleration_covariance=np.zeros(9))

    def nav_sat_fix(self, packet, stamp_ns: int, frame_id: str):
        """sensor_msgs/NavSatFix of an OXTS packet (GPS fix; covariance from pos_accuracy)."""
        status = self.types["sensor_msgs/msg/NavSatStatus"]
        variance = float(packet.position_accuracy_m) ** 2
        return self.types["sensor_msgs/msg/NavSatFix"](
            header=self.header(stamp_ns, frame_id),
            status=status(status=status.STATUS_FIX, service=status.SERVICE_GPS),
            latitude=float(packet.latitude_deg), longitude=float(packet.longitude_deg),
            altitude=float(packet.altitude_m),
            position_covariance=np.diag([variance] * 3).reshape(-1),
            position_covariance_type=1)          # COVARIANCE_TYPE_APPROXIMATED

    def camera_info(self, fields: dict, stamp_ns: int, frame_id: str):
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=fields["height"],
            width=fields["width"], distortion_model=fields["distortion_model"],
            d=np.array(fields["d"], dtype=np.float64), k=np.array(fields["k"], dtype=np.float64),
            r=np.array(fields["r"], dtype=np.float64), p=np.array(fields["p"], dtype=np.float64),
            binning_x=0, binning_y=0, roi=roi)


def static_transforms(frames: list[FramePair], *, frame_id: str = DEFAULT_FRAME_ID,
                      lidar_frame_id: str = topics.LIDAR_FRAME,
                      imu_frame_id: str = topics.IMU_FRAME) -> list[StaticTransform]:
    """The /tf_static edges of a raw drive's sensors: `lidar_frame_id` -> `frame_id` (the
    rectified left camera, from calib_velo_to_cam.txt, R_rect_00 and the left camera's P_rect;
    see core.kitti_calib.velodyne_to_camera) when scans are written, and `imu_frame_id` ->
    `lidar_frame_id` (calib_imu_to_velo.txt) when OXTS packets are written with it."""
    edges = []
    first = frames[0]
    if first.lidar is not None:
        keys = first.calib_keys or find_projection_keys(parse_calib_file(first.calib_path),
                                                        str(first.calib_path))[:2]
        camera_from_lidar = load_velodyne_to_camera(first.lidar.calib_path, first.calib_path,
                                                    camera_key=keys[0])
        edges.append(StaticTransform(lidar_frame_id, frame_id, invert_rigid(camera_from_lidar)))
    if first.oxts is not None and first.oxts.calib_path is not None:
        path = first.oxts.calib_path
        lidar_from_imu = rigid_from_values(parse_calib_file(path), str(path))
        edges.append(StaticTransform(imu_frame_id, lidar_frame_id, invert_rigid(lidar_from_imu)))
    return edges


def _latched_qos():
    """rosbag2's offered QoS of a latched topic (reliable, transient local, keep last 1)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def write_bag(frames: list[FramePair], out: str | Path, *, storage: str = "mcap",
              namespace: str = "", frame_id: str = DEFAULT_FRAME_ID,
              baseline_source: str = "auto", baseline_m: float | None = None,
              overwrite: bool = False, compress: str | None = None,
              lidar_frame_id: str = topics.LIDAR_FRAME) -> dict:
    """Write `frames` to a ROS 2 bag folder `out` (MCAP or sqlite3) and return a summary dict.

    compress: None (sensor_msgs/Image on left|right/image_raw) or "jpeg"/"png"
    (sensor_msgs/CompressedImage on left|right/image_raw/compressed, image_transport's names).
    Frames with a Velodyne scan add `<ns>/velodyne_points` (PointCloud2 x, y, z, intensity in
    `lidar_frame_id`, stamped with the scan's own timestamp) and, once at the start, /tf_static
    (transient local) with `lidar_frame_id` -> `frame_id`; frames with an OXTS packet add
    `<ns>/oxts/imu` and `<ns>/oxts/gps/fix` (frame imu_link, the packet's timestamp).

    The summary holds the bag path, storage, frame count, topics with message counts, the stamp
    range (ns) and one entry per distinct calibration (source, size, fx, baseline_m, notes).
    The output folder is removed again if writing fails.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if not frames:
        raise LayoutError("no frames to write")
    if compress not in (None, "jpeg", "png"):
        raise ValueError(f"compress must be jpeg or png, got {compress!r}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
    out = Path(out)
    _clear_output(out, overwrite)
    stamps = [f.stamp_ns for f in frames]
    if len(set(stamps)) != len(stamps) or stamps != sorted(stamps):
        raise ValueError("frame stamps must be strictly increasing")
    typestore = get_typestore(Stores.ROS2_KILTED)
    sidecar_stamps = _sidecar_stamps(frames)
    edges = static_transforms(frames, frame_id=frame_id, lidar_frame_id=lidar_frame_id)
    sink = _BagSink(typestore, _topic_names(namespace, compress))
    calibrations = _Calibrations(baseline_source, baseline_m)
    try:
        with Writer(out, version=9, storage_plugin=plugins[storage]) as writer:
            sink.writer = writer
            if edges:
                t0 = min(stamps + sidecar_stamps)
                sink.put(topics.TF_STATIC, sink.make.tf_message(edges, t0),
                         "tf2_msgs/msg/TFMessage", t0)
            for frame in frames:
                _write_sidecars(sink, frame, lidar_frame_id)
                _write_stereo_frame(sink, frame, calibrations.of(frame), frame_id, compress)
    except BaseException:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return _summary(out, storage, frames, frame_id, sink, edges, stamps, calibrations)


def _summary(out: Path, storage: str, frames: list[FramePair], frame_id: str, sink: _BagSink,
             edges: list[StaticTransform], stamps: list[int], calibrations: _Calibrations
             ) -> dict:
    """`write_bag`'s summary of the bag it wrote."""
    return {
        "bag": str(out),
        "storage": storage,
        "frames": len(frames),
        "frame_id": frame_id,
        "topics": {name: n for name, n in sink.counts.items() if n},
        "tf_static": [{"parent": e.parent, "child": e.child, "translation": list(e.translation),
                       "quaternion_xyzw": list(e.quaternion)} for e in edges],
        "first_stamp_ns": stamps[0],
        "stamps_ns": stamps,
        "last_stamp_ns": stamps[-1],
        "calibrations": [
            {"source": c.source, "width": c.width, "height": c.height, "fx": c.fx,
             "baseline_m": c.baseline_m, "notes": list(c.notes)}
            for c in calibrations.loaded.values()],
    }


def _clear_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing `out`, or with `overwrite` remove it when it is a bag (or empty)."""
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; choose a new path or pass --overwrite")
    if out.is_dir() and ((out / "metadata.yaml").is_file() or not any(out.iterdir())):
        shutil.rmtree(out)
    else:
        raise FileExistsError(f"{out} exists and does not look like a bag; not removing it")


def _sidecar_stamps(frames: list[FramePair]) -> list[int]:
    """The stamps of the frames' Velodyne scans and OXTS packets (each list must not decrease:
    LayoutError naming the timestamps file otherwise)."""
    stamps = []
    for files in ([f.lidar for f in frames if f.lidar is not None],
                  [f.oxts for f in frames if f.oxts is not None]):
        for earlier, later in zip(files, files[1:]):
            if later.stamp_ns < earlier.stamp_ns:
                stamp_file = later.path.parent.parent / "timestamps.txt"
                raise LayoutError(
                    f"{stamp_file}: the stamp of {later.path.name} ({later.stamp_ns} ns) is "
                    f"before that of {earlier.path.name} ({earlier.stamp_ns} ns); stamps must "
                    "not decrease")
        stamps += [f.stamp_ns for f in files]
    return stamps


def _topic_names(namespace: str, compress: str | None) -> dict[str, str]:
    """Topic key -> name in the bag (under `namespace`; images on .../compressed when
    compressed; /tf_static absolute)."""
    keys = (TOPIC_LEFT_IMAGE, TOPIC_RIGHT_IMAGE, TOPIC_LEFT_INFO, TOPIC_RIGHT_INFO,
            TOPIC_DISPARITY_GT, topics.LIDAR_POINTS, topics.IMU, topics.GPS_FIX)
    names = {key: _topic(namespace, key) for key in keys}
    names[topics.TF_STATIC] = topics.TF_STATIC
    if compress:
        for key in (TOPIC_LEFT_IMAGE, TOPIC_RIGHT_IMAGE):
            names[key] += topics.COMPRESSED_SUFFIX
    return names


class _BagSink:
    """Serialises messages into the bag's connections (created on first use; /tf_static
    latched) and counts them per topic name. `writer` is set once the bag is open."""

    def __init__(self, typestore, names: dict[str, str]) -> None:
        self.typestore = typestore
        self.make = _MessageFactory(typestore)
        self.names = names
        self.counts = {name: 0 for name in names.values()}
        self.connections: dict[str, object] = {}
        self.writer = None

    def put(self, key: str, msg, msgtype: str, stamp_ns: int) -> None:
        if key not in self.connections:
            qos = [_latched_qos()] if key == topics.TF_STATIC else []
            self.connections[key] = self.writer.add_connection(
                self.names[key], msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        self.writer.write(self.connections[key], stamp_ns,
                          bytes(self.typestore.serialize_cdr(msg, msgtype)))
        self.counts[self.names[key]] += 1


class _Calibrations:
    """The rectified calibration of each (file, keys, image size), loaded once; the file's
    notes are logged as warnings when it is loaded."""

    def __init__(self, baseline_source: str, baseline_m: float | None) -> None:
        self.baseline_source = baseline_source
        self.baseline_m = baseline_m
        self.loaded: dict[tuple, RectifiedStereoCalibration] = {}

    def of(self, frame: FramePair):
        """A loader for `frame` taking its image (width, height) (known once the images are
        read), so the calibration is loaded after the images as it always was."""
        def load(width: int, height: int) -> RectifiedStereoCalibration:
            key = (frame.calib_path, frame.calib_keys, width, height)
            if key not in self.loaded:
                self.loaded[key] = load_stereo_calibration(
                    frame.calib_path, width, height, keys=frame.calib_keys,
                    baseline_source=self.baseline_source, baseline_m=self.baseline_m)
                for note in self.loaded[key].notes:
                    LOG.warning("%s: %s", frame.calib_path, note)
            return self.loaded[key]
        return load


def _write_sidecars(sink: _BagSink, frame: FramePair, lidar_frame_id: str) -> None:
    """The frame's Velodyne scan and OXTS packet (IMU and GPS fix), each at its own stamp."""
    make = sink.make
    if frame.lidar is not None:
        try:
            scan = read_velodyne_bin(frame.lidar.path)
        except ValueError as exc:
            raise LayoutError(str(exc)) from None
        sink.put(topics.LIDAR_POINTS, make.point_cloud(scan, frame.lidar.stamp_ns, lidar_frame_id),
                 "sensor_msgs/msg/PointCloud2", frame.lidar.stamp_ns)
    if frame.oxts is not None:
        packet = read_oxts_packet(frame.oxts.path)
        t_oxts = frame.oxts.stamp_ns
        sink.put(topics.IMU, make.imu(packet, t_oxts, topics.IMU_FRAME),
                 "sensor_msgs/msg/Imu", t_oxts)
        sink.put(topics.GPS_FIX, make.nav_sat_fix(packet, t_oxts, topics.IMU_FRAME),
                 "sensor_msgs/msg/NavSatFix", t_oxts)


def _write_stereo_frame(sink: _BagSink, frame: FramePair, calibration, frame_id: str,
                        compress: str | None) -> None:
    """The pair's camera_infos, images (raw or compressed) and ground truth, at its stamp.
    calibration: (width, height) -> RectifiedStereoCalibration (`_Calibrations.of`)."""
    make = sink.make
    left, left_enc = read_image_for_ros(frame.left_path)
    right, right_enc = read_image_for_ros(frame.right_path)
    if left.shape != right.shape or left_enc != right_enc:
        raise LayoutError(
            f"frame {frame.name}: {frame.left_path.name} is {left.shape} {left_enc} "
            f"but {frame.right_path.name} is {right.shape} {right_enc}")
    height, width = left.shape[:2]
    calib = calibration(width, height)
    t = frame.stamp_ns
    for key, side in ((TOPIC_LEFT_INFO, "left"), (TOPIC_RIGHT_INFO, "right")):
        sink.put(key, make.camera_info(calib.camera_info_fields(side), t, frame_id),
                 "sensor_msgs/msg/CameraInfo", t)
    for key, image in ((TOPIC_LEFT_IMAGE, left), (TOPIC_RIGHT_IMAGE, right)):
        if compress:
            sink.put(key, make.compressed_image(image, left_enc, compress, t, frame_id),
                     "sensor_msgs/msg/CompressedImage", t)
        else:
            sink.put(key, make.image(image, left_enc, t, frame_id), "sensor_msgs/msg/Image", t)
    if frame.gt_path is not None:
        disparity = read_kitti_png(frame.gt_path)
        if disparity.shape != (height, width):
            raise LayoutError(f"{frame.gt_path}: ground truth is {disparity.shape}, "
                              f"images are {(height, width)}")
        sink.put(TOPIC_DISPARITY_GT, make.image(disparity.astype("<f4"), "32FC1", t, frame_id),
                 "sensor_msgs/msg/Image", t)


def convert(source: str | Path, out: str | Path, **options) -> dict:
    """discover_frames(source, ...) then write_bag(...); options are split between the two."""
    discover_keys = {"layout", "calib", "cameras", "frame_suffix", "start_stamp_s", "period_s",
                     "max_frames", "skip_unpaired", "lidar", "oxts"}
    discover = {k: v for k, v in options.items() if k in discover_keys}
    write = {k: v for k, v in options.items() if k not in discover_keys}
    return write_bag(discover_frames(source, **discover), out, **write)
