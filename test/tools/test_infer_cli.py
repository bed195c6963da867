"""stereo_depth_infer as a user runs it: a subprocess, files in, files out, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers.process import NONZERO, assert_clean_exit
from stereo_depth_ros.backends.sgbm import SgbmBackend
from stereo_depth_ros.core.disparity_io import read_disparity
from stereo_depth_ros.core.synthetic import make_scene

MAX_DISPARITY = 48


def run_cli(repo_root, *args, env=None):
    return subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.infer", *map(str, args)],
                          cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A synthetic pair on disk and the disparity SGBM gives for it in-process."""
    folder = tmp_path_factory.mktemp("pair")
    scene = make_scene(120, 192, background_disparity=7.0, foreground_disparity=18.5, seed=21)
    left, right = folder / "left.png", folder / "right.png"
    cv2.imwrite(str(left), cv2.cvtColor(scene.left, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(right), cv2.cvtColor(scene.right, cv2.COLOR_RGB2BGR))
    expected = SgbmBackend(num_disparities=MAX_DISPARITY).compute(scene.left, scene.right)
    return left, right, expected.disparity, scene


@pytest.mark.parametrize("suffix", [".npy", ".pfm", ".png"])
def test_each_output_format_round_trips(repo_root, pair, tmp_path, suffix):
    left, right, expected, scene = pair
    output = tmp_path / f"disparity{suffix}"
    extra = ["--colorize", tmp_path / "vis.png"] if suffix == ".png" else []
    result = run_cli(repo_root, "--left", left, "--right", right, "--output", output,
                     "--backend", "sgbm", "--max-disparity", MAX_DISPARITY, *extra)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and " s" in result.stdout  # reports the time taken
    loaded = read_disparity(output)
    assert loaded.shape == expected.shape and loaded.dtype == np.float32
    if suffix == ".png":
        # KITTI PNG: 1/256 px steps, and 0 (or less) means invalid.
        keep = np.isfinite(expected) & (expected > 0)
        np.testing.assert_array_equal(np.isnan(loaded), ~keep)
        np.testing.assert_allclose(loaded[keep], expected[keep], atol=0.5 / 256)
        vis = cv2.imread(str(tmp_path / "vis.png"), cv2.IMREAD_UNCHANGED)
        assert vis.shape == expected.shape + (3,) and vis.dtype == np.uint8
        assert (vis[np.isnan(expected)] == 0).all() and vis[np.isfinite(expected)].any()
    else:
        np.testing.assert_array_equal(loaded, expected)  # NaN positions included
    # The disparity really is the scene's.
    region = scene.valid.copy()
    region[:, :MAX_DISPARITY] = False
    assert np.mean(np.abs(loaded - scene.disparity)[region] <= 1.0) >= 0.9


def test_console_script_declared_and_module_runnable(repo_root):
    assert "stereo_depth_infer = stereo_depth_ros.tools.infer:main" in (
        repo_root / "setup.py").read_text()
    result = run_cli(repo_root, "--help")
    assert result.returncode == 0 and "--max-disparity" in result.stdout
    assert "make assets" in result.stdout


BAD_CASES = {
    "missing left": (["--left", "{tmp}/nope.png"], "--left", "no such file"),
    "unreadable image": (["--right", "{tmp}/junk.png"], "junk.png", "not a readable image"),
    "bad output extension": (["--output", "{tmp}/out.txt"], "unsupported extension", ".npy"),
    "missing output folder": (["--output", "{tmp}/no/such/out.npy"], "does not exist", ""),
    "bad max disparity": (["--max-disparity", "40"], "multiple of 16", ""),
    "bad block size": (["--block-size", "4"], "block_size", "odd"),
    "bad colorize type": (["--colorize", "{tmp}/vis.xyz"], "--colorize", ".png"),
    "size mismatch": (["--right", "{tmp}/small.png"], "image sizes differ", "192x120"),
    "missing weights file": (["--backend", "psmnet", "--weights", "{tmp}/none.tar"],
                             "--weights", "no such file"),
    "uncertainty without psmnet": (["--uncertainty", "{tmp}/sigma.npy"], "--uncertainty",
                                   "PSMNet only"),
    "uncertainty not npy": (["--uncertainty", "{tmp}/sigma.png"], "--uncertainty", ".npy"),
    "confidence threshold above 1": (["--confidence-threshold", "1.5"],
                                     "--confidence-threshold", "above the maximum 1.0"),
    "negative uncertainty limit": (["--max-relative-uncertainty", "-0.1"],
                                   "--max-relative-uncertainty", "below the minimum"),
    "disparity uncertainty limit above 100": (["--max-disparity-uncertainty", "150"],
                                              "--max-disparity-uncertainty",
                                              "above the maximum 100.0"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_arguments_exit_nonzero_with_a_clear_message(repo_root, pair, tmp_path, case):
    left, right, _, _ = pair
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((60, 96, 3), np.uint8))
    overrides, *needles = BAD_CASES[case]
    options = {"--left": left, "--right": right, "--output": tmp_path / "out.npy",
               "--backend": "sgbm", "--max-disparity": MAX_DISPARITY}
    overrides = [str(x).format(tmp=tmp_path) for x in overrides]
    extra = []
    for flag, value in zip(overrides[::2], overrides[1::2]):
        if flag in options:
            options[flag] = value
        else:
            extra += [flag, value]
    args = [str(x) for item in options.items() for x in item] + extra
    result = run_cli(repo_root, *args)
    assert_clean_exit(result.stderr, result.returncode, expected=NONZERO)
    assert "stereo_depth_infer: error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_psmnet_without_weights_says_where_to_get_them(pair, tmp_path):
    left, right, _, _ = pair
    # Hide the checkout's fetched weights: empty $STEREO_DEPTH_ASSETS, cwd without assets/, and
    # no source-checkout fallback.
    script = ("import sys, stereo_depth_ros.assets as a; "
              "import stereo_depth_ros.tools.infer as m; "
              "a.source_checkout = lambda: None; "
              "sys.exit(m.main(sys.argv[1:]))")
    result = subprocess.run(
        [sys.executable, "-c", script, "--left", str(left), "--right", str(right),
         "--output", str(tmp_path / "o.npy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "STEREO_DEPTH_ASSETS": str(tmp_path)})
    assert_clean_exit(result.stderr, result.returncode, expected=NONZERO)
    assert "make assets" in result.stderr
    assert "pretrained_model_KITTI2015.tar" in result.stderr
    assert "--weights" in result.stderr


@pytest.fixture(scope="module")
def kitti_crop(assets_dir, tmp_path_factory):
    """A 256x256 crop of a real KITTI 2015 pair (road, car, trees): small enough for CPU."""
    folder = tmp_path_factory.mktemp("kitti")
    paths = []
    for side in ("left", "right"):
        image = cv2.imread(str(assets_dir / "samples" / "kitti2015" / f"kitti_000046_{side}.png"))
        path = folder / f"{side}.png"
        cv2.imwrite(str(path), image[-256:, 560:816])
        paths.append(path)
    return paths


@pytest.mark.slow
def test_psmnet_with_real_weights_on_a_real_crop(repo_root, kitti_weights, kitti_crop, tmp_path):
    left, right = kitti_crop
    output = tmp_path / "psmnet.npy"
    # everything published (the default mask off): this test is about the network's output
    result = run_cli(repo_root, "--left", left, "--right", right, "--output", output,
                     "--weights", kitti_weights, "--device", "cpu", "--colorize",
                     tmp_path / "vis.png", "--confidence-threshold", "0",
                     "--max-relative-uncertainty", "0", "--max-disparity-uncertainty", "0",
                     "--uncertainty", tmp_path / "sigma.npy")
    assert result.returncode == 0, result.stderr
    assert "psmnet on 256x256" in result.stdout
    disparity = np.load(output)
    assert disparity.shape == (256, 256) and np.isfinite(disparity).all()
    assert disparity.min() >= 0 and disparity.max() <= 192
    # The road gets closer towards the bottom of the image: disparity grows row by row.
    rows = np.median(disparity[:, 100:200], axis=1)
    assert rows[-20:].mean() > rows[100:120].mean() + 5
    # Where SGBM is confident, PSMNet agrees with it: a check of the whole chain (file reading,
    # preprocessing, weights, cropping back to the input size).
    sgbm_out = tmp_path / "sgbm.npy"
    assert run_cli(repo_root, "--left", left, "--right", right, "--output", sgbm_out,
                   "--backend", "sgbm", "--max-disparity", 96).returncode == 0
    sgbm = np.load(sgbm_out)
    both = np.isfinite(sgbm)
    assert both.mean() > 0.3
    assert np.median(np.abs(disparity - sgbm)[both]) < 1.5
    assert np.mean(np.abs(disparity - sgbm)[both] <= 3.0) > 0.8
    # sigma_d: finite where the disparity is, positive, a fraction of a px to a few px mostly
    sigma = np.load(tmp_path / "sigma.npy")
    assert sigma.dtype == np.float32 and sigma.shape == disparity.shape
    assert np.isfinite(sigma).all() and (sigma > 0).all() and 0.2 < np.median(sigma) < 5.0
    # The default mask (config.py's defaults): the same values where kept, NaN elsewhere, and
    # every pixel above the relative-uncertainty limit gone.
    from stereo_depth_ros.config import SPECS
    limit = SPECS["max_relative_uncertainty"].default
    masked_out = tmp_path / "masked.npy"
    result = run_cli(repo_root, "--left", left, "--right", right, "--output", masked_out,
                     "--weights", kitti_weights, "--device", "cpu",
                     "--uncertainty", tmp_path / "sigma_masked.npy")
    assert result.returncode == 0, result.stderr
    masked, sigma_masked = np.load(masked_out), np.load(tmp_path / "sigma_masked.npy")
    kept = np.isfinite(masked)
    np.testing.assert_array_equal(np.isfinite(sigma_masked), kept)
    np.testing.assert_allclose(masked[kept], disparity[kept], atol=1e-4)
    np.testing.assert_allclose(sigma_masked[kept], sigma[kept], atol=1e-4)
    sigma_limit = SPECS["max_disparity_uncertainty"].default
    if limit > 0:
        assert not kept[sigma / disparity > limit].any()
    if sigma_limit > 0:
        assert not kept[sigma > sigma_limit].any()
    # exactly the limits' pixels less the fattening and occlusion filters' (on by default)
    from stereo_depth_ros.core.fattening import fattened
    from stereo_depth_ros.core.image_io import read_image_rgb
    from stereo_depth_ros.core.occlusion import occluded
    from stereo_depth_ros.core.uncertainty import trusted
    assert SPECS["confidence_threshold"].default == 0
    assert SPECS["fattening_filter"].default and SPECS["occlusion_filter"].default
    expected = trusted(disparity, None, sigma, max_relative_uncertainty=limit,
                       max_disparity_uncertainty=sigma_limit)
    np.testing.assert_array_equal(
        kept, expected & ~fattened(read_image_rgb(left), disparity) & ~occluded(disparity))
    assert 0.3 < kept.mean() < 1.0          # the defaults mask some of this road crop, not all


def test_psmnet_device_error_is_clear(repo_root, kitti_weights, kitti_crop, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: --device cuda is not an error here")
    left, right = kitti_crop
    result = run_cli(repo_root, "--left", left, "--right", right, "--output",
                     tmp_path / "o.npy", "--weights", kitti_weights, "--device", "cuda")
    assert_clean_exit(result.stderr, result.returncode, expected=NONZERO)
    assert "CUDA" in result.stderr


def test_psmnet_rejects_a_non_checkpoint_file(repo_root, kitti_crop, tmp_path):
    left, right = kitti_crop
    fake = tmp_path / "weights.tar"
    fake.write_bytes(b"this is not a checkpoint")
    result = run_cli(repo_root, "--left", left, "--right", right, "--output",
                     tmp_path / "o.npy", "--weights", fake, "--device", "cpu")
    assert_clean_exit(result.stderr, result.returncode, expected=NONZERO)
    assert "weights.tar" in result.stderr
