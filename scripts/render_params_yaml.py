#!/usr/bin/env python3
"""Regenerate config/stereo_depth.yaml and config/sgbm.yaml from stereo_depth_ros/config.py.

config.py is the single source of parameter names, defaults, ranges and help text; the shipped YAML
files are rendered from it (test_params.py fails when they drift). Run after editing config.py:

    python scripts/render_params_yaml.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stereo_depth_ros import config as cfg  # noqa: E402

MAIN_HEADER = """\
Parameters of stereo_depth_node (stereo_depth_ros). Generated from stereo_depth_ros/config.py
(the single source of names, defaults, ranges and help text) by scripts/render_params_yaml.py.

Use: python -m stereo_depth_ros.ros.stereo_depth_node \\
       --ros-args --params-file config/stereo_depth.yaml
 or: ros2 launch stereo_depth_ros stereo_depth.launch.py params_file:=<this file>
Read-only parameters need a restart; the others can be changed live (ros2 param set), and a bad
value is rejected with the reason. Write floats with a decimal point (1.0, not 1): ROS parameters
are typed. weights_path is resolved against the current directory (`make assets` downloads the
KITTI 2015 checkpoint into assets/weights/); use backend: "sgbm" to run without weights."""

SGBM_HEADER = """\
OpenCV SGBM instead of PSMNet (no weights, fast on a CPU). Use alone or after the main file:
  --ros-args --params-file config/stereo_depth.yaml --params-file config/sgbm.yaml
Keys not listed keep their defaults (or the earlier file's values)."""

DEFAULT_WEIGHTS = "assets/weights/pretrained_model_KITTI2015.tar"


def rendered_files() -> dict[Path, str]:
    """The YAML files as config.py renders them, keyed by path."""
    sgbm_names = ["backend"] + [spec.name for spec in cfg.PARAMS if spec.name.startswith("sgbm.")]
    return {
        REPO_ROOT / "config" / "stereo_depth.yaml": cfg.render_params_yaml(
            {"weights_path": DEFAULT_WEIGHTS}, header=MAIN_HEADER),
        REPO_ROOT / "config" / "sgbm.yaml": cfg.render_params_yaml(
            {"backend": "sgbm"}, names=sgbm_names, header=SGBM_HEADER),
    }


def main() -> int:
    for path, text in rendered_files().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
