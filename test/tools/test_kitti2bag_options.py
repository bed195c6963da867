"""stereo_depth_kitti2bag's options, each proven by its effect on the bag (read back with
rosbags): --cameras/--baseline-m/--baseline-source/--layout/--calib/--start-stamp/--period.
Expected values are written out by hand or derived from the fixture's numbers, not from the
code under test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.kitti import FX, make_raw_drive, read_bag
from stereo_depth_ros.tools import kitti2bag


NS = 1_000_000_000


# =================================================================== stereo_depth_kitti2bag

SIZE = (16, 24)          # tiny images: the options are about topics, stamps and camera_info


def stamps_ns(messages) -> list[int]:
    return [m.header.stamp.sec * NS + m.header.stamp.nanosec for _, m in messages]


def convert_cli(source: Path, out: Path, *options: str) -> dict[str, list]:
    assert kitti2bag.main([str(source), str(out), *options]) == 0
    return read_bag(out)


def _add_gray_cameras(drive: Path, n_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """image_00/image_01 (grey, 8-bit) beside the drive's colour cameras, with their own
    timestamps.txt; returns the (left, right) arrays written."""
    rng = np.random.default_rng(5)
    pairs = []
    for k in range(n_frames):
        left, right = (rng.integers(0, 256, SIZE, dtype=np.uint8) for _ in range(2))
        for camera, image in (("image_00", left), ("image_01", right)):
            (drive / camera / "data").mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(drive / camera / "data" / f"{k:010d}.png"), image)
        pairs.append((left, right))
    for camera in ("image_00", "image_01"):
        (drive / camera / "timestamps.txt").write_text(
            "2011-09-26 13:02:25.500000001\n2011-09-26 13:02:25.600000002\n")
    return pairs


def test_kitti2bag_cameras_picks_the_grey_or_the_colour_pair(tmp_path):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=2, size=SIZE, shift=2)
    gray_pairs = _add_gray_cameras(drive, 2)
    colour_left = cv2.imread(str(drive / "image_02" / "data" / "0000000001.png"))

    gray = convert_cli(drive, tmp_path / "gray", "--cameras", "gray")
    msg = gray["/left/image_raw"][1][1]
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("mono8", 24, 16, 24)
    np.testing.assert_array_equal(msg.data.reshape(SIZE), gray_pairs[1][0])
    right = gray["/right/image_raw"][0][1]
    np.testing.assert_array_equal(right.data.reshape(SIZE), gray_pairs[0][1])
    # grey pair: P_rect_01[0, 3] = -387.5744 with P_rect_00[0, 3] = 0 -> -fx * B = -387.5744
    assert gray["/right/camera_info"][0][1].p[3] == pytest.approx(-387.5744, abs=1e-9)
    # stamps from image_00/timestamps.txt (2011-09-26 13:02:25 UTC = 1317042145 s)
    assert stamps_ns(gray["/left/image_raw"]) == [1317042145_500000001, 1317042145_600000002]

    colour = convert_cli(drive, tmp_path / "colour", "--cameras", "color")
    msg = colour["/left/image_raw"][1][1]
    assert (msg.encoding, msg.step) == ("bgr8", 72)
    np.testing.assert_array_equal(msg.data.reshape(SIZE + (3,)), colour_left)
    # colour pair: P_rect_02[0, 3] = +44.85728, P_rect_03[0, 3] = -339.5242
    assert colour["/right/camera_info"][0][1].p[3] == pytest.approx(-(44.85728 + 339.5242),
                                                                    abs=1e-9)
    assert stamps_ns(colour["/left/image_raw"])[0] == 1317042145_964389445


def test_kitti2bag_baseline_m_sets_the_right_projection(tmp_path):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=1, size=SIZE, shift=2)
    topics = convert_cli(drive, tmp_path / "bag", "--baseline-m", "0.25")
    left_p = topics["/left/camera_info"][0][1].p
    right_p = topics["/right/camera_info"][0][1].p
    assert right_p[3] == -FX * 0.25 and right_p[0] == FX
    assert left_p[3] == 0.0
    default = convert_cli(drive, tmp_path / "default")
    assert default["/right/camera_info"][0][1].p[3] == pytest.approx(-384.38148, abs=1e-9)


def _calib_file(path: Path, t_right_x: float) -> Path:
    """A calibration with fx = 500, P baseline 250 / 500 = 0.5 m and camera translations
    |T_03 - T_02| = |t_right_x| m."""
    path.write_text("\n".join([
        "P_rect_02: 500 0 12 0 0 500 8 0 0 0 1 0",
        "P_rect_03: 500 0 12 -250 0 500 8 0 0 0 1 0",
        "T_02: 0 0 0",
        f"T_03: {t_right_x} 0 0",
    ]) + "\n")
    return path


@pytest.mark.parametrize("t_right_x, source, expected_p3", [
    (-0.52, "projection", -250.0),      # P difference: 0.5 m
    (-0.52, "translation", -260.0),     # camera centres: 0.52 m
    (-0.52, "auto", -250.0),            # 4 % apart: within tolerance, P wins
    (-0.60, "auto", -300.0),            # 20 % apart: the translations win
    (-0.60, "projection", -250.0),
])
def test_kitti2bag_calib_and_baseline_source(tmp_path, t_right_x, source, expected_p3):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=1, size=SIZE, shift=2)
    calib = _calib_file(tmp_path / "my_calib.txt", t_right_x)
    topics = convert_cli(drive, tmp_path / "bag", "--calib", str(calib),
                         "--baseline-source", source)
    left, right = topics["/left/camera_info"][0][1], topics["/right/camera_info"][0][1]
    # --calib: fx = 500 and cx = 12 from the given file, not the drive's 721.5377 / 609.5593
    assert list(left.k) == [500.0, 0.0, 12.0, 0.0, 500.0, 8.0, 0.0, 0.0, 1.0]
    assert right.p[3] == pytest.approx(expected_p3, rel=1e-12)


def test_kitti2bag_layout_chooses_how_the_folder_is_read(tmp_path, capsys):
    """A folder that is a raw drive and also holds <id>_left/<id>_right pairs with a calib."""
    drive = make_raw_drive(tmp_path / "kitti", n_frames=2, size=SIZE, shift=2)
    rng = np.random.default_rng(9)
    pair_left, pair_right = (rng.integers(0, 256, SIZE + (3,), dtype=np.uint8)
                             for _ in range(2))
    cv2.imwrite(str(drive / "scene_left.png"), pair_left)
    cv2.imwrite(str(drive / "scene_right.png"), pair_right)
    (drive / "pairs_calib.txt").write_text("P2: 600 0 12 0 0 600 8 0 0 0 1 0\n"
                                           "P3: 600 0 12 -120 0 600 8 0 0 0 1 0\n")

    auto = convert_cli(drive, tmp_path / "auto")             # auto: the raw drive
    assert len(auto["/left/image_raw"]) == 2
    assert auto["/left/camera_info"][0][1].k[0] == FX

    pairs = convert_cli(drive, tmp_path / "pairs", "--layout", "pairs")
    assert len(pairs["/left/image_raw"]) == 1
    np.testing.assert_array_equal(pairs["/left/image_raw"][0][1].data.reshape(SIZE + (3,)),
                                  pair_left)
    np.testing.assert_array_equal(pairs["/right/image_raw"][0][1].data.reshape(SIZE + (3,)),
                                  pair_right)
    info = pairs["/right/camera_info"][0][1]
    assert info.k[0] == 600.0 and info.p[3] == pytest.approx(-120.0, rel=1e-12)
    assert stamps_ns(pairs["/left/image_raw"]) == [1_000_000_000 * NS]   # synthetic default

    # --layout stereo: no KITTI stereo folders here, and the error says what was looked for
    capsys.readouterr()
    assert kitti2bag.main([str(drive), str(tmp_path / "stereo"), "--layout", "stereo"]) == 1
    assert "no colour or grey image folders (image_2/image_3" in capsys.readouterr().err
    assert not (tmp_path / "stereo").exists()


def test_kitti2bag_calib_file_must_exist(tmp_path, capsys):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=1, size=SIZE, shift=2)
    missing = tmp_path / "nope.txt"
    assert kitti2bag.main([str(drive), str(tmp_path / "bag"), "--calib", str(missing)]) == 1
    assert f"{missing}: calibration file not found" in capsys.readouterr().err


@pytest.mark.parametrize("options, expected", [
    (["--start-stamp", "5.25", "--period", "0.04"],
     [5_250_000_000, 5_290_000_000, 5_330_000_000]),
    (["--period", "0.25"],                       # start defaults to 1e9 s
     [1_000_000_000 * NS, 1_000_000_000 * NS + 250_000_000, 1_000_000_000 * NS + 500_000_000]),
    (["--start-stamp", "7"],                     # period defaults to 0.1 s
     [7 * NS, 7 * NS + 100_000_000, 7 * NS + 200_000_000]),
    (["--start-stamp", "1700000000.05", "--period", "0.04"],    # epoch scale, to the ns
     [1_700_000_000_050_000_000, 1_700_000_000_090_000_000, 1_700_000_000_130_000_000]),
])
def test_kitti2bag_start_stamp_and_period_set_the_stamps(tmp_path, options, expected):
    drive = make_raw_drive(tmp_path / "kitti", n_frames=3, size=SIZE, shift=2)
    topics = convert_cli(drive, tmp_path / "bag", *options)
    for name in ("/left/image_raw", "/right/image_raw", "/left/camera_info",
                 "/right/camera_info"):
        assert stamps_ns(topics[name]) == expected, name
        assert [t for t, _ in topics[name]] == expected            # bag time too
