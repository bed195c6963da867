"""stereo_depth_dump: the files it writes can be read back with the values that went in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.process import assert_clean_exit
from stereo_depth_ros.core.dump_files import FrameData, points_from_depth, write_frame, write_ply
from stereo_depth_ros.core.geometry import depth_to_millimetres


def read_ply(path):
    """Minimal PLY reader for the vertex layout dump writes: returns (xyz float32, rgb uint8)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply"
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    props = [line.split()[1:] for line in header if line.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"],
                     ["uchar", "green"], ["uchar", "blue"]]
    if "format binary_little_endian 1.0" in header:
        dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                          ("b", "u1")])
        assert len(data) - end == count * dtype.itemsize == count * 15
        vertex = np.frombuffer(data[end:], dtype=dtype)
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        rgb = np.stack([vertex["r"], vertex["g"], vertex["b"]], axis=1)
    else:
        assert "format ascii 1.0" in header
        rows = np.array([line.split() for line in data[end:].decode().splitlines()], dtype=float)
        assert rows.shape == (count, 6)
        xyz, rgb = rows[:, :3].astype(np.float32), rows[:, 3:].astype(np.uint8)
    return xyz, rgb


def synthetic_frame(height=40, width=64):
    depth = np.full((height, width), 12.3456, dtype=np.float32)
    depth[:, :10] = np.nan                   # invalid border
    depth[0, 20] = 70.0                      # beyond the 16-bit mm range -> 65535 (clamped)
    depth[1, 20] = 0.0004                    # rounds to 0 mm -> 0
    disparity = np.where(np.isfinite(depth), 8.0, np.nan).astype(np.float32)
    k = np.array([[100.0, 0, 32.0], [0, 100.0, 20.0], [0, 0, 1]])
    points = points_from_depth(depth, k)
    left = np.zeros((height, width, 3), dtype=np.uint8)
    left[..., 0] = np.arange(width, dtype=np.uint8)[None, :]     # red = column
    left[..., 2] = 200
    return FrameData(123, disparity, depth, points, left, left), k


def test_depth_mm_png_convention_is_the_nodes_16uc1():
    depth = np.array([[np.nan, 0.0, 1.2344, 65.535, 65.6, -1.0, np.inf, 0.0004]],
                     dtype=np.float32)
    millimetres, clamped = depth_to_millimetres(depth)
    np.testing.assert_array_equal(millimetres, [[0, 0, 1234, 65535, 65535, 0, 0, 0]])
    assert clamped == 1


@pytest.mark.parametrize("ply", ["binary", "ascii"])
def test_write_frame_files_read_back(tmp_path, ply):
    frame, k = synthetic_frame()
    entry = write_frame(tmp_path, 3, frame, ply=ply)
    assert entry["files"] == {"disparity_png": "000003_disparity.png",
                              "depth_mm_png": "000003_depth_mm.png",
                              "depth_npy": "000003_depth.npy",
                              "montage_png": "000003_montage.png", "ply": "000003_points.ply"}
    mm = cv2.imread(str(tmp_path / "000003_depth_mm.png"), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and mm.shape == (40, 64)
    assert (mm[:, :10] == 0).all() and mm[0, 20] == 65535 and mm[1, 20] == 0
    assert (mm[2:, 10:] == 12346).all()
    depth = np.load(tmp_path / "000003_depth.npy")
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(depth), np.isnan(frame.depth_m))
    np.testing.assert_allclose(depth[5, 30], 12.3456, rtol=1e-6)
    disparity = cv2.imread(str(tmp_path / "000003_disparity.png"), cv2.IMREAD_UNCHANGED)
    assert disparity.shape == (40, 64, 3) and disparity.dtype == np.uint8
    assert (disparity[:, :10] == 0).all() and disparity[:, 10:].any(axis=2).all()
    montage = cv2.imread(str(tmp_path / "000003_montage.png"))
    assert montage.shape == (40, 3 * 64, 3)
    xyz, rgb = read_ply(tmp_path / "000003_points.ply")
    valid = np.isfinite(frame.depth_m)
    assert entry["ply_vertices"] == len(xyz) == int(valid.sum())
    # the point of pixel (row 5, col 30): z = depth, x = (u - cx) z / fx, colour of that pixel
    rows, cols = np.nonzero(valid)
    index = int(np.flatnonzero((rows == 5) & (cols == 30))[0])
    tol = 1e-4 if ply == "binary" else 1e-4 * 100
    np.testing.assert_allclose(xyz[index], [(30 - k[0, 2]) / k[0, 0] * 12.3456,
                                            (5 - k[1, 2]) / k[1, 1] * 12.3456, 12.3456],
                               atol=tol)
    np.testing.assert_array_equal(rgb[index], [30, 0, 200])
    assert entry["depth_median_m"] == pytest.approx(12.3456, rel=1e-5)
    assert entry["valid_fraction"] == pytest.approx(valid.mean())


def test_write_frame_writes_depth_uncertainty_when_given(tmp_path):
    frame, _ = synthetic_frame()
    assert "depth_uncertainty_npy" not in write_frame(tmp_path, 0, frame)["files"]
    sigma = np.where(np.isfinite(frame.depth_m), np.float32(0.3), np.float32(np.nan))
    sigma[4, 12] = 0.5
    frame.depth_std_m = sigma
    entry = write_frame(tmp_path, 1, frame)
    assert entry["files"]["depth_uncertainty_npy"] == "000001_depth_uncertainty.npy"
    written = np.load(tmp_path / "000001_depth_uncertainty.npy")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, sigma)
    assert entry["depth_std_median_m"] == pytest.approx(0.3)


def test_write_ply_rejects_mismatched_colours(tmp_path):
    with pytest.raises(ValueError, match="colours"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 3)), np.zeros((3, 3), np.uint8))


@pytest.mark.ros
def test_dump_cli_writes_frames_from_topics(tmp_path):
    """The CLI as a subprocess, fed by in-test publishers built with the node's own builders."""
    from helpers.ros import NodeProcess, RosTestContext, wait_for_subscribers
    from helpers.ros_messages import stamp
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header
    from stereo_msgs.msg import DisparityImage

    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.geometry import depth_to_points
    from stereo_depth_ros.ros.image_conversion import numpy_to_image
    from stereo_depth_ros.ros.messages import (make_disparity_image, make_float_image,
                                               make_pointcloud2)

    rig = StereoRig(fx=100.0, fy=100.0, cx_left=32.0, cx_right=32.0, cy=20.0, baseline_m=0.5,
                    width=64, height=40)
    out = tmp_path / "dump"
    argv = [sys.executable, "-m", "stereo_depth_ros.tools.dump", "--out", str(out),
            "--max-frames", "2", "--timeout", "60", "--namespace", "/cam", "--ply", "ascii"]
    ros = RosTestContext("dump_feeder")
    try:
        with NodeProcess(argv=argv) as dump:
            pubs = {name: ros.publisher(msg_type, f"/cam/{name}") for name, msg_type in (
                ("disparity", DisparityImage), ("depth/image_rect", Image),
                ("points2", PointCloud2), ("matcher/left/image_rect", Image),
                ("depth/uncertainty", Image))}
            for pub in pubs.values():
                wait_for_subscribers(pub)
            left = np.zeros((40, 64, 3), dtype=np.uint8)
            left[..., 1] = 77
            for k, shift in enumerate((10.0, 5.0)):
                disparity = np.full((40, 64), shift, dtype=np.float32)
                disparity[:, :4] = np.nan
                depth = np.float32(rig.fx * rig.baseline_m) / disparity
                header = Header(stamp=stamp(100 + k), frame_id="cam_optical")
                pubs["matcher/left/image_rect"].publish(numpy_to_image(left, "rgb8", header))
                pubs["points2"].publish(make_pointcloud2(
                    depth_to_points(depth, rig.fx, rig.fy, rig.cx_left, rig.cy), header, left))
                pubs["depth/image_rect"].publish(make_float_image(depth, header))
                # sigma_Z = Z^2 sigma_d / (f B) with sigma_d = 0.25 px
                pubs["depth/uncertainty"].publish(make_float_image(
                    depth * depth * np.float32(0.25 / (rig.fx * rig.baseline_m)), header))
                pubs["disparity"].publish(make_disparity_image(disparity, header, rig, 0, 64,
                                                               1 / 16))
            assert dump.wait_exit(60) == 0, dump.output()
    finally:
        ros.close()
    summary = json.loads((out / "summary.json").read_text())
    assert [f["stamp_ns"] for f in summary["frames"]] == [100 * 10**9, 101 * 10**9]
    assert summary["frames"][0]["topics"] == ["depth/image_rect", "depth/uncertainty",
                                              "disparity", "matcher/left/image_rect",
                                              "points2"]
    for index, expected_depth in ((0, 5.0), (1, 10.0)):
        depth = np.load(out / f"{index:06d}_depth.npy")
        assert np.isnan(depth[:, :4]).all()
        np.testing.assert_allclose(depth[:, 4:], expected_depth, rtol=1e-6)
        sigma = np.load(out / f"{index:06d}_depth_uncertainty.npy")
        assert sigma.dtype == np.float32 and np.isnan(sigma[:, :4]).all()
        np.testing.assert_allclose(sigma[:, 4:], expected_depth ** 2 * 0.25 / 50.0, rtol=1e-5)
        assert summary["frames"][index]["depth_std_median_m"] == pytest.approx(
            expected_depth ** 2 * 0.25 / 50.0, rel=1e-5)
        mm = cv2.imread(str(out / f"{index:06d}_depth_mm.png"), cv2.IMREAD_UNCHANGED)
        assert (mm[:, 4:] == expected_depth * 1000).all() and (mm[:, :4] == 0).all()
        xyz, rgb = read_ply(out / f"{index:06d}_points.ply")
        assert len(xyz) == 40 * 60
        np.testing.assert_allclose(xyz[:, 2], expected_depth, rtol=1e-4)
        assert (rgb == [0, 77, 0]).all()
        montage = cv2.imread(str(out / f"{index:06d}_montage.png"))
        assert montage.shape == (40, 192, 3)


@pytest.mark.ros
@pytest.mark.parametrize("witness", ["publisher", "diagnostics"])
def test_dump_ends_when_the_stream_ends_before_max_frames(tmp_path, witness):
    """--max-frames 20 on a 3-frame stream: once the node's input (left/image_raw) loses its
    publisher, as when a bag replay finishes, the dump writes what arrived and exits 0. The input
    is known either as a publisher the dump saw, or (a bag too short for the dump to discover
    its player) from the node's /diagnostics counting messages on that topic."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from helpers.ros import NodeProcess, RosTestContext, wait_for_subscribers
    from helpers.ros_messages import stamp
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from stereo_msgs.msg import DisparityImage

    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.ros.messages import make_disparity_image

    rig = StereoRig(fx=100.0, fy=100.0, cx_left=32.0, cx_right=32.0, cy=20.0, baseline_m=0.5,
                    width=64, height=40)
    out, namespace = tmp_path / "dump", f"/short_{witness}"
    argv = [sys.executable, "-m", "stereo_depth_ros.tools.dump", "--out", str(out),
            "--max-frames", "20", "--namespace", namespace, "--ply", "none", "--end-grace",
            "0.5", "--diagnostics-wait", "0"]
    ros = RosTestContext("short_stream_feeder")
    try:
        with NodeProcess(argv=argv) as dump:
            camera = None
            if witness == "publisher":                             # the bag's input side
                camera = ros.publisher(Image, f"{namespace}/left/image_raw")
            disparity_pub = ros.publisher(DisparityImage, f"{namespace}/disparity")
            wait_for_subscribers(disparity_pub)
            if camera is not None:
                dump.wait_for_output(f"input found on {namespace}/left/image_raw")
            for k in range(3):
                disparity = np.full((40, 64), 10.0 - k, dtype=np.float32)
                disparity_pub.publish(make_disparity_image(
                    disparity, Header(stamp=stamp(200 + k), frame_id="cam"), rig, 0, 64,
                    1 / 16))
            dump.wait_for_output(r"frame 2 \(stamp 202\.000000000\)")
            if camera is not None:
                ros.node.destroy_publisher(camera)                  # the bag has ended
            else:                                                   # the node's report
                diagnostics = ros.publisher(DiagnosticArray, "/diagnostics")
                wait_for_subscribers(diagnostics)
                diagnostics.publish(DiagnosticArray(status=[DiagnosticStatus(
                    name="stereo_depth_node: pipeline", values=[KeyValue(
                        key=f"messages_in.{namespace}/left/image_raw", value="3")])]))
            assert dump.wait_exit(60) == 0, dump.output()
            output = dump.output()
    finally:
        ros.close()
    assert f"stream ended: {namespace}/left/image_raw has no publisher any more" in output
    assert "stream ended after 3 frame(s) of --max-frames 20" in output
    summary = json.loads((out / "summary.json").read_text())
    assert [f["stamp_ns"] for f in summary["frames"]] == [(200 + k) * 10**9 for k in range(3)]
    for k in range(3):
        np.testing.assert_allclose(np.load(out / f"{k:06d}_depth.npy"),
                                   rig.fx * rig.baseline_m / (10.0 - k), rtol=1e-6)


@pytest.mark.parametrize("case", ["existing file", "under /proc"])
def test_unusable_out_folder_is_one_line(tmp_path, capsys, case):
    from stereo_depth_ros.tools.dump import main

    if case == "existing file":
        target = tmp_path / "taken"
        target.write_text("not a folder")
        expected = f"stereo_depth_dump: error: --out {target}: exists and is not a folder"
    else:
        target = Path("/proc/nope")
        expected = f"stereo_depth_dump: error: --out {target}: cannot create the folder ("
    assert main(["--out", str(target), "--max-frames", "1"]) == 1
    err = capsys.readouterr().err
    assert_clean_exit(err)
    assert err.strip().splitlines()[-1].startswith(expected), err


def test_bad_numbers_are_usage_errors(tmp_path, capsys):
    from stereo_depth_ros.tools.dump import main

    for flag, value in (("--max-frames", "0"), ("--timeout", "-1"), ("--end-grace", "nan")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(tmp_path), flag, value])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
            f"stereo_depth_dump: error: argument {flag}: ")
