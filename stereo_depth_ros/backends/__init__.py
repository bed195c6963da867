"""Matching backends behind one interface: `make_backend(name, **options).compute(left, right)`."""

from __future__ import annotations

from stereo_depth_ros.backends.base import DisparityResult, StereoBackend, validate_pair

BACKEND_NAMES = ("psmnet", "sgbm", "bm", "onnx")

__all__ = ["BACKEND_NAMES", "DisparityResult", "StereoBackend", "make_backend", "validate_pair"]


def make_backend(name: str, **options) -> StereoBackend:
    """Build a backend by name; options go to its constructor (see each backend's docstring).

    The import is lazy so that the SGBM and onnx paths never pay for importing torch.
    """
    if name == "psmnet":
        from stereo_depth_ros.backends.psmnet import PsmnetBackend
        return PsmnetBackend(**options)
    if name == "sgbm":
        from stereo_depth_ros.backends.sgbm import SgbmBackend
        return SgbmBackend(**options)
    if name == "bm":
        from stereo_depth_ros.backends.bm import BmBackend
        return BmBackend(**options)
    if name == "onnx":
        from stereo_depth_ros.backends.onnx import OnnxBackend
        return OnnxBackend(**options)
    raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}")
