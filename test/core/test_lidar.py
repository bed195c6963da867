"""LiDAR ground truth without ROS: KITTI extrinsics, projection into the depth image, error
statistics per range band, scan <-> depth frame matching, and the live evaluation session."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from helpers.kitti_lidar import (LIDAR_BASELINE_M, LIDAR_FX, R_RECT_00, VELO_TO_CAM0_R,
                                 VELO_TO_CAM0_T, camera_from_velodyne, lidar_calib_texts, lidar_k,
                                 lidar_projections, lidar_scene_images, make_lidar_drive)
from stereo_depth_ros.core.depth_error import BandedErrors, ErrorSums, RangeProfile, banded_errors
from stereo_depth_ros.core.kitti_calib import (CalibrationFileError, load_velodyne_to_camera,
                                               parse_calib_text, rectified_camera_offset,
                                               velodyne_to_camera)
from stereo_depth_ros.core.lidar import (XYZI_FIELDS, PointCloudError, compare_scan, pack_xyzi,
                                         project_points, read_velodyne_bin, sample_depth,
                                         xyz_from_cloud)
from stereo_depth_ros.core.lidar_eval import NO_TRANSFORM, LiveEvaluation
from stereo_depth_ros.core.stamp_matching import (MATCHED, NO_REFERENCE, OVERFLOW,
                                                  NearestStampMatcher)
from stereo_depth_ros.core.transforms import (TransformLookupError, TransformTree,
                                              StaticTransform, invert_rigid,
                                              quaternion_from_rotation, rigid,
                                              rotation_from_quaternion, rotation_from_rpy,
                                              static_transforms_from_message)

MS = 1_000_000


# ------------------------------------------------------------------------ transforms


def test_quaternions_hand_checked_and_round_trip():
    quarter_turn_z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(quaternion_from_rotation(quarter_turn_z),
                               [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    # half turn about x: the trace <= 0 branch
    np.testing.assert_allclose(quaternion_from_rotation(np.diag([1.0, -1.0, -1.0])),
                               [1, 0, 0, 0], atol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(20):
        rotation = rotation_from_rpy(*rng.uniform(-3, 3, 3))
        q = quaternion_from_rotation(rotation)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(rotation_from_quaternion(*q), rotation, atol=1e-12)
    # yaw only: x axis turned towards y
    np.testing.assert_allclose(rotation_from_rpy(0, 0, math.pi / 2) @ [1, 0, 0], [0, 1, 0],
                               atol=1e-12)
    with pytest.raises(ValueError, match="tf x: not a rotation quaternion"):
        rotation_from_quaternion(0, 0, 0, 0, what="tf x")


def test_transform_tree_composes_chains_in_both_directions():
    a_b = rigid(rotation_from_rpy(0, 0, math.pi / 2), [1, 0, 0])
    b_c = rigid(np.eye(3), [0, 2, 0])
    a_d = rigid(rotation_from_rpy(math.pi, 0, 0), [0, 0, 3])
    tree = TransformTree([StaticTransform("a", "b", a_b), StaticTransform("b", "c", b_c),
                          StaticTransform("a", "d", a_d)])
    point_c = np.array([0.5, 0.0, 0.0, 1.0])
    # hand check: in b the point is (0.5, 2, 0); b is a turned 90 deg about z at (1, 0, 0)
    np.testing.assert_allclose(tree.lookup("a", "c") @ point_c, [1 - 2, 0.5, 0, 1], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("d", "c"), invert_rigid(a_d) @ a_b @ b_c,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("c", "d") @ tree.lookup("d", "c"), np.eye(4),
                               atol=1e-12)
    np.testing.assert_array_equal(tree.lookup("/b", "b"), np.eye(4))
    tree.add(StaticTransform("x", "y", np.eye(4)))
    with pytest.raises(TransformLookupError, match="from 'c' to 'y'.*a->b, b->c, a->d, x->y"):
        tree.lookup("y", "c")


def _tf_message(parent, child, translation, quaternion):
    xyz = SimpleNamespace(**dict(zip("xyz", translation)))
    rotation = SimpleNamespace(**dict(zip("xyzw", quaternion)))
    return SimpleNamespace(transforms=[SimpleNamespace(
        header=SimpleNamespace(frame_id=parent), child_frame_id=child,
        transform=SimpleNamespace(translation=xyz, rotation=rotation))])


def test_tf_messages_are_read_by_attribute_and_checked():
    (edge,) = static_transforms_from_message(
        _tf_message("/velodyne", "cam", (1, 2, 3), (0, 0, math.sqrt(0.5), math.sqrt(0.5))))
    assert (edge.parent, edge.child, edge.translation) == ("velodyne", "cam", (1.0, 2.0, 3.0))
    np.testing.assert_allclose(edge.matrix[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(ValueError, match=r"transforms\[0\] \(a -> a\)"):
        static_transforms_from_message(_tf_message("a", "a", (0, 0, 0), (0, 0, 0, 1)))
    with pytest.raises(ValueError, match="rotation: not a rotation quaternion"):
        static_transforms_from_message(_tf_message("a", "b", (0, 0, 0), (0, 0, 0, 0)))


# ------------------------------------------------------------------------ KITTI extrinsics


def test_velodyne_to_camera_hand_computed_pixel():
    """R swaps the axes (camera x = -velo y, y = -velo z, z = velo x), T = (1, 2, 3),
    R_rect_00 = I, P_rect_02: fx = fy = 100, cx = 50, cy = 40, P[0, 3] = 50 (t = 0.5 m).
    x_velo = (10, 1, -0.5) -> camera 0 (-1 + 1, 0.5 + 2, 10 + 3) = (0, 2.5, 13) -> camera 2
    (0.5, 2.5, 13) -> u = 100 * 0.5 / 13 + 50 = 53.846, v = 100 * 2.5 / 13 + 40 = 59.231."""
    velo = parse_calib_text("R: 0 -1 0 0 0 -1 1 0 0\nT: 1 2 3\n")
    cam = parse_calib_text("R_rect_00: 1 0 0 0 1 0 0 0 1\n"
                           "P_rect_02: 100 0 50 50 0 100 40 0 0 0 1 0\n")
    transform = velodyne_to_camera(velo, cam)
    np.testing.assert_allclose(transform @ [10, 1, -0.5, 1], [0.5, 2.5, 13, 1], atol=1e-12)
    k = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    projection = project_points(np.array([[10.0, 1.0, -0.5]]), transform, k, 80, 64)
    assert projection.u[0] == pytest.approx(53.846154, abs=1e-6)
    assert projection.v[0] == pytest.approx(59.230769, abs=1e-6)
    assert (projection.col[0], projection.row[0], projection.depth_m[0]) == (54, 59, 13.0)
    # without camera 2's offset the point lands 3.8 px further left
    no_offset = velodyne_to_camera(velo, parse_calib_text(
        "R_rect_00: 1 0 0 0 1 0 0 0 1\nP_rect_02: 100 0 50 0 0 100 40 0 0 0 1 0\n"))
    assert project_points(np.array([[10.0, 1.0, -0.5]]), no_offset, k, 80, 64).col[0] == 50


def test_velodyne_to_camera_matches_the_devkit_projection(tmp_path):
    """Every point projects where the KITTI devkit puts it: P_rect_02 R_rect_00 [R|T] x, to
    1e-6 px, with the full offset t_2 = K^-1 P_rect_02[:, 3] (not only its x term)."""
    cam_text, velo_text = lidar_calib_texts()
    (tmp_path / "calib_cam_to_cam.txt").write_text(cam_text)
    (tmp_path / "calib_velo_to_cam.txt").write_text(velo_text)
    transform = load_velodyne_to_camera(tmp_path / "calib_velo_to_cam.txt",
                                        tmp_path / "calib_cam_to_cam.txt")
    np.testing.assert_allclose(transform, camera_from_velodyne(), atol=1e-9)
    p2, _ = lidar_projections()
    rect = np.eye(4)
    rect[:3, :3] = R_RECT_00
    tr = np.eye(4)
    tr[:3, :3], tr[:3, 3] = VELO_TO_CAM0_R, VELO_TO_CAM0_T
    rng = np.random.default_rng(5)
    velo = np.column_stack([rng.uniform(3, 70, 500), rng.uniform(-20, 20, 500),
                            rng.uniform(-2, 2, 500)])
    devkit = (p2 @ rect @ tr @ np.column_stack([velo, np.ones(500)]).T).T
    u, v, w = devkit[:, 0] / devkit[:, 2], devkit[:, 1] / devkit[:, 2], devkit[:, 2]
    projection = project_points(velo, transform, lidar_k(), 10_000, 10_000)
    inside = projection.index
    np.testing.assert_allclose(projection.u, u[inside] + 0.0, atol=1e-6)
    np.testing.assert_allclose(projection.v, v[inside], atol=1e-6)
    np.testing.assert_allclose(projection.depth_m, w[inside], atol=1e-9)
    np.testing.assert_allclose(rectified_camera_offset(p2), (0.06, 0.001, 0.003), atol=1e-12)


def test_missing_calibration_files_and_keys_are_named(tmp_path):
    cam_text, velo_text = lidar_calib_texts()
    (tmp_path / "calib_cam_to_cam.txt").write_text(cam_text.replace("R_rect_00", "R_rect_0"))
    with pytest.raises(CalibrationFileError, match="calib_velo_to_cam.txt: calibration file not "
                       "found"):
        load_velodyne_to_camera(tmp_path / "calib_velo_to_cam.txt",
                                tmp_path / "calib_cam_to_cam.txt")
    (tmp_path / "calib_velo_to_cam.txt").write_text(velo_text)
    with pytest.raises(CalibrationFileError, match=r"calib_cam_to_cam.txt: key 'R_rect_00' not "
                       "found"):
        load_velodyne_to_camera(tmp_path / "calib_velo_to_cam.txt",
                                tmp_path / "calib_cam_to_cam.txt")
    (tmp_path / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 2\nT: 0 0 0\n")
    (tmp_path / "calib_cam_to_cam.txt").write_text(cam_text)
    with pytest.raises(CalibrationFileError, match="calib_velo_to_cam.txt: R: not a rotation"):
        load_velodyne_to_camera(tmp_path / "calib_velo_to_cam.txt",
                                tmp_path / "calib_cam_to_cam.txt")


# ------------------------------------------------------------------------ projection


def test_projection_bounds_behind_and_sampling_hand_checked():
    """Identity transform, fx = fy = 10, cx = cy = 0, a 4 x 3 image: pixel centres at integers,
    so u in [-0.5, 3.5) is inside."""
    k = np.array([[10.0, 0, 0], [0, 10, 0], [0, 0, 1]])
    points = np.array([
        [0.0, 0.0, 2.0],         # u = v = 0 -> pixel (0, 0)
        [0.6, 0.4, 2.0],         # u = 3.0, v = 2.0 -> pixel (3, 2)
        [-0.1, 0.0, 2.0],        # u = -0.5: the left edge of pixel 0 -> inside
        [-0.102, 0.0, 2.0],      # u = -0.51 -> outside
        [0.7, 0.0, 2.0],         # u = 3.5 -> column 4 -> outside (width 4)
        [0.0, 0.5, 2.0],         # v = 2.5 -> row 3 -> outside (height 3)
        [0.0, 0.0, -2.0],        # behind
        [0.0, 0.0, 0.05],        # closer than min_depth_m 0.1: behind
        [np.nan, 0.0, 2.0],      # not finite
        [0.2, 0.1, 4.0],         # u = 0.5 -> column 1 (rounds half up), v = 0.25 -> row 0
    ])
    projection = project_points(points, np.eye(4), k, 4, 3)
    assert projection.index.tolist() == [0, 1, 2, 9]
    assert projection.col.tolist() == [0, 3, 0, 1]
    assert projection.row.tolist() == [0, 2, 0, 0]
    assert projection.depth_m.tolist() == [2.0, 2.0, 2.0, 4.0]
    assert (projection.total, projection.in_image, projection.behind, projection.outside,
            projection.not_finite) == (10, 4, 2, 3, 1)
    depth = np.array([[2.5, 0.0, 9, 9], [9, 9, 9, 9], [9, 9, 9, np.inf]], np.float32)
    sampled = sample_depth(depth, projection)
    assert sampled[0] == 2.5 and np.isnan(sampled[1]) and sampled[2] == 2.5
    assert np.isnan(sampled[3])                              # 0 is "no depth" (REP 118)
    comparison = compare_scan(points, depth, k, np.eye(4))
    assert (comparison.compared, comparison.no_depth) == (2, 2)
    assert comparison.truth_m.tolist() == [2.0, 2.0]
    assert comparison.estimate_m.tolist() == [2.5, 2.5]


def test_scan_files_and_cloud_buffers(tmp_path):
    points = np.arange(24, dtype=np.float32).reshape(6, 4)
    path = tmp_path / "0000000000.bin"
    path.write_bytes(points.tobytes())
    np.testing.assert_array_equal(read_velodyne_bin(path), points)
    (tmp_path / "bad.bin").write_bytes(b"\0" * 20)
    with pytest.raises(PointCloudError, match=r"bad.bin: 20 bytes is not a whole number"):
        read_velodyne_bin(tmp_path / "bad.bin")
    with pytest.raises(PointCloudError, match="missing.bin: cannot read scan"):
        read_velodyne_bin(tmp_path / "missing.bin")
    # two rows of three points, each row padded by 8 bytes
    data = pack_xyzi(points)
    padded = data[:48] + b"\xff" * 8 + data[48:] + b"\xff" * 8
    xyz = xyz_from_cloud(padded, XYZI_FIELDS, point_step=16, row_step=56, width=3, height=2)
    np.testing.assert_array_equal(xyz, points[:, :3])
    # big-endian float64 x, y, z with another field first
    record = np.zeros(2, dtype=[("t", ">u4"), ("x", ">f8"), ("y", ">f8"), ("z", ">f8")])
    record["x"], record["y"], record["z"] = [1.5, -2], [3, 4], [5, 6.25]
    fields = [("t", 0, 6, 1), ("x", 4, 8, 1), ("y", 12, 8, 1), ("z", 20, 8, 1)]
    np.testing.assert_array_equal(
        xyz_from_cloud(record.tobytes(), fields, point_step=28, row_step=56, width=2, height=1,
                       is_bigendian=True), [[1.5, 3, 5], [-2, 4, 6.25]])
    with pytest.raises(PointCloudError, match="scan: no field z"):
        xyz_from_cloud(data, XYZI_FIELDS[:2], point_step=16, row_step=96, width=6, height=1,
                       source="scan")
    with pytest.raises(PointCloudError, match="field y has datatype 2"):
        xyz_from_cloud(data, [XYZI_FIELDS[0], ("y", 4, 2, 1), XYZI_FIELDS[2]], point_step=16,
                       row_step=96, width=6, height=1)
    with pytest.raises(PointCloudError, match="data has 96 bytes"):
        xyz_from_cloud(data, XYZI_FIELDS, point_step=16, row_step=96, width=6, height=2)


# ------------------------------------------------------------------------ error statistics


def test_error_statistics_hand_computed():
    truth = np.array([5.0, 15.0, 30.0, 60.0, 100.0])
    estimate = np.array([5.5, 14.0, 31.6, 60.0, 90.0])     # errors 0.5, 1, 1.6, 0, 10
    summary = banded_errors(truth, estimate).summary()
    overall = summary["all"]
    assert overall["n"] == 5
    assert overall["mae_m"] == pytest.approx(13.1 / 5)
    assert overall["rmse_m"] == pytest.approx(math.sqrt((0.25 + 1 + 2.56 + 0 + 100) / 5))
    assert overall["rel_err"] == pytest.approx((0.1 + 1 / 15 + 1.6 / 30 + 0 + 0.1) / 5)
    assert overall["over_1m_pct"] == pytest.approx(40.0)       # 1.6 and 10; 1.0 is not > 1
    assert overall["over_5pct_pct"] == pytest.approx(80.0)     # all but the exact one
    assert [summary[b]["n"] for b in ("0-10m", "10-20m", "20-40m", "40-80m")] == [1, 1, 1, 1]
    assert summary["10-20m"]["mae_m"] == pytest.approx(1.0)
    assert summary["20-40m"]["over_1m_pct"] == 100.0 and summary["40-80m"]["mae_m"] == 0.0
    empty = ErrorSums().summary()
    assert empty["n"] == 0 and math.isnan(empty["mae_m"])
    # frames add up to the pooled statistics
    pooled = BandedErrors()
    pooled += banded_errors(truth[:2], estimate[:2])
    pooled += banded_errors(truth[2:], estimate[2:])
    for label, values in pooled.summary().items():
        assert values == pytest.approx(summary[label], nan_ok=True), label
    profile = RangeProfile()
    profile.add(truth, estimate)
    assert [(r["range_m"], r["n"], r["mae_m"]) for r in profile.rows()] == [
        (5.5, 1, 0.5), (15.5, 1, 1.0), (30.5, 1, pytest.approx(1.6)), (60.5, 1, 0.0)]
    with pytest.raises(ValueError, match="estimates must be finite"):
        banded_errors(truth, np.full(5, np.nan))


# ------------------------------------------------------------------------ stamp matching


def test_scans_match_the_nearest_depth_frame_and_misses_are_counted():
    matcher = NearestStampMatcher(tolerance_ns=50 * MS)
    assert matcher.add_query(995 * MS, "a") == []         # nothing to decide on yet
    (decided,) = matcher.add_reference(1000 * MS)          # a frame at or after it: decided
    assert (decided.payload, decided.outcome, decided.offset_ns) == ("a", MATCHED, -5 * MS)
    assert matcher.add_query(1040 * MS, "b") == []         # a nearer frame may still come
    (decided,) = matcher.add_reference(1100 * MS)
    assert (decided.payload, decided.reference_stamp_ns) == ("b", 1000 * MS)   # 40 < 60 ms
    (decided,) = matcher.add_query(1090 * MS, "c")         # 1100 already there: decided now
    assert decided.reference_stamp_ns == 1100 * MS
    assert matcher.add_query(1500 * MS, "d") == []
    (decided,) = matcher.add_reference(1700 * MS)          # 200 ms away both sides: no match
    assert (decided.payload, decided.outcome, decided.reference_stamp_ns) == \
        ("d", NO_REFERENCE, None)
    assert matcher.add_query(1800 * MS, "e") == []
    (decided,) = matcher.flush()                           # end: decided with what there is
    assert (decided.payload, decided.outcome) == ("e", NO_REFERENCE)
    assert matcher.outcomes == {MATCHED: 3, NO_REFERENCE: 2}
    assert (matcher.references_seen, matcher.references_unmatched) == (3, 1)    # 1700 ms

    small = NearestStampMatcher(tolerance_ns=10 * MS, max_pending=2)
    assert small.add_query(100 * MS, 1) == [] and small.add_query(200 * MS, 2) == []
    (pushed_out,) = small.add_query(300 * MS, 3)
    assert (pushed_out.payload, pushed_out.outcome) == (1, OVERFLOW)


# ------------------------------------------------------------------------ live session


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_lidar_drive(tmp_path_factory.mktemp("lidar"), n_frames=3, per_band=40)


def test_live_session_oracle_gives_zero_error_and_counts_every_scan(scene):
    evaluation = LiveEvaluation(lambda target, source: camera_from_velodyne(),
                                tolerance_ns=50 * MS)
    height, width = scene.size
    reports = []
    for k, stamp in enumerate(scene.left_stamps_ns):
        reports += evaluation.add_scan(scene.scan_stamps_ns[k], scene.scans[k][:, :3],
                                       "velodyne")
        reports += evaluation.add_depth_image(stamp, scene.depth_m, "camera")  # info after it
        reports += evaluation.add_camera_info(stamp, lidar_k(), width, height)
    reports += evaluation.add_scan(scene.left_stamps_ns[-1] + 400 * MS, scene.scans[0][:, :3],
                                   "velodyne")
    reports += evaluation.finish()
    assert [r.outcome for r in reports] == [MATCHED] * 3 + [NO_REFERENCE]
    assert [r.depth_stamp_ns for r in reports[:3]] == scene.left_stamps_ns
    for report, scan in zip(reports, scene.scans):
        assert (report.points, report.in_image, report.compared) == (len(scan), 160, 160)
        assert report.behind == 15 and report.outside == len(scan) - 160 - 15
        assert report.errors.summary()["all"]["mae_m"] < 1e-5
    totals = evaluation.totals.summary()
    assert totals["all"]["n"] == 480 and totals["40-80m"]["n"] == 120
    counts = evaluation.counts()
    assert counts["scans_received"] == 4 and counts["scans_evaluated"] == 3
    assert counts["scans_unmatched"] == 1 and counts[f"scans_{NO_REFERENCE}"] == 1
    assert counts["depth_frames_received"] == 3 and counts["depth_frames_unmatched"] == 0


def test_live_session_reproduces_a_direct_computation_and_reports_missing_transforms(scene):
    """A depth image with a known error pattern: the session's numbers equal numpy on the true
    camera-frame points (projected here with K only, independently of core.lidar)."""
    height, width = scene.size
    wrong = scene.depth_m * np.where(np.arange(width) % 3 == 0, 1.1, 1.0).astype(np.float32)
    wrong[:, :20] = np.nan
    tree = TransformTree()
    evaluation = LiveEvaluation(tree.lookup, tolerance_ns=50 * MS)
    stamp = scene.left_stamps_ns[0]
    evaluation.add_camera_info(stamp, lidar_k(), width, height)
    evaluation.add_depth_image(stamp, wrong, "camera")
    (missing,) = evaluation.add_scan(stamp - 3 * MS, scene.scans[0][:, :3], "velodyne")
    assert missing.outcome == NO_TRANSFORM and "'velodyne' to 'camera'" in missing.detail
    tree.add(StaticTransform("velodyne", "camera", invert_rigid(camera_from_velodyne())))
    (report,) = evaluation.add_scan(stamp - 4 * MS, scene.scans[0][:, :3], "velodyne")
    cam = scene.camera_points[0]
    u = LIDAR_FX * cam[:, 0] / cam[:, 2] + 96.0
    v = LIDAR_FX * cam[:, 1] / cam[:, 2] + 48.0
    col, row = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
    seen = (cam[:, 2] > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    estimate = wrong[row[seen], col[seen]]
    has = np.isfinite(estimate)
    error = np.abs(estimate[has] - cam[seen][has, 2])
    result = report.errors.summary()["all"]
    assert report.compared == int(has.sum()) and report.no_depth == int((~has).sum()) > 0
    assert result["mae_m"] == pytest.approx(error.mean(), rel=1e-5)
    assert result["rmse_m"] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-5)
    assert result["over_5pct_pct"] == pytest.approx(100 * np.mean(error > 0.05 * cam[seen][
        has, 2]), abs=1e-9)
    assert 0 < result["over_5pct_pct"] < 100


def test_scene_images_have_the_band_disparities():
    left, right = lidar_scene_images(96, 192, seed=0)
    # band 3 (rows 72..95) is at fx * B / 16 = 6.75 m: right(x) = left(x + 16)
    np.testing.assert_array_equal(right[80, :100], left[80, 16:116])
    assert LIDAR_FX * LIDAR_BASELINE_M / 16 == pytest.approx(6.75)
