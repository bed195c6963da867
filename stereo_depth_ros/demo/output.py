"""The demo's output folder: made empty, an earlier run's moved aside (never deleted)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from stereo_depth_ros.demo import DemoError

LOG = logging.getLogger("stereo_depth_demo")
MARKER = ".stereo_depth_demo"
"""The file that marks a folder as the demo's (so an earlier run's folder may be moved aside)."""


def prepare_out_dir(out_dir: Path) -> Path | None:
    """Create an empty out_dir. An earlier demo run there is moved aside, not deleted, to the
    sibling `<out_dir>.<YYYYmmdd-HHMMSS>` (when that run started; `-2`, `-3` ... added if taken),
    whose path is returned (None: nothing to keep). A folder the demo did not make is refused."""
    kept = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DemoError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not (out_dir / MARKER).is_file():
                raise DemoError(f"{out_dir} exists and was not made by the demo; choose --out")
            kept = _previous_run_folder(out_dir)
            out_dir.rename(kept)
            LOG.info("the previous run's output was moved to %s", kept)
        else:
            out_dir.rmdir()
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by python -m stereo_depth_ros.tools.demo\n")
    return kept


def _previous_run_folder(out_dir: Path) -> Path:
    """A free sibling name for the earlier run in out_dir, stamped with its start (local time)."""
    started = time.strftime("%Y%m%d-%H%M%S",
                            time.localtime((out_dir / MARKER).stat().st_mtime))
    candidate = out_dir.with_name(f"{out_dir.name}.{started}")
    number = 2
    while candidate.exists():
        candidate = out_dir.with_name(f"{out_dir.name}.{started}-{number}")
        number += 1
    return candidate
