"""Static transforms stored in a bag (/tf_static of a ROS 2 bag from stereo_depth_kitti2bag or of a
ROS 1 bag from tomas789/kitti2bag), read without ROS."""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros import topics
from stereo_depth_ros.bags.kitti2bag_fix import PRESETS
from stereo_depth_ros.bags.reader import TF_MESSAGE, BagSource
from stereo_depth_ros.core.transforms import StaticTransform, static_transforms_from_message


def read_static_transforms(path: str | Path, *, preset: str | None = None,
                           frame_id: str | None = None) -> list[StaticTransform]:
    """Every transform on the bag's /tf_static, in bag order (later ones for the same child win
    in a TransformTree). preset / frame_id: as given to stereo_depth_replay, so that the frame
    names match what the replay publishes (kitti2bag: the left camera frame renamed to
    frame_id). BagError when the bag has no /tf_static."""
    source = BagSource(Path(path), topics=[topics.TF_STATIC])
    rename = PRESETS[preset].frame_renames(frame_id) if preset else {}
    transforms: list[StaticTransform] = []
    for item in source:
        if item.msgtype == TF_MESSAGE:
            msg = source.typestore.deserialize_cdr(item.cdr, TF_MESSAGE)
            for edge in static_transforms_from_message(msg, source=f"{path} /tf_static"):
                transforms.append(StaticTransform(rename.get(edge.parent, edge.parent),
                                                  rename.get(edge.child, edge.child),
                                                  edge.matrix))
    return transforms
