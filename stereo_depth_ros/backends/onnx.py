"""ONNX backend: a network exported by `stereo_depth_export`, run by ONNX Runtime, without torch.

The file is made for one padded input size and records how its input is prepared
(`core.onnx_metadata`): this backend normalises and pads the pair with numpy exactly that way,
runs the session on the best execution provider available (TensorRT, CUDA, OpenVINO, then CPU;
or the list given) and crops the outputs back. Nothing here imports torch, so it runs on a
Jetson or any machine with only onnxruntime (or onnxruntime-gpu) installed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from stereo_depth_ros.backends.base import (PSMNET_DELTA_D_PX, DisparityResult, InputSizeError,
                                            to_rgb, validate_pair)
from stereo_depth_ros.core.onnx_metadata import (INPUT_NAMES, OUTPUT_CONFIDENCE,
                                                 OUTPUT_DISPARITY, OUTPUT_UNCERTAINTY,
                                                 ExportMetadata)
from stereo_depth_ros.core.padding import InputPadder

LOG = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""onnx_providers' short names (config.ONNX_PROVIDERS) -> ONNX Runtime execution providers, in
the order `auto` prefers them."""


def import_onnxruntime():
    """The onnxruntime module; ImportError saying what to install when it is missing."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"backend onnx needs ONNX Runtime ({error}): pip install onnxruntime "
                          "(CPU), onnxruntime-gpu (CUDA/TensorRT) or onnxruntime-openvino; on a "
                          "Jetson the JetPack onnxruntime-gpu wheel") from None
    return onnxruntime


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """ONNX Runtime provider names for onnx_providers `requested`.

    requested: "auto" (every available one of tensorrt, cuda, openvino, cpu, in that order) or a
        comma-separated list of those short names, in order of preference.
    available: `onnxruntime.get_available_providers()`.
    ValueError for an unknown name or one this onnxruntime does not have, naming what it has.
    """
    text = requested.strip().lower()
    if text in ("", "auto"):
        chosen = [name for name in PROVIDER_NAMES.values() if name in available]
        return chosen or list(available)
    chosen = []
    for short in (part.strip() for part in text.split(",")):
        if short not in PROVIDER_NAMES:
            raise ValueError(f"onnx_providers: unknown provider {short!r}: expected auto or a "
                             f"comma-separated list of {', '.join(PROVIDER_NAMES)}")
        name = PROVIDER_NAMES[short]
        if name not in available:
            raise ValueError(f"onnx_providers: {short} ({name}) is not in this onnxruntime, "
                             f"which has {', '.join(available)}")
        chosen.append(name)
    return chosen


class OnnxBackend:
    """An exported PSMNet file behind `compute(left, right) -> DisparityResult`.

    onnx_path: the .onnx file `stereo_depth_export` wrote (its metadata is required).
    providers: "auto" or a comma-separated list of tensorrt, cuda, openvino, cpu (see
        `choose_providers`); the ones in use are logged and shown by `describe`.

    Input: rectified (H, W, 3) uint8 RGB or (H, W) mono pairs whose padded size is the file's
    (`check_input_size` refuses others with both sizes). Output as the psmnet backend:
    disparity (H, W) float32 px, NaN where not finite; confidence (H, W) float32 in [0, 1].
    """

    name = "onnx"
    min_disparity = 0.0
    delta_d = PSMNET_DELTA_D_PX

    def __init__(self, onnx_path: str | Path, providers: str = "auto") -> None:
        onnxruntime = import_onnxruntime()
        self.path = Path(onnx_path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"onnx_path {str(self.path)!r} does not exist or is not a file")
        self.providers = choose_providers(providers, onnxruntime.get_available_providers())
        self.session = onnxruntime.InferenceSession(str(self.path), providers=self.providers)
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ExportMetadata.from_props(props, source=str(self.path))
        self._check_graph()
        self.max_disparity = float(self.metadata.max_disparity)
        meta = self.metadata
        self._mean = np.asarray(meta.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(meta.std, np.float32).reshape(1, 3, 1, 1)
        self._lock = threading.Lock()
        LOG.info("onnx backend: %s", self.describe())

    def _check_graph(self) -> None:
        """ValueError when the graph's inputs/outputs do not match its metadata."""
        meta = self.metadata
        inputs = {item.name: item.shape for item in self.session.get_inputs()}
        expected = [1, 3, meta.input_height, meta.input_width]
        for name in INPUT_NAMES:
            if name not in inputs or list(inputs[name]) != expected:
                raise ValueError(f"{self.path}: input {name!r} should be float32 {expected} as "
                                 f"its metadata says, the graph has {inputs}")
        outputs = [item.name for item in self.session.get_outputs()]
        missing = [name for name in meta.outputs if name not in outputs]
        if missing:
            raise ValueError(f"{self.path}: outputs {missing} named in the metadata are not in "
                             f"the graph ({outputs})")

    def describe(self) -> str:
        """One line for start-up logs: the file, what it holds and the providers in use."""
        meta = self.metadata
        used = self.session.get_providers()
        return (f"onnx {self.path.name}: {meta.model_variant} {meta.precision}, input "
                f"{meta.size_text()} (padded), max_disparity {meta.max_disparity}, outputs "
                f"{', '.join(meta.outputs)}; providers {', '.join(used)}")

    # -- the interface every backend has ------------------------------------------------------

    def padder(self, width: int, height: int) -> InputPadder:
        """The padding the file's metadata prescribes for a (width, height) image."""
        meta = self.metadata
        return InputPadder((height, width), multiple=meta.pad_multiple, min_size=meta.min_size,
                           value=meta.pad_value)

    def check_input_size(self, width: int, height: int) -> None:
        """InputSizeError unless a width x height image pads to exactly the file's input."""
        padded_height, padded_width = self.padder(width, height).padded_shape
        meta = self.metadata
        if (padded_height, padded_width) != meta.input_size:
            raise InputSizeError(
                f"the ONNX file {self.path.name} was exported for {meta.size_text()} (WxH, "
                f"padded) but the matcher input is {width}x{height}, which pads to "
                f"{padded_width}x{padded_height}: export it again with stereo_depth_export "
                f"--size {height}x{width}, or change input_scale")

    def update(self, **changes: object) -> None:
        """The file and providers are fixed: nothing changes while running."""
        if changes:
            raise ValueError(f"onnx options cannot change while running "
                             f"({', '.join(sorted(changes))}): restart with the new values")

    def preprocess(self, left: np.ndarray, right: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, InputPadder]:
        """Validate a pair, normalise and pad it as the metadata says.

        Returns left, right as (1, 3, H', W') float32 arrays and the InputPadder that crops the
        outputs back to (H, W).
        """
        left, right = validate_pair(left, right)
        height, width = left.shape[:2]
        self.check_input_size(width, height)
        meta = self.metadata
        images = np.stack([to_rgb(left), to_rgb(right)]).transpose(0, 3, 1, 2)
        if meta.channel_order == "BGR":
            images = images[:, ::-1]
        images = images.astype(np.float32) / np.float32(meta.scale)
        images = (images - self._mean) / self._std
        padder = self.padder(width, height)
        images = np.ascontiguousarray(padder.pad(images), dtype=np.float32)
        return images[0:1], images[1:2], padder

    @property
    def provides_uncertainty(self) -> bool:
        """sigma_d comes with every `compute` when the file has the output (exported since the
        regression measures it)."""
        return OUTPUT_UNCERTAINTY in self.metadata.outputs

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        """Disparity, confidence and (in files that have it) sigma_d of a rectified pair."""
        start = time.perf_counter()
        left_in, right_in, padder = self.preprocess(left, right)
        prepared = time.perf_counter()
        with self._lock:
            values = self.session.run(None, {INPUT_NAMES[0]: left_in, INPUT_NAMES[1]: right_in})
        inferred = time.perf_counter()
        outputs = dict(zip((item.name for item in self.session.get_outputs()), values))
        disparity = np.array(padder.unpad(outputs[OUTPUT_DISPARITY][0, 0]), np.float32)
        disparity[~np.isfinite(disparity)] = np.nan
        confidence, sigma = (outputs.get(name) for name in (OUTPUT_CONFIDENCE,
                                                            OUTPUT_UNCERTAINTY))
        if confidence is not None:
            confidence = np.array(padder.unpad(confidence[0, 0]), np.float32)
        if sigma is not None:
            sigma = np.array(padder.unpad(sigma[0, 0]), np.float32)
            sigma[~np.isfinite(disparity)] = np.nan
        return DisparityResult(
            disparity=disparity, confidence=confidence, uncertainty=sigma,
            timings_s={"preprocess": prepared - start, "infer": inferred - prepared,
                       "postprocess": time.perf_counter() - inferred})

    def release(self) -> None:
        """Drop the session (device memory of GPU providers goes back)."""
        self.session = None
