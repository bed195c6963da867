"""KITTI replay as a test bench: a synthetic raw drive with Velodyne scans of known planes ->
stereo_depth_kitti2bag -> stereo_depth_replay into the real node (SGBM) -> stereo_depth_eval
--live, which must report SGBM's error on that scene (computed here independently); with the true
depth image published in the node's place it must report ~0, and it counts what it cannot
compare."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.kitti_lidar import lidar_k, make_lidar_drive
from helpers.live_eval import expected_sgbm_errors, frame_rows
from stereo_depth_ros.bags.bag_writer import convert

pytestmark = pytest.mark.ros

INPUTS = ["/left/image_raw", "/right/image_raw", "/left/camera_info", "/right/camera_info"]
SGBM = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32", "-p", "sgbm.block_size:=5"]
BANDS = ("0-10m", "10-20m", "20-40m", "40-80m")


@pytest.fixture(scope="module")
def drive_and_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    scene = make_lidar_drive(root / "kitti", n_frames=3, size=(96, 192), per_band=60)
    return scene, Path(convert(scene.drive, root / "bag", storage="mcap")["bag"])


def _evaluator(*args):
    from helpers.ros import NodeProcess
    return NodeProcess(argv=[sys.executable, "-m", "stereo_depth_ros.tools.evaluate", "--live",
                             *args])


def _statuses(arrays) -> dict[int, dict[str, dict[str, str]]]:
    """depth_error messages -> {header stamp ns: {status name: {key: value}}}."""
    out = {}
    for array in arrays:
        stamp = array.header.stamp.sec * 10**9 + array.header.stamp.nanosec
        out[stamp] = {s.name: {kv.key: kv.value for kv in s.values} for s in array.status}
    return out


def test_replayed_drive_through_sgbm_node_gives_sgbms_error(drive_and_bag, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from helpers.ros import NodeProcess, RosTestContext, wait_for_publishers

    scene, bag = drive_and_bag
    out = tmp_path / "out"
    node = NodeProcess(SGBM)
    evaluator = _evaluator("--tf-bag", str(bag), "--idle-timeout", "10", "--out", str(out))
    ros = None
    try:
        node.start()
        evaluator.start()
        ros = RosTestContext("bench_peer")
        errors = ros.collect(DiagnosticArray, "/depth_error")
        node.wait_for_output(r"ready:", timeout=60)
        wait_for_publishers(errors.subscription, timeout=30)
        replay = NodeProcess(argv=[
            sys.executable, "-m", "stereo_depth_ros.tools.replay", str(bag), "--rate", "5",
            "--watch", "depth/image_rect", "--watch-type", "sensor_msgs/msg/Image",
            "--watch-subscribers", "2", "--step", "--step-timeout", "30",
            "--wait-topics", *INPUTS, "/velodyne_points"])
        with replay:
            assert replay.wait_exit(120) == 0, replay.output()
        assert "/velodyne_points x3" in replay.output()
        assert evaluator.wait_exit(60) == 0, evaluator.output()
    finally:
        if ros is not None:
            ros.close()
        evaluator.stop()
        node.stop()

    summary = json.loads((out / "depth_error_summary.json").read_text())
    counts = summary["counts"]
    if counts["scans_received"] != 3:
        # seen in 2 of 3 whole-suite runs (0 scans received), in 1 of ~25 runs of the module or
        # folder alone: the processes' own words, in full (pytest shows a failing test's
        # stdout), to tell which side lost them
        print(f"evaluator:\n{evaluator.output()}\nreplay:\n{replay.output()}\n"
              f"node:\n{node.output()}")
    assert counts["scans_received"] == 3 and counts["scans_evaluated"] == 3, counts
    assert counts["scans_unmatched"] == 0 and counts["depth_frames_unmatched"] == 0
    assert "velodyne->camera_left_optical_frame" in summary["transform"]
    rows = [r for r in frame_rows(out) if r["group"] == "all"]
    assert [int(r["depth_stamp_ns"]) for r in rows] == scene.left_stamps_ns
    assert [int(r["scan_stamp_ns"]) for r in rows] == scene.scan_stamps_ns
    expected = expected_sgbm_errors(scene)
    for row, want in zip(rows, expected):
        assert int(row["in_image"]) == want["in_image"] == 240
        assert int(row["compared"]) == want["compared"]
        assert float(row["mae_m"]) == pytest.approx(want["mae_m"], rel=1e-3)
        assert float(row["rmse_m"]) == pytest.approx(want["rmse_m"], rel=1e-3)
        assert float(row["over_1m_pct"]) == pytest.approx(want["over_1m_pct"], abs=1e-3)
        assert float(row["mae_m"]) > 0.01             # SGBM is not exact on this scene
    pooled = summary["errors"]["all"]
    assert pooled["n"] == sum(w["compared"] for w in expected)
    assert pooled["mae_m"] == pytest.approx(
        sum(w["mae_m"] * w["compared"] for w in expected) / pooled["n"], rel=1e-3)
    assert sum(summary["errors"][band]["n"] for band in BANDS) == pooled["n"]
    # the same numbers were published on depth_error, stamped with the depth frame
    published = _statuses(errors.snapshot())
    for row in rows:
        status = published[int(row["depth_stamp_ns"])]
        assert set(status) == {"depth_error: all"} | {f"depth_error: {b}" for b in BANDS}
        assert float(status["depth_error: all"]["mae_m"]) == pytest.approx(
            float(row["mae_m"]), rel=1e-5)
        assert int(status["depth_error: all"]["compared"]) == int(row["compared"])
    # the running table and the error-vs-range plot
    table = evaluator.output()
    assert "MAE (m)" in table and "scans: 3 received, 3 compared, 0 not compared" in table
    profile = list(csv.DictReader((out / "depth_error_vs_range.csv").open()))
    planes = [depth for _, _, depth in scene.bands]
    assert all(min(abs(float(r["range_m"]) - p) for p in planes) <= 1.0 for r in profile)
    assert sum(int(r["n"]) for r in profile) == pooled["n"]
    try:
        import matplotlib  # noqa: F401
        has_matplotlib = True
    except ImportError:
        has_matplotlib = False
    assert (out / "depth_error_vs_range.png").is_file() == has_matplotlib


def _cloud_msg(scan: np.ndarray, stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import PointCloud2, PointField
    from helpers.ros_messages import stamp
    msg = PointCloud2()
    msg.header.stamp = stamp(stamp_ns // 10**9, stamp_ns % 10**9)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, len(scan)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]
    msg.point_step, msg.row_step = 16, 16 * len(scan)
    msg.is_bigendian, msg.is_dense = False, True
    msg.data = np.ascontiguousarray(scan, "<f4").tobytes()
    return msg


def test_oracle_depth_gives_zero_error_and_unmatched_scans_are_counted(drive_and_bag, tmp_path):
    """The true depth image published as depth/image_rect (one frame as 16UC1 millimetres):
    error ~0. A scan 0.5 s from every depth frame is reported and counted, and a depth frame
    no scan matched is counted too. --kitti-calib supplies the transform; Ctrl-C ends the run
    and the results are still written."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from helpers.ros import RosTestContext, wait_for, wait_for_publishers, wait_for_subscribers
    from helpers.ros_messages import camera_info_msg, image_msg, stamp

    scene, _ = drive_and_bag
    height, width = scene.size
    out = tmp_path / "out"
    evaluator = _evaluator("--kitti-calib", str(scene.drive.parent), "--out", str(out))
    ros = None
    try:
        evaluator.start()
        ros = RosTestContext("oracle_peer")
        depth_pub = ros.publisher(Image, "/depth/image_rect")
        info_pub = ros.publisher(CameraInfo, "/depth/camera_info")
        cloud_pub = ros.publisher(PointCloud2, "/velodyne_points")
        errors = ros.collect(DiagnosticArray, "/depth_error")
        for publisher in (depth_pub, info_pub, cloud_pub):
            wait_for_subscribers(publisher, timeout=30)
        wait_for_publishers(errors.subscription, timeout=30)

        def send_depth(stamp_ns, encoding):
            when = stamp(stamp_ns // 10**9, stamp_ns % 10**9)
            p = np.hstack([lidar_k(), np.zeros((3, 1))])
            info_pub.publish(camera_info_msg(lidar_k(), np.zeros(5), np.eye(3), p, width,
                                             height, when, "camera_left_optical_frame"))
            array = scene.depth_m if encoding == "32FC1" else \
                np.round(scene.depth_m * 1000).astype(np.uint16)
            depth_pub.publish(image_msg(array, encoding, when, "camera_left_optical_frame"))

        for k, left_stamp in enumerate(scene.left_stamps_ns):
            cloud_pub.publish(_cloud_msg(scene.scans[k], scene.scan_stamps_ns[k], "velodyne"))
            send_depth(left_stamp, "16UC1" if k == 1 else "32FC1")
        lonely_scan = scene.left_stamps_ns[-1] + 500_000_000
        cloud_pub.publish(_cloud_msg(scene.scans[0], lonely_scan, "velodyne"))
        send_depth(scene.left_stamps_ns[-1] + 1_000_000_000, "32FC1")       # no scan for it
        wait_for(lambda: len(errors.snapshot()) >= 4, 30, what="4 depth_error messages")
        assert evaluator.stop() == 0, evaluator.output()
    finally:
        if ros is not None:
            ros.close()
        evaluator.stop()

    published = _statuses(errors.snapshot())
    (lonely,) = [v for v in published.values()
                 if v["depth_error: all"]["outcome"] != "matched"]
    assert lonely["depth_error: all"]["outcome"] == "no_depth_frame_within_tolerance"
    summary = json.loads((out / "depth_error_summary.json").read_text())
    assert summary["counts"] == {
        "scans_received": 4, "scans_evaluated": 3, "scans_unmatched": 1,
        "scans_no_depth_frame_within_tolerance": 1, "scans_pending": 0,
        "depth_frames_received": 4, "depth_frames_unmatched": 1,
        "depth_frames_without_camera_info": 0}
    assert summary["transform"].startswith("KITTI calibration in")
    assert summary["motion_compensation"].startswith("none")
    rows = [r for r in frame_rows(out) if r["group"] == "all"]
    assert [int(r["compared"]) for r in rows] == [240, 240, 240]
    for row in rows:
        assert float(row["mae_m"]) < (5e-4 if row is rows[1] else 1e-5)   # mm rounding
        assert float(row["over_5pct_pct"]) == 0.0
    assert all(summary["errors"][band]["n"] == 180 for band in BANDS)
    assert "not compared: no depth frame within tolerance (0.05 s)" in evaluator.output()


def test_pending_scans_are_reported_after_ctrl_c_shut_rclpy_down(drive_and_bag):
    """Ctrl-C shuts the context down before the evaluator finishes: the scan still waiting for
    a depth frame is then decided (and counted) without publishing."""
    import rclpy
    from rclpy.context import Context

    from stereo_depth_ros.core.lidar_eval import LiveEvaluation
    from stereo_depth_ros.core.transforms import TransformTree
    from stereo_depth_ros.ros.live_eval import LiveEvalNode
    from stereo_depth_ros.tools.live_eval import make_summary, summary_table

    scene, _ = drive_and_bag
    context = Context()
    rclpy.init(context=context)
    evaluation = LiveEvaluation(TransformTree().lookup)
    seen = []
    node = LiveEvalNode(evaluation, TransformTree(), context=context, on_reports=seen.extend)
    try:
        node._on_cloud(_cloud_msg(scene.scans[0], scene.scan_stamps_ns[0], "velodyne"))
        assert seen == [] and evaluation.matcher.pending == 1
        rclpy.shutdown(context=context)
        (report,) = node.finish()
    finally:
        node.destroy()
        rclpy.try_shutdown(context=context)
    assert seen == [report] and report.outcome == "no_depth_frame_within_tolerance"
    text = summary_table(make_summary(evaluation, {}))
    assert "1 received, 0 compared, 1 not compared (1 without a depth frame within the " \
        "tolerance)" in text
