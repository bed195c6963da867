"""Where the official PSMNet checkpoint is: its place in a source checkout (`make assets`), how
the tools find it, and what to tell a user who has none. No network: nothing here downloads."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_WEIGHTS = Path("assets") / "weights" / "pretrained_model_KITTI2015.tar"
"""Where `make assets` puts the official KITTI 2015 checkpoint, relative to the checkout."""


def source_checkout() -> Path | None:
    """The source checkout this package is imported from (the folder with the Makefile and
    scripts/fetch_assets.py), or None in a colcon or pip install, which have neither."""
    root = Path(__file__).resolve().parents[1]
    if (root / "Makefile").is_file() and (root / "scripts" / "fetch_assets.py").is_file():
        return root
    return None


def find_default_weights() -> Path | None:
    """First existing default checkpoint: under $STEREO_DEPTH_ASSETS, ./assets, the source
    checkout's assets; None when there is none."""
    candidates = []
    if os.environ.get("STEREO_DEPTH_ASSETS"):
        candidates.append(Path(os.environ["STEREO_DEPTH_ASSETS"])
                          / DEFAULT_WEIGHTS.relative_to("assets"))
    candidates.append(Path.cwd() / DEFAULT_WEIGHTS)
    checkout = source_checkout()
    if checkout is not None:
        candidates.append(checkout / DEFAULT_WEIGHTS)
    return next((path for path in candidates if path.is_file()), None)


def missing_weights_hint(weights_path: str, *, cwd: str | None = None) -> str:
    """How to get the checkpoint `weights_path` names, where it is not a file: a relative path
    is resolved against `cwd` (default: the current directory); `make assets` is suggested only
    in a source checkout (`source_checkout()`), otherwise scripts/fetch_assets.py."""
    checkout = source_checkout()
    where = ""
    if not os.path.isabs(os.path.expanduser(weights_path)):
        where = (f"the relative path is resolved against the directory the node started in "
                 f"({cwd or os.getcwd()}), so give an absolute path; ")
    if checkout is not None:
        get = (f"`make assets` in {checkout} puts the official KITTI 2015 checkpoint at "
               f"{checkout / DEFAULT_WEIGHTS}")
    else:
        get = ("`python3 <the package's source>/scripts/fetch_assets.py --dir ~/stereo_assets "
               "--weights-only` fetches the official KITTI 2015 checkpoint to "
               "~/stereo_assets/weights/pretrained_model_KITTI2015.tar")
    return f"{where}{get}; or use backend:=sgbm, which needs no weights"
