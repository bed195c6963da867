"""KITTI / DrivingStereo calibration parsing and the rectified camera_info values it produces."""

from __future__ import annotations

import numpy as np
import pytest

from stereo_depth_ros.core.kitti_calib import (KITTI_2011_09_26_P_RECT_02,
                                               KITTI_2011_09_26_P_RECT_03, CalibrationFileError,
                                               format_calib_text, load_stereo_calibration,
                                               parse_calib_text, rectified_stereo_calibration,
                                               stereo_calibration_from_values)

FX = 721.5377
# (44.85728 + 339.5242) / 721.5377: the cam2-cam3 distance, not -P_rect_03[0,3] / fx = 0.4706 m.
KITTI_COLOR_BASELINE_M = 0.53272

RAW_CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_rect_00: 1.242000e+03 3.750000e+02
P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 \
1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P_rect_01: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 \
1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
T_02: 5.956621e-02 2.900141e-04 2.577209e-03
S_rect_02: 1.242000e+03 3.750000e+02
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 \
1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
T_03: -4.731050e-01 5.551470e-03 -5.250882e-03
S_rect_03: 1.242000e+03 3.750000e+02
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 \
1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
""".replace("\\\n", "")


def test_parse_skips_non_numeric_lines():
    values = parse_calib_text(RAW_CALIB)
    assert "calib_time" not in values
    assert values["corner_dist"][0] == pytest.approx(0.0995)
    np.testing.assert_allclose(values["P_rect_02"].reshape(3, 4), KITTI_2011_09_26_P_RECT_02)
    with pytest.raises(CalibrationFileError, match="no 'key: numbers' lines"):
        parse_calib_text("just some words\n", source="bad.txt")


def test_kitti_colour_pair_baseline_from_p_difference():
    calib = stereo_calibration_from_values(parse_calib_text(RAW_CALIB), 1242, 375)
    assert calib.source.endswith("[P_rect_02/P_rect_03]")
    assert calib.baseline_m == pytest.approx(KITTI_COLOR_BASELINE_M, abs=1e-4)
    # P_rect_03 alone would give the trap value
    assert -KITTI_2011_09_26_P_RECT_03[0, 3] / FX == pytest.approx(0.4706, abs=1e-4)
    assert calib.notes == ()     # the raw translations agree with the P difference
    left, right = calib.camera_info_fields("left"), calib.camera_info_fields("right")
    for info in (left, right):
        assert info["d"] == [0.0] * 5
        assert info["r"] == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        assert (info["width"], info["height"]) == (1242, 375)
        np.testing.assert_allclose(np.reshape(info["k"], (3, 3)),
                                   KITTI_2011_09_26_P_RECT_02[:, :3])
    p_left, p_right = np.reshape(left["p"], (3, 4)), np.reshape(right["p"], (3, 4))
    np.testing.assert_allclose(p_left[:, 3], 0.0)
    assert p_right[0, 3] == pytest.approx(-FX * KITTI_COLOR_BASELINE_M, rel=1e-4)
    np.testing.assert_allclose(p_right[1:, 3], 0.0)
    # what image_geometry computes from the fixed camera_info is the true baseline
    assert -p_right[0, 3] / p_right[0, 0] == pytest.approx(KITTI_COLOR_BASELINE_M, abs=1e-4)


def test_size_comes_from_the_image_and_grey_pair_by_keys():
    calib = stereo_calibration_from_values(parse_calib_text(RAW_CALIB), 1241, 376,
                                           keys=("P_rect_00", "P_rect_01"))
    assert (calib.width, calib.height) == (1241, 376)
    assert calib.baseline_m == pytest.approx(387.5744 / FX, rel=1e-6)
    small = stereo_calibration_from_values(parse_calib_text(RAW_CALIB), 96, 40)
    assert any("1242x375" in note for note in small.notes)


def test_p0_p3_files_and_file_round_trip(tmp_path):
    path = tmp_path / "000000.txt"
    path.write_text(format_calib_text({
        "P0": np.hstack([KITTI_2011_09_26_P_RECT_02[:, :3], np.zeros((3, 1))]),
        "P1": np.eye(3, 4), "P2": KITTI_2011_09_26_P_RECT_02, "P3": KITTI_2011_09_26_P_RECT_03}))
    calib = load_stereo_calibration(path, 1242, 375)
    assert calib.source.endswith("[P2/P3]")
    assert calib.baseline_m == pytest.approx(KITTI_COLOR_BASELINE_M, abs=1e-4)


def test_drivingstereo_translation_wins_when_p_is_inconsistent():
    text = (
        "T_101: 0 0 0\nT_103: -5.446076e-01 -7.500610e-04 -2.395167e-03\n"
        "S_rect_101: 881 400\n"
        "P_rect_101: 1.003556e+3 0 4.556890e+2 0 0 1.003556e+3 1.976634e+2 0 0 0 1 0\n"
        "P_rect_103: 1.003556e+3 0 4.556890e+2 -1.093101e+3 0 1.003556e+3 1.976634e+2 0 0 0 1 0\n")
    values = parse_calib_text(text)
    auto = stereo_calibration_from_values(values, 881, 400)
    assert auto.baseline_m == pytest.approx(0.5446, abs=1e-4)
    assert any("disagrees" in note for note in auto.notes)
    projection = stereo_calibration_from_values(values, 881, 400, baseline_source="projection")
    assert projection.baseline_m == pytest.approx(1.0892, abs=1e-4)
    forced = stereo_calibration_from_values(values, 881, 400, baseline_m=0.5)
    assert np.reshape(forced.camera_info_fields("right")["p"], (3, 4))[0, 3] == \
        pytest.approx(-1003.556 * 0.5)


def test_real_drivingstereo_sample(assets_dir):
    path = (assets_dir / "samples" / "drivingstereo" / "2018-07-11-14-48-52"
            / "2018-07-11-14-48-52.txt")
    calib = load_stereo_calibration(path, 881, 400)
    assert calib.fx == pytest.approx(1003.556)
    assert calib.baseline_m == pytest.approx(0.5446, abs=1e-3)


def test_bad_pairs_are_rejected():
    with pytest.raises(CalibrationFileError, match="swapped"):
        rectified_stereo_calibration(KITTI_2011_09_26_P_RECT_03, KITTI_2011_09_26_P_RECT_02,
                                     1242, 375, source="x.txt")
    other_fx = KITTI_2011_09_26_P_RECT_03.copy()
    other_fx[0, 0] = 700.0
    with pytest.raises(CalibrationFileError, match="rectified pair"):
        rectified_stereo_calibration(KITTI_2011_09_26_P_RECT_02, other_fx, 1242, 375)
    with pytest.raises(CalibrationFileError, match="no stereo projection pair"):
        stereo_calibration_from_values({"K_00": np.eye(3).reshape(-1)}, 10, 10)
    with pytest.raises(CalibrationFileError, match="12 numbers"):
        stereo_calibration_from_values({"P2": np.ones(9), "P3": np.ones(12)}, 10, 10)


def test_scaled_keeps_baseline():
    calib = rectified_stereo_calibration(KITTI_2011_09_26_P_RECT_02, KITTI_2011_09_26_P_RECT_03,
                                         1242, 375)
    half = calib.scaled(0.5)
    assert (half.width, half.height) == (621, 188)
    assert half.fx == pytest.approx(FX / 2)
    assert half.baseline_m == pytest.approx(calib.baseline_m)
    assert -half.p_right[0, 3] / half.fx == pytest.approx(calib.baseline_m)
