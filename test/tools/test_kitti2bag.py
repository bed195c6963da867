"""stereo_depth_kitti2bag on small KITTI-format trees: topics, stamps, frame ids, camera_info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.kitti import (BASELINE_M, FX, LEFT_STAMPS, make_raw_drive, make_stereo_2012,
                           make_stereo_2015, random_dot_pair, read_bag)
from stereo_depth_ros.bags.bag_writer import convert
from stereo_depth_ros.bags.kitti_layout import (DEFAULT_FRAME_ID, LayoutError, discover_frames,
                                                parse_kitti_timestamp)
from stereo_depth_ros.tools import kitti2bag

INPUT_TOPICS = {"/left/image_raw", "/right/image_raw", "/left/camera_info", "/right/camera_info"}


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def check_camera_infos(topics: dict, width: int, height: int) -> None:
    for (_, left), (_, right) in zip(topics["/left/camera_info"], topics["/right/camera_info"]):
        for info in (left, right):
            assert (info.width, info.height) == (width, height)
            assert info.distortion_model == "plumb_bob"
            np.testing.assert_array_equal(info.d, np.zeros(5))
            np.testing.assert_array_equal(info.r, np.eye(3).reshape(-1))
            np.testing.assert_allclose(info.k, [FX, 0, 609.5593, 0, FX, 172.854, 0, 0, 1])
        p_left, p_right = left.p.reshape(3, 4), right.p.reshape(3, 4)
        np.testing.assert_allclose(p_left[:, 3], 0.0)
        baseline = -p_right[0, 3] / p_right[0, 0]
        assert baseline == pytest.approx(0.5327, abs=1e-4)
        assert baseline == pytest.approx(BASELINE_M, rel=1e-6)


def check_pairs_share_stamp_and_frame(topics: dict, topic_names) -> list[int]:
    stamps = None
    for name in topic_names:
        msgs = topics[name]
        these = [stamp_ns(m) for _, m in msgs]
        assert [t for t, _ in msgs] == these, "bag time must equal the header stamp"
        assert {m.header.frame_id for _, m in msgs} == {DEFAULT_FRAME_ID}
        stamps = these if stamps is None else stamps
        assert these == stamps, f"{name} stamps differ from the other topics"
    return stamps


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_drive(tmp_path, storage):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=3)
    bag = tmp_path / "bag"
    summary = convert(drive, bag, storage=storage)
    assert summary["frames"] == 3
    assert any(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    topics = read_bag(bag)
    assert set(topics) == INPUT_TOPICS
    assert all(len(msgs) == 3 for msgs in topics.values())
    stamps = check_pairs_share_stamp_and_frame(topics, INPUT_TOPICS)
    # left camera's timestamps.txt, read as UTC with ns precision, for both sides
    assert stamps == [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert stamps[0] == 1317042145964389445
    check_camera_infos(topics, 160, 96)
    left_msg = topics["/left/image_raw"][1][1]
    assert (left_msg.encoding, left_msg.width, left_msg.height, left_msg.step) == \
        ("bgr8", 160, 96, 480)
    expected_left, expected_right = random_dot_pair(96, 160, shift=8, seed=1)
    np.testing.assert_array_equal(left_msg.data.reshape(96, 160, 3), expected_left)
    np.testing.assert_array_equal(topics["/right/image_raw"][1][1].data.reshape(96, 160, 3),
                                  expected_right)


def test_stereo_2015_with_ground_truth(tmp_path):
    split = make_stereo_2015(tmp_path / "kitti2015", scenes=2)
    bag = tmp_path / "bag"
    summary = convert(split, bag, namespace="/stereo", frame_id="cam2_optical", period_s=0.5,
                      start_stamp_s=100.0)
    assert summary["frames"] == 2     # the _10 frames only (the ones with ground truth)
    topics = read_bag(bag)
    expected = {"/stereo" + t for t in INPUT_TOPICS} | {"/stereo/left/disparity_gt"}
    assert set(topics) == expected
    for msgs in topics.values():
        assert [stamp_ns(m) for _, m in msgs] == [100_000_000_000, 100_500_000_000]
        assert {m.header.frame_id for _, m in msgs} == {"cam2_optical"}
    gt = topics["/stereo/left/disparity_gt"][0][1]
    assert (gt.encoding, gt.width, gt.height, gt.step) == ("32FC1", 160, 96, 640)
    disparity = np.frombuffer(gt.data.tobytes(), dtype="<f4").reshape(96, 160)
    assert np.isnan(disparity[:, :8]).all()
    np.testing.assert_array_equal(disparity[:, 8:], 8.0)
    info = topics["/stereo/right/camera_info"][1][1]
    assert -info.p[3] / info.p[0] == pytest.approx(0.5327, abs=1e-4)
    both = discover_frames(split, frame_suffix="all")
    assert [f.name for f in both] == ["000000_10", "000000_11", "000001_10", "000001_11"]
    assert [f.gt_path is not None for f in both] == [True, False, True, False]


def test_stereo_2012_p2_p3(tmp_path):
    split = make_stereo_2012(tmp_path / "kitti2012", scenes=2)
    topics = read_bag(Path(convert(split, tmp_path / "bag", storage="sqlite3")["bag"]))
    assert "/left/disparity_gt" in topics
    check_camera_infos(topics, 160, 96)


def test_frames_pair_by_id_not_by_sorted_glob(tmp_path):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=3)
    (drive / "image_03" / "data" / "0000000001.png").rename(
        drive / "image_03" / "data" / "0000000007.png")
    with pytest.raises(LayoutError) as err:
        discover_frames(drive)
    message = str(err.value)
    assert "no right image for: 0000000001.png" in message
    assert "no left image for: 0000000007.png" in message
    assert "3 left images" in message and "3 right images" in message
    frames = discover_frames(drive, skip_unpaired=True)
    assert [f.name for f in frames] == ["0000000000", "0000000002"]
    assert all(f.left_path.name == f.right_path.name for f in frames)


def test_bad_trees_give_clear_errors(tmp_path, capsys):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=2)
    with pytest.raises(LayoutError, match="pass one drive folder"):
        discover_frames(drive.parent.parent / "2011_09_26")
    (drive.parent / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(LayoutError, match="calibration not found"):
        discover_frames(drive)
    with pytest.raises(LayoutError, match="unrecognised layout"):
        discover_frames(tmp_path / "kitti")
    with pytest.raises(LayoutError, match="not a directory"):
        discover_frames(tmp_path / "missing")
    split = make_stereo_2015(tmp_path / "k15", scenes=1)
    (split / "calib_cam_to_cam" / "000000.txt").unlink()
    with pytest.raises(LayoutError, match=r"calib_cam_to_cam/000000\.txt"):
        discover_frames(split)
    with pytest.raises(LayoutError, match="pass one of"):
        discover_frames(split.parent)
    # CLI: one-line message, exit code 1, nothing left behind
    out = tmp_path / "out_bag"
    assert kitti2bag.main([str(split), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stereo_depth_kitti2bag: error:")
    assert "calib_cam_to_cam/000000.txt" in err
    assert not out.exists()
    # an unreadable image fails the conversion and removes the partial bag
    drive2 = make_raw_drive(tmp_path / "kitti2", n_frames=2)
    (drive2 / "image_03" / "data" / "0000000001.png").write_bytes(b"not a png")
    with pytest.raises(LayoutError, match="cannot be read"):
        convert(drive2, out)
    assert not out.exists()


def test_cli_and_existing_output(tmp_path):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=2)
    out = tmp_path / "bag"
    assert kitti2bag.main([str(drive), str(out), "--period", "0.2", "--storage", "sqlite3",
                           "--summary-json", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").is_file()
    with pytest.raises(FileExistsError):
        convert(drive, out)
    summary = convert(drive, out, overwrite=True, max_frames=1)
    assert summary["frames"] == 1


def test_drivingstereo_sample_folder(tmp_path, assets_dir):
    folder = assets_dir / "samples" / "drivingstereo" / "2018-07-11-14-48-52"
    with pytest.raises(LayoutError, match="no left image for"):
        discover_frames(folder)       # the sample has one right image without its left
    summary = convert(folder, tmp_path / "bag", skip_unpaired=True, max_frames=2)
    assert summary["frames"] == 2
    (calib,) = summary["calibrations"]
    assert (calib["width"], calib["height"]) == (881, 400)
    assert calib["baseline_m"] == pytest.approx(0.5446, abs=1e-3)
    topics = read_bag(tmp_path / "bag")
    assert topics["/left/image_raw"][0][1].encoding == "bgr8"     # RGBA PNG -> alpha dropped


# ------------------------------------------------------------------ LiDAR and OXTS (raw drives)


def test_raw_drive_with_lidar_and_oxts(tmp_path):
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability

    from helpers.kitti_lidar import (IMU_TO_VELO_R, IMU_TO_VELO_T, add_oxts, camera_from_velodyne,
                                     make_lidar_drive)
    from stereo_depth_ros.core.transforms import (TransformTree, rotation_from_quaternion,
                                                  rotation_from_rpy,
                                                  static_transforms_from_message)

    scene = make_lidar_drive(tmp_path / "kitti", n_frames=3, per_band=10)
    oxts_stamps = add_oxts(scene.drive, 3)
    bag = tmp_path / "bag"
    summary = convert(scene.drive, bag, storage="sqlite3", oxts=True)
    topics = read_bag(bag)
    assert set(topics) == INPUT_TOPICS | {"/velodyne_points", "/tf_static", "/oxts/imu",
                                          "/oxts/gps/fix"}
    clouds = topics["/velodyne_points"]
    assert [stamp_ns(m) for _, m in clouds] == scene.scan_stamps_ns == [t for t, _ in clouds]
    for (_, cloud), scan in zip(clouds, scene.scans):
        assert cloud.header.frame_id == "velodyne" and (cloud.height, cloud.width) == \
            (1, len(scan))
        assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
            ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7)]
        assert (cloud.point_step, cloud.row_step, cloud.is_bigendian) == \
            (16, 16 * len(scan), False)
        np.testing.assert_array_equal(
            np.frombuffer(cloud.data.tobytes(), "<f4").reshape(-1, 4), scan)
    # the cameras keep the left camera's stamps
    assert [stamp_ns(m) for _, m in topics["/left/image_raw"]] == scene.left_stamps_ns

    (t_tf, tf_message), = topics["/tf_static"]
    assert t_tf == min(scene.scan_stamps_ns[0], scene.left_stamps_ns[0], oxts_stamps[0])
    tree = TransformTree(static_transforms_from_message(tf_message))
    assert {(e.parent, e.child) for e in tree.edges()} == {
        ("velodyne", DEFAULT_FRAME_ID), ("imu_link", "velodyne")}
    np.testing.assert_allclose(tree.lookup(DEFAULT_FRAME_ID, "velodyne"),
                               camera_from_velodyne(), atol=1e-9)
    velo_from_imu = np.eye(4)
    velo_from_imu[:3, :3], velo_from_imu[:3, 3] = IMU_TO_VELO_R, IMU_TO_VELO_T
    np.testing.assert_allclose(tree.lookup("velodyne", "imu_link"), velo_from_imu, atol=1e-9)
    with AnyReader([bag]) as reader:
        (conn,) = [c for c in reader.connections if c.topic == "/tf_static"]
        assert [q.durability for q in conn.ext.offered_qos_profiles] == \
            [QosDurability.TRANSIENT_LOCAL]
    assert [e["child"] for e in summary["tf_static"]] == [DEFAULT_FRAME_ID, "velodyne"]

    imu = [m for _, m in topics["/oxts/imu"]]
    assert [stamp_ns(m) for m in imu] == oxts_stamps
    first = imu[1]
    assert first.header.frame_id == "imu_link"
    q = first.orientation
    np.testing.assert_allclose(rotation_from_quaternion(q.x, q.y, q.z, q.w),
                               rotation_from_rpy(0.035752, 0.00903, -1.0636 + 0.1), atol=1e-9)
    assert (first.angular_velocity.x, first.angular_velocity.z) == (0.011, 0.031)
    assert (first.linear_acceleration.x, first.linear_acceleration.z) == (0.3, 9.7)
    fix = topics["/oxts/gps/fix"][0][1]
    assert (fix.latitude, fix.longitude, fix.altitude) == \
        (49.015003823272, 8.4342971002335, 116.43032836914)
    assert fix.position_covariance[0] == pytest.approx(0.35 ** 2)
    assert fix.position_covariance_type == 1

    # --no-lidar: the cameras only (and a drive without velodyne_points/ gets the cameras too)
    cameras = read_bag(Path(convert(scene.drive, tmp_path / "cams", lidar=False)["bag"]))
    assert set(cameras) == INPUT_TOPICS


def test_lidar_errors_name_the_missing_file(tmp_path, capsys):
    from helpers.kitti_lidar import make_lidar_drive

    scene = make_lidar_drive(tmp_path / "kitti", n_frames=2, per_band=5)
    drive = scene.drive
    velo_calib = drive.parent / "calib_velo_to_cam.txt"
    text = velo_calib.read_text()
    velo_calib.unlink()
    out = tmp_path / "bag"
    assert kitti2bag.main([str(drive), str(out)]) == 1
    err = capsys.readouterr().err
    assert "calib_velo_to_cam.txt not found" in err and str(velo_calib) in err
    assert "--no-lidar" in err and not out.exists()
    assert kitti2bag.main([str(drive), str(out), "--no-lidar"]) == 0     # cameras only
    velo_calib.write_text(text)

    scan = drive / "velodyne_points" / "data" / "0000000001.bin"
    scan.unlink()
    with pytest.raises(LayoutError, match=r"lidar file missing for 1 of 2 frames: .*"
                       r"velodyne_points/data/0000000001\.bin"):
        convert(drive, tmp_path / "bag2")
    scan.write_bytes(b"\0" * 10)                   # not whole 16-byte points
    with pytest.raises(LayoutError, match=r"0000000001\.bin: 10 bytes is not a whole number"):
        convert(drive, tmp_path / "bag3")
    assert not (tmp_path / "bag3").exists()
    scan.write_bytes(scene.scans[1].tobytes())
    stamps = drive / "velodyne_points" / "timestamps.txt"
    stamps.write_text("".join(reversed(stamps.read_text().splitlines(keepends=True))))
    with pytest.raises(LayoutError, match=r"velodyne_points/timestamps\.txt: the stamp of "
                       r"0000000001\.bin .* is before that of 0000000000\.bin"):
        convert(drive, tmp_path / "bag3b")
    stamps.unlink()
    with pytest.raises(LayoutError, match=r"velodyne_points/timestamps\.txt not found"):
        convert(drive, tmp_path / "bag4")
    # synthetic stamps: the scans take their frame's
    bag = tmp_path / "bag5"
    convert(drive, bag, period_s=0.5, start_stamp_s=10.0)
    topics = read_bag(bag)
    assert [t for t, _ in topics["/velodyne_points"]] == [10 * 10**9, 10_500_000_000]
    with pytest.raises(LayoutError, match=r"oxts/data: not found"):
        convert(drive, tmp_path / "bag6", oxts=True, lidar=False)
    plain = make_raw_drive(tmp_path / "plain", n_frames=1)
    with pytest.raises(LayoutError, match=r"velodyne_points/data: not found .*--no-lidar"):
        convert(plain, tmp_path / "bag7", lidar=True)
    split = make_stereo_2015(tmp_path / "k15", scenes=1)
    with pytest.raises(LayoutError, match="need a KITTI raw drive"):
        convert(split, tmp_path / "bag8", lidar=True)
