"""What an exported ONNX file records about itself, and how it is written into the file.

`stereo_depth_export` writes these entries into the model's `metadata_props` (string key/value
pairs); the onnx backend reads them back from ONNX Runtime's `custom_metadata_map` and prepares
its input exactly as recorded. Pure Python (stdlib only): neither onnx nor torch is needed to
read or check them.

Entries (all strings; lists and mappings as JSON):
    stereo_depth.format       FORMAT_VERSION
    checkpoint_sha256         sha256 of the checkpoint file, or "random" (untrained, tests only)
    model_variant             stackhourglass | basic
    max_disparity             full-resolution disparity levels, px (e.g. 192)
    input_height, input_width the network input in px, already padded (multiples of 16, >= 256)
    padding                   {"multiple": 16, "sides": "top,right", "value": 0.0, "min_size": 256}
    channel_order, scale      "RGB", 255.0: input = ((image / scale) - mean) / std per channel
    mean, std                 [r, g, b] lists
    precision                 fp32 | fp16 (arithmetic inside the graph; inputs are float32)
    align_corners             true | false (upsampling mode the weights were trained with)
    outputs                   output names in order, e.g. ["disparity", "confidence",
                              "uncertainty"]
    opset                     the ai.onnx opset of the graph
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

FORMAT_KEY = "stereo_depth.format"
FORMAT_VERSION = 1
INPUT_NAMES = ("left", "right")
"""The graph's inputs, in order: float32 (1, 3, H, W), normalised as the metadata says."""
OUTPUT_DISPARITY = "disparity"
OUTPUT_CONFIDENCE = "confidence"
OUTPUT_UNCERTAINTY = "uncertainty"
"""sigma_d px: the standard deviation of the regression's softmax (files exported since it
exists; older files lack it and the backend then provides no uncertainty)."""
EXPORT_PRECISIONS = ("fp32", "fp16")
RANDOM_WEIGHTS = "random"
"""checkpoint_sha256 of a network exported without a checkpoint (tests, timing)."""

_KEYS = ("checkpoint_sha256", "model_variant", "max_disparity", "input_height", "input_width",
         "padding", "channel_order", "scale", "mean", "std", "precision", "align_corners",
         "outputs", "opset")
_PADDING_KEYS = ("multiple", "sides", "value", "min_size")


@dataclass(frozen=True)
class ExportMetadata:
    """The facts an exported file carries (see the module docstring for their meaning)."""

    checkpoint_sha256: str
    model_variant: str
    max_disparity: int
    input_height: int
    input_width: int
    pad_multiple: int
    pad_sides: str
    pad_value: float
    min_size: int
    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str
    align_corners: bool
    outputs: tuple[str, ...]
    opset: int

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input in px (padded)."""
        return self.input_height, self.input_width

    def size_text(self) -> str:
        """The input size as WIDTHxHEIGHT (the order camera sizes are written in the node)."""
        return f"{self.input_width}x{self.input_height}"

    def to_props(self) -> dict[str, str]:
        """{key: string value} for the ONNX model's metadata_props."""
        padding = {"multiple": self.pad_multiple, "sides": self.pad_sides,
                   "value": self.pad_value, "min_size": self.min_size}
        return {
            FORMAT_KEY: str(FORMAT_VERSION),
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_variant": self.model_variant,
            "max_disparity": str(self.max_disparity),
            "input_height": str(self.input_height),
            "input_width": str(self.input_width),
            "padding": json.dumps(padding),
            "channel_order": self.channel_order,
            "scale": repr(float(self.scale)),
            "mean": json.dumps([float(v) for v in self.mean]),
            "std": json.dumps([float(v) for v in self.std]),
            "precision": self.precision,
            "align_corners": "true" if self.align_corners else "false",
            "outputs": json.dumps(list(self.outputs)),
            "opset": str(self.opset),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file"
                   ) -> ExportMetadata:
        """Parse metadata_props; ValueError naming `source` and the missing or bad entry."""
        reader = _Reader(props, source)
        version = reader.integer(FORMAT_KEY)
        if version != FORMAT_VERSION:
            raise ValueError(f"{source}: metadata {FORMAT_KEY}={version} is not supported "
                             f"(this version reads {FORMAT_VERSION}); export it again")
        missing = [key for key in _KEYS if key not in props]
        if missing:
            raise ValueError(f"{source}: metadata lacks {', '.join(missing)}: export it again "
                             "with stereo_depth_export")
        padding = reader.json_object("padding", _PADDING_KEYS)
        mean, std = reader.triple("mean"), reader.triple("std")
        outputs = reader.json_value("outputs")
        if (not isinstance(outputs, list) or not outputs
                or not all(isinstance(name, str) for name in outputs)
                or OUTPUT_DISPARITY not in outputs):
            raise ValueError(f"{source}: metadata outputs={props['outputs']!r} must be a JSON "
                             f"list of output names including {OUTPUT_DISPARITY!r}")
        metadata = cls(
            checkpoint_sha256=props["checkpoint_sha256"],
            model_variant=props["model_variant"],
            max_disparity=reader.integer("max_disparity"),
            input_height=reader.integer("input_height"),
            input_width=reader.integer("input_width"),
            pad_multiple=int(padding["multiple"]), pad_sides=str(padding["sides"]),
            pad_value=float(padding["value"]), min_size=int(padding["min_size"]),
            channel_order=props["channel_order"],
            scale=reader.number("scale"), mean=mean, std=std,
            precision=props["precision"],
            align_corners=reader.boolean("align_corners"),
            outputs=tuple(outputs),
            opset=reader.integer("opset"))
        metadata.check(source)
        return metadata

    def check(self, source: str = "the ONNX file") -> None:
        """ValueError for values the onnx backend cannot use, naming the entry."""
        problems = []
        if self.input_height <= 0 or self.input_width <= 0:
            problems.append(f"input size {self.input_height}x{self.input_width} (HxW) is empty")
        if self.max_disparity <= 0:
            problems.append(f"max_disparity={self.max_disparity} is not positive")
        if self.pad_sides != "top,right":
            problems.append(f"padding sides {self.pad_sides!r} (only 'top,right' is known)")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {self.channel_order!r} (expected RGB or BGR)")
        if self.scale <= 0 or any(value <= 0 for value in self.std):
            problems.append(f"scale {self.scale} and std {list(self.std)} must be positive")
        if self.precision not in EXPORT_PRECISIONS:
            problems.append(f"precision {self.precision!r} (expected one of "
                            f"{', '.join(EXPORT_PRECISIONS)})")
        if problems:
            raise ValueError(f"{source}: bad metadata: " + "; ".join(problems))


class _Reader:
    """Typed access to metadata strings; errors name the source and the key."""

    def __init__(self, props: Mapping[str, str], source: str) -> None:
        self.props = props
        self.source = source

    def _raw(self, key: str) -> str:
        if key not in self.props:
            raise ValueError(f"{self.source}: metadata lacks {key}: not a file written by "
                             "stereo_depth_export (or an older one): export it again")
        return self.props[key]

    def _bad(self, key: str, expected: str) -> ValueError:
        return ValueError(f"{self.source}: metadata {key}={self.props[key]!r} is not "
                          f"{expected}")

    def integer(self, key: str) -> int:
        try:
            return int(self._raw(key))
        except ValueError:
            raise self._bad(key, "an integer") from None

    def number(self, key: str) -> float:
        try:
            return float(self._raw(key))
        except ValueError:
            raise self._bad(key, "a number") from None

    def boolean(self, key: str) -> bool:
        text = self._raw(key)
        if text not in ("true", "false"):
            raise self._bad(key, "true or false")
        return text == "true"

    def json_value(self, key: str):
        try:
            return json.loads(self._raw(key))
        except json.JSONDecodeError:
            raise self._bad(key, "JSON") from None

    def json_object(self, key: str, keys: tuple[str, ...]) -> dict:
        value = self.json_value(key)
        if not isinstance(value, dict) or any(name not in value for name in keys):
            raise self._bad(key, f"a JSON object with {', '.join(keys)}")
        return value

    def triple(self, key: str) -> tuple[float, float, float]:
        value = self.json_value(key)
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in value)):
            raise self._bad(key, "a JSON list of 3 numbers")
        return tuple(float(v) for v in value)
