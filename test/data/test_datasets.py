"""Dataset readers on small fake trees written here: pairing by frame id, ground-truth round trips,
clear errors naming the files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core.disparity_io import write_kitti_png, write_pfm
from stereo_depth_ros.core.kitti_calib import (
    KITTI_2011_09_26_P_RECT_02, KITTI_2011_09_26_P_RECT_03, format_calib_text)
from stereo_depth_ros.data import DatasetError, make_dataset
from stereo_depth_ros.data.middlebury import read_calib_txt

H, W = 12, 20
CALIB = """cam0=[1000.5 0 9.5; 0 1000.5 5.5; 0 0 1]
cam1=[1000.5 0 12.25; 0 1000.5 5.5; 0 0 1]
doffs=2.75
baseline=193.001
width=20
height=12
ndisp=64
isint=0
vmin=3
vmax=40
dyavg=0
dymax=0
"""


def _image(seed: int, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W) if grey else (H, W, 3), dtype=np.uint8)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def _disparity(seed: int) -> np.ndarray:
    """Quarter-px values (exact in KITTI PNG and float32), a NaN hole, rows differ (flip)."""
    rng = np.random.default_rng(100 + seed)
    disparity = (rng.integers(4, 400, (H, W)) / 4.0).astype(np.float32)
    disparity[0, :3] = np.nan
    return disparity


def _kitti_tree(split_dir: Path, ids, left="image_2", right="image_3", occ="disp_occ_0",
                noc="disp_noc_0", with_gt=True):
    truth = {}
    for n, frame in enumerate(ids):
        stem = f"{frame:06d}_10"
        _write_rgb(split_dir / left / f"{stem}.png", _image(n))
        _write_rgb(split_dir / right / f"{stem}.png", _image(50 + n))
        _write_rgb(split_dir / left / f"{frame:06d}_11.png", _image(99))   # ignored
        if with_gt:
            (split_dir / occ).mkdir(parents=True, exist_ok=True)
            (split_dir / noc).mkdir(parents=True, exist_ok=True)
            occ_gt = _disparity(n)
            noc_gt = occ_gt.copy()
            noc_gt[5:, :4] = np.nan
            write_kitti_png(split_dir / occ / f"{stem}.png", occ_gt)
            write_kitti_png(split_dir / noc / f"{stem}.png", noc_gt)
            truth[stem] = (occ_gt, noc_gt, _image(n), _image(50 + n))
    return truth


def test_kitti2015_pairs_by_frame_id_and_round_trips_png(tmp_path):
    truth = _kitti_tree(tmp_path / "training", [3, 0, 17])
    dataset = make_dataset("kitti2015", tmp_path)      # finds training/ below the root
    assert len(dataset) == 3
    assert dataset.names() == ["000000_10", "000003_10", "000017_10"]
    for sample in dataset:
        occ, noc, left, right = truth[sample.frame_id]
        assert sample.name == sample.frame_id
        np.testing.assert_array_equal(sample.left, left)
        np.testing.assert_array_equal(sample.right, right)
        assert sample.disparity.dtype == np.float32
        np.testing.assert_array_equal(sample.disparity, occ)      # NaN == NaN here
        np.testing.assert_array_equal(sample.disparity_noc, noc)
    assert dataset[-1].frame_id == "000017_10"
    with pytest.raises(IndexError):
        dataset[3]


def test_kitti2015_mismatched_ids_name_the_files(tmp_path):
    split = tmp_path / "training"
    _kitti_tree(split, [0, 1, 2])
    # Same count on both sides, but one right frame is another id: a sorted glob would mis-pair.
    (split / "image_3" / "000002_10.png").rename(split / "image_3" / "000009_10.png")
    with pytest.raises(DatasetError) as info:
        make_dataset("kitti2015", split)
    message = str(info.value)
    assert "NNNNNN_10.png" in message
    assert "000002_10.png" in message and "000009_10.png" in message
    assert "image_2" in message and "image_3" in message


def test_kitti2015_missing_ground_truth_file_is_named(tmp_path):
    split = tmp_path / "training"
    _kitti_tree(split, [0, 1])
    (split / "disp_occ_0" / "000001_10.png").unlink()
    with pytest.raises(DatasetError, match=r"disp_occ_0.*000001_10\.png|000001_10\.png.*disp"):
        make_dataset("kitti2015", split)


def test_kitti2015_calibration_gives_the_rig(tmp_path):
    split = tmp_path / "training"
    _kitti_tree(split, [0, 1])
    (split / "calib_cam_to_cam").mkdir()
    text = format_calib_text({"P_rect_02": KITTI_2011_09_26_P_RECT_02,
                              "P_rect_03": KITTI_2011_09_26_P_RECT_03})
    for frame in (0, 1):
        (split / "calib_cam_to_cam" / f"{frame:06d}.txt").write_text(text)
    rig = make_dataset("kitti2015", split)[1].rig
    # Baseline from the difference of the two P[0, 3] terms (left Tx is not 0 for colour cams).
    assert rig.baseline_m == pytest.approx((44.85728 + 339.5242) / 721.5377, rel=1e-6)
    assert rig.fx == pytest.approx(721.5377) and (rig.width, rig.height) == (W, H)
    (split / "calib_cam_to_cam" / "000001.txt").unlink()
    with pytest.raises(DatasetError, match=r"no match in calib_cam_to_cam: image_2/000001_10"):
        make_dataset("kitti2015", split)


def test_kitti2015_testing_split_has_no_ground_truth(tmp_path):
    _kitti_tree(tmp_path / "testing", [4], with_gt=False)
    dataset = make_dataset("kitti2015", tmp_path, split="testing")
    assert not dataset.has_ground_truth
    sample = dataset[0]
    assert sample.disparity is None and sample.disparity_noc is None and sample.valid is None


def test_kitti_missing_root_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        make_dataset("kitti2015", tmp_path / "nope")
    with pytest.raises(DatasetError, match="image_2"):
        make_dataset("kitti2015", tmp_path)
    (tmp_path / "image_2").mkdir()
    with pytest.raises(DatasetError, match="no files matching"):
        make_dataset("kitti2015", tmp_path)


def test_kitti2012_colored_and_grey_layouts(tmp_path):
    truth = _kitti_tree(tmp_path / "a", [5, 6], left="colored_0", right="colored_1",
                        occ="disp_occ", noc="disp_noc")
    dataset = make_dataset("kitti2012", tmp_path / "a")
    assert dataset.names() == ["000005_10", "000006_10"]
    sample = dataset[1]
    np.testing.assert_array_equal(sample.disparity, truth["000006_10"][0])
    np.testing.assert_array_equal(sample.disparity_noc, truth["000006_10"][1])

    grey = tmp_path / "b"
    for frame in (0, 1):
        _write_rgb(grey / "image_0" / f"{frame:06d}_10.png", _image(frame, grey=True))
        _write_rgb(grey / "image_1" / f"{frame:06d}_10.png", _image(9, grey=True))
    sample = make_dataset("kitti2012", grey)[1]
    assert sample.left.shape == (H, W, 3) and sample.disparity is None
    np.testing.assert_array_equal(sample.left[:, :, 2], _image(1, grey=True))


def _middlebury_scene(folder: Path, seed: int, gt_name="disp0GT.pfm", mask=True,
                      gt_folder: Path | None = None, grey=False):
    _write_rgb(folder / "im0.png", _image(seed, grey))
    _write_rgb(folder / "im1.png", _image(seed + 1, grey))
    (folder / "calib.txt").write_text(CALIB)
    gt = _disparity(seed)
    gt_folder = gt_folder or folder
    gt_folder.mkdir(parents=True, exist_ok=True)
    write_pfm(gt_folder / gt_name, gt)                 # NaN -> inf in the file
    mask_image = None
    if mask:
        mask_image = np.full((H, W), 255, np.uint8)
        mask_image[:4, 10:] = 128
        assert cv2.imwrite(str(gt_folder / "mask0nocc.png"), mask_image)
    return gt, mask_image


def test_middlebury_reader_pfm_round_trip_calib_and_noc(tmp_path):
    gt_a, mask = _middlebury_scene(tmp_path / "Adirondack", 1)
    gt_b, _ = _middlebury_scene(tmp_path / "Piano", 3, gt_name="disp0.pfm", mask=False)
    (tmp_path / "notes").mkdir()                       # a folder without images is ignored
    dataset = make_dataset("middlebury", tmp_path)
    assert dataset.names() == ["Adirondack", "Piano"]
    sample = dataset[0]
    np.testing.assert_array_equal(sample.disparity, gt_a)
    assert np.isnan(sample.disparity[0, 0])           # inf in the PFM -> NaN
    expected_noc = np.where(mask == 255, gt_a, np.nan)
    np.testing.assert_array_equal(sample.disparity_noc, expected_noc)
    assert sample.calib["ndisp"] == 64 and sample.calib["doffs"] == pytest.approx(2.75)
    np.testing.assert_allclose(sample.calib["cam1"][0], [1000.5, 0, 12.25])
    rig = sample.rig
    assert rig.baseline_m == pytest.approx(0.193001)
    assert rig.fx == pytest.approx(1000.5)
    assert rig.cx_left - rig.cx_right == pytest.approx(-2.75)
    assert (rig.width, rig.height) == (W, H)
    other = dataset[1]
    np.testing.assert_array_equal(other.disparity, gt_b)
    assert other.disparity_noc is None
    # One scene folder as the root works too.
    assert make_dataset("middlebury", tmp_path / "Piano").names() == ["Piano"]


def test_middlebury_errors_name_the_scene(tmp_path):
    _middlebury_scene(tmp_path / "Good", 1)
    _middlebury_scene(tmp_path / "Broken", 2)
    (tmp_path / "Broken" / "im1.png").unlink()
    with pytest.raises(DatasetError, match=r"im0.png have no match in im1.png: Broken/im0.png"):
        make_dataset("middlebury", tmp_path)
    (tmp_path / "Broken" / "im1.png").write_bytes((tmp_path / "Good" / "im1.png").read_bytes())
    (tmp_path / "Broken" / "disp0GT.pfm").unlink()
    with pytest.raises(DatasetError, match="Broken"):
        make_dataset("middlebury", tmp_path)
    (tmp_path / "Broken" / "calib.txt").write_text("cam0=[1 2; 3 4]\n")
    with pytest.raises(DatasetError, match="cam0"):
        read_calib_txt(tmp_path / "Broken" / "calib.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no scene folders"):
        make_dataset("middlebury", tmp_path / "empty")


def test_eth3d_with_separate_ground_truth_tree(tmp_path):
    images = tmp_path / "two_view_training"
    gt_folder = tmp_path / "two_view_training_gt" / "delivery_area_1l"
    gt_a, mask = _middlebury_scene(images / "delivery_area_1l", 4, grey=True, gt_folder=gt_folder)
    dataset = make_dataset("eth3d", images)
    sample = dataset[0]
    assert sample.frame_id == "delivery_area_1l"
    assert sample.left.shape == (H, W, 3)
    np.testing.assert_array_equal(sample.left[:, :, 0], _image(4, grey=True))
    np.testing.assert_array_equal(sample.disparity, gt_a)
    np.testing.assert_array_equal(sample.disparity_noc, np.where(mask == 255, gt_a, np.nan))
    # Without the _gt tree the samples simply have no ground truth.
    plain = tmp_path / "two_view_test"
    _write_rgb(plain / "lakeside_1l" / "im0.png", _image(1, grey=True))
    _write_rgb(plain / "lakeside_1l" / "im1.png", _image(2, grey=True))
    assert make_dataset("eth3d", plain)[0].disparity is None


def _sceneflow_tree(root: Path):
    truth = {}
    for rel, frames in (("TRAIN/A/0000", ("0006", "0007")), ("TEST/B/0003", ("0010",))):
        for n, frame in enumerate(frames):
            key = f"{rel}/{frame}"
            seed = len(truth)
            _write_rgb(root / "frames_cleanpass" / rel / "left" / f"{frame}.png", _image(seed))
            _write_rgb(root / "frames_cleanpass" / rel / "right" / f"{frame}.png",
                       _image(seed + 20))
            gt = np.abs(_disparity(seed))
            gt[0, :3] = 1.5                               # dense ground truth
            (root / "disparity" / rel / "left").mkdir(parents=True, exist_ok=True)
            write_pfm(root / "disparity" / rel / "left" / f"{frame}.pfm", gt)
            truth[key] = (gt, _image(seed))
    return truth


def test_sceneflow_reader(tmp_path):
    truth = _sceneflow_tree(tmp_path)
    dataset = make_dataset("sceneflow", tmp_path)
    assert dataset.names() == ["TEST/B/0003/0010", "TRAIN/A/0000/0006", "TRAIN/A/0000/0007"]
    for sample in dataset:
        gt, left = truth[sample.frame_id]
        np.testing.assert_array_equal(sample.disparity, gt)   # PFM rows are stored bottom-up
        np.testing.assert_array_equal(sample.left, left)
    train = make_dataset("sceneflow", tmp_path, subset="TRAIN")
    assert train.names() == ["TRAIN/A/0000/0006", "TRAIN/A/0000/0007"]
    (tmp_path / "frames_cleanpass/TRAIN/A/0000/right/0007.png").unlink()
    with pytest.raises(DatasetError, match=r"0007\.png"):
        make_dataset("sceneflow", tmp_path)
    with pytest.raises(DatasetError, match="frames_finalpass"):
        make_dataset("sceneflow", tmp_path, passes="final")


def test_synthetic_dataset_is_deterministic():
    dataset = make_dataset("synthetic", count=2, seed=3, height=64, width=96, max_disparity=32)
    again = make_dataset("synthetic", count=2, seed=3, height=64, width=96, max_disparity=32)
    other = make_dataset("synthetic", count=2, seed=4, height=64, width=96, max_disparity=32)
    assert len(dataset) == 2 and dataset.names() == ["synthetic_0003_000000",
                                                     "synthetic_0003_000001"]
    a, b, c = dataset[1], again[1], other[1]
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.disparity, b.disparity)
    assert not np.array_equal(a.left, c.left)
    assert a.left.shape == (64, 96, 3) and a.left.dtype == np.uint8
    finite = a.disparity[np.isfinite(a.disparity)]
    assert finite.size > 0.8 * a.disparity.size
    assert 0 < finite.min() and finite.max() < 32
    assert a.rig is not None and a.rig.width == 96


def test_make_dataset_rejects_unknown_names(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'"):
        make_dataset("kitti", tmp_path)
    with pytest.raises(DatasetError, match="root"):
        make_dataset("kitti2015", None)
