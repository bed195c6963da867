"""The RViz 2 view of the node's outputs, for any namespace and camera frame.

`config/stereo_depth.rviz` names the node's outputs with relative topics (matcher/left/image_rect,
disparity/image_color, depth/image_rect, points2), so RViz started in the node's namespace shows
that node's outputs. The fixed frame must be the camera's optical frame (the frame_id of
left/camera_info, which every output carries): `config_for_frame` writes a copy of the template
with it, which the launch files hand to RViz (launch argument `fixed_frame`).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

DEFAULT_FIXED_FRAME = "camera_left_optical_frame"
"""The optical frame stereo_depth_kitti2bag writes (and the demo uses)."""
_FIXED_FRAME = re.compile(r"^(\s*Fixed Frame:\s*).*$", re.MULTILINE)


def with_fixed_frame(template: str, fixed_frame: str) -> str:
    """The RViz config text with its Global Options fixed frame set."""
    frame = fixed_frame.strip().lstrip("/")
    if not frame or any(c.isspace() for c in frame):
        raise ValueError(f"fixed_frame {fixed_frame!r} is not a frame name")
    text, count = _FIXED_FRAME.subn(lambda m: m.group(1) + frame, template)
    if count != 1:
        raise ValueError("the RViz config has no single 'Fixed Frame:' entry")
    return text


def config_for_frame(template_path: str | Path, fixed_frame: str,
                     directory: str | Path | None = None) -> Path:
    """Write the template with `fixed_frame` to a file (named by content) and return its path."""
    text = with_fixed_frame(Path(template_path).read_text(encoding="utf-8"), fixed_frame)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    path = folder / f"stereo_depth_{digest}.rviz"
    if not path.is_file():
        path.write_text(text, encoding="utf-8")
    return path
