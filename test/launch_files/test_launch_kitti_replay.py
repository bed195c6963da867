"""launch/kitti_replay.launch.py through the real launch API on the colcon-installed package: a
stereo_depth_kitti2bag bag played into the node in one namespace on sim time (every frame's
depth checked), and the same launch feeding the live LiDAR evaluation (stereo_depth_eval --live)
with SGBM's expected error on the LiDAR test bench."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.colcon import clean_env, installed, sourced  # noqa: E402
from helpers.launching import Launch, get_parameters, write_params  # noqa: E402
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import NodeProcess, RosTestContext, wait_for  # noqa: E402
from helpers.ros_messages import as_array  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def install_space(real_ros_packages, colcon_install_space):
    return colcon_install_space


def test_kitti_replay_launch_plays_a_bag_into_the_node(install_space, tmp_path):
    """bag:=<stereo_depth_kitti2bag output> namespace:=kitti params_file:=<SGBM> loop:=true: the
    replay and the node share the namespace and sim time, and every frame's depth is right."""
    from helpers.kitti import BASELINE_M as KITTI_BASELINE_M
    from helpers.kitti import FX as KITTI_FX
    from helpers.kitti import LEFT_STAMPS, make_raw_drive
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from stereo_depth_ros.bags.bag_writer import convert
    from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp

    size, shift = (96, 192), 8
    drive = make_raw_drive(tmp_path / "kitti", n_frames=3, size=size, shift=shift)
    bag = convert(drive, tmp_path / "bag", storage="sqlite3")["bag"]
    params = write_params(tmp_path / "sgbm.yaml", backend="sgbm", diagnostics_period_seconds=0.5,
                          **{"sgbm.num_disparities": 32})
    stamps = [parse_kitti_timestamp(text) for text in LEFT_STAMPS[:3]]
    ctx = RosTestContext("kitti_replay_peer")
    launch = Launch(install_space, "kitti_replay.launch.py",
                    {"bag": str(bag), "namespace": "kitti", "params_file": str(params),
                     "loop": "true"})
    try:
        depth = ctx.collect(Image, "/kitti/depth/image_rect")
        clock = ctx.collect(Clock, "/clock")
        launch.start()
        launch.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        # Looping: frames published before the node saw this subscription come round again.
        try:
            frames = {ns: depth.wait_for(lambda m, ns=ns: m.header.stamp.sec * 10**9
                                         + m.header.stamp.nanosec == ns, 60.0,
                                         what=f"depth of the frame stamped {ns}")
                      for ns in stamps}
        except AssertionError as error:
            raise AssertionError(f"{error}; launch output:\n{launch.output()}") from None
        # The replay drives the sim clock with the bag's stamps (best effort: a /clock message
        # lost in one loop comes round again in the next).
        for ns in stamps:
            clock.wait_for(lambda c, ns=ns: c.clock.sec * 10**9 + c.clock.nanosec == ns, 30.0,
                           what=f"/clock at the frame stamped {ns}")
        applied = get_parameters(ctx, "/kitti/stereo_depth_node", ["use_sim_time", "backend"])
    finally:
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert applied == {"use_sim_time": True, "backend": "sgbm"}
    for ns, msg in frames.items():
        z = as_array(msg)[10:-10, 48:-10]
        assert np.isfinite(z).mean() > 0.9, ns
        assert np.nanmedian(z) == pytest.approx(KITTI_FX * KITTI_BASELINE_M / shift, rel=0.02)


def test_kitti_replay_launch_feeds_the_live_lidar_evaluation(install_space, tmp_path):
    """The README's LiDAR check, with the installed executables: stereo_depth_kitti2bag on a raw
    drive with Velodyne scans, `stereo_depth_eval --live --tf-bag BAG` in the namespace (started
    first), then kitti_replay.launch.py bag:= namespace:=: the scans reach the evaluator in the
    namespace and every depth frame's error is SGBM's own on that scene (computed independently
    in test_live_eval)."""
    import json

    from diagnostic_msgs.msg import DiagnosticArray
    from helpers.kitti_lidar import make_lidar_drive
    from helpers.live_eval import expected_sgbm_errors, frame_rows

    scene = make_lidar_drive(tmp_path / "kitti", n_frames=3, size=(96, 192), per_band=60)
    bag, out = tmp_path / "drive_bag", tmp_path / "lidar_out"
    kitti2bag, live_eval = (installed(install_space, "lib", "stereo_depth_ros", executable)
                            for executable in ("stereo_depth_kitti2bag", "stereo_depth_eval"))
    convert = subprocess.run(sourced(install_space, f"exec {kitti2bag} {scene.drive} {bag}"),
                             env=clean_env(), capture_output=True, text=True, timeout=120)
    assert convert.returncode == 0, convert.stdout + convert.stderr
    params = write_params(tmp_path / "sgbm.yaml", backend="sgbm",
                          **{"sgbm.num_disparities": 32, "sgbm.block_size": 5})
    evaluator = NodeProcess(argv=sourced(install_space, f"exec {live_eval} --live --tf-bag {bag} "
                                         f"--out {out} --ros-args -r __ns:=/kitti"),
                            env=clean_env())
    ctx = RosTestContext("lidar_launch_peer")
    launch = Launch(install_space, "kitti_replay.launch.py",
                    {"bag": str(bag), "namespace": "kitti", "params_file": str(params),
                     "loop": "true"})
    try:
        errors = ctx.collect(DiagnosticArray, "/kitti/depth_error")
        evaluator.start()
        wait_for(lambda: ctx.node.count_subscribers("/kitti/velodyne_points") >= 1, 60,
                 what="the evaluator's /kitti/velodyne_points subscription")
        launch.start()

        def matched_stamps() -> set[int]:
            return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                    for m in errors.snapshot()
                    if any(kv.key == "outcome" and kv.value == "matched"
                           for status in m.status for kv in status.values)}
        # Looping: a depth frame sent before the evaluator saw the node's publisher comes again.
        try:
            wait_for(lambda: set(scene.left_stamps_ns) <= matched_stamps(), 90,
                     what="a compared scan for every depth frame")
        except AssertionError as error:
            raise AssertionError(f"{error}; evaluator:\n{evaluator.output()}\nlaunch:\n"
                                 f"{launch.output()}") from None
        assert evaluator.stop() == 0, evaluator.output()        # Ctrl-C: results written
    finally:
        ctx.close()
        evaluator.stop()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert_clean_exit(launch.output() + evaluator.output(), what="the launch and the evaluator")
    summary = json.loads((out / "depth_error_summary.json").read_text())
    assert "velodyne->camera_left_optical_frame" in summary["transform"]
    expected = dict(zip(scene.left_stamps_ns, expected_sgbm_errors(scene)))
    rows = [r for r in frame_rows(out) if r["group"] == "all" and r["outcome"] == "matched"]
    assert {int(r["depth_stamp_ns"]) for r in rows} == set(scene.left_stamps_ns)
    for row in rows:
        want = expected[int(row["depth_stamp_ns"])]
        assert int(row["compared"]) == want["compared"]
        assert float(row["mae_m"]) == pytest.approx(want["mae_m"], rel=1e-3)
        assert float(row["rmse_m"]) == pytest.approx(want["rmse_m"], rel=1e-3)
    assert summary["counts"]["scans_evaluated"] == len(rows)
