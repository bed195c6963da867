"""Why a stereo pair was not turned into outputs: the diagnostics keys, defined once.

Every pair the node accepts is either published or counted under exactly one of these keys
(`dropped.<key>` in /diagnostics). Pure Python: the pipeline raises `FrameDropped` with a key and
a message that names the field and the value; the ROS layer counts and logs it.
"""

from __future__ import annotations

# Input side (synchroniser and message conversion)
STAMP_SKEW = "stamp_skew"
"""Approximate sync: the four messages of a set were further apart than the tolerance."""
UNMATCHED = "unmatched"
"""A message never found partners with the same stamp (exact sync) before it aged out."""
MISSING_CAMERA_INFO = "missing_camera_info"
"""Images arrived but no camera_info ever did on one of the info topics."""
MISSING_IMAGE = "missing_image"
"""camera_info arrived but its image never did."""
IMAGES_LOST_IN_TRANSPORT = "images_lost_in_transport"
"""The left camera_info of a frame arrived but its left image never did: lost before the node
(typically large best-effort images over stock Fast DDS)."""
UNSUPPORTED_ENCODING = "unsupported_encoding"
BAD_IMAGE_DATA = "bad_image_data"
"""The image's step, size or data length is inconsistent."""
BAD_COMPRESSED_DATA = "bad_compressed_data"
"""A compressed (JPEG/PNG) payload that does not decode: corrupt or truncated."""

# Calibration (camera_info)
NAN_IN_CALIBRATION = "nan_in_calibration"
UNCALIBRATED = "uncalibrated_camera_info"
INFO_SIZE_MISMATCH = "camera_info_size_mismatch"
INVALID_CALIBRATION = "invalid_calibration"

# Frame processing
BUSY = "busy"
"""A newer pair replaced this one before the worker took it (latest pair wins)."""
SIZE_MISMATCH = "size_mismatch"
"""Left and right images of one pair differ in size (point cloud node: the left image and the
disparity)."""
IMAGE_TOO_SMALL = "image_too_small"
"""The matcher cannot search its disparity range in an image this narrow."""
INPUT_SIZE_MISMATCH = "matcher_input_size_mismatch"
"""The matcher is made for another image size (an ONNX file exported for one padded size)."""
PROCESSING_ERROR = "processing_error"
"""An unexpected exception inside the worker (the node keeps serving)."""

DROP_REASONS = (STAMP_SKEW, UNMATCHED, MISSING_CAMERA_INFO, MISSING_IMAGE,
                IMAGES_LOST_IN_TRANSPORT, UNSUPPORTED_ENCODING, BAD_IMAGE_DATA,
                BAD_COMPRESSED_DATA, NAN_IN_CALIBRATION, UNCALIBRATED, INFO_SIZE_MISMATCH,
                INVALID_CALIBRATION, BUSY, SIZE_MISMATCH, IMAGE_TOO_SMALL, INPUT_SIZE_MISMATCH,
                PROCESSING_ERROR)
"""Every reason (the README's Topics section lists them all)."""

DEPTH_UNAVAILABLE = "depth_unavailable"
"""Not a drop: the counter prefix of pairs published with disparity only because the calibration
gives no metric depth; `depth_unavailable.<key>` with a key of core.camera.DEPTH_PROBLEMS (zero,
negative or non-finite baseline, non-positive focal length)."""


class FrameDropped(Exception):
    """A pair that cannot be processed: `reason` is one of the keys above, the message names the
    field and the value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
