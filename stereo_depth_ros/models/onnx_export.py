"""PSMNet as an ONNX graph for one input size: standard operators only, compact cost volume.

`export_psmnet_onnx(model, path, ...)` writes a file that TensorRT's ONNX parser, ONNX Runtime
and OpenVINO read: inputs `left`, `right` float32 (1, 3, H, W) normalised as the metadata says,
outputs `disparity`, `confidence` and `uncertainty` (sigma_d px) float32 (1, 1, H, W) (see
`core.onnx_metadata`).

The exporter is torch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`): it runs
offline with torch alone, while the torch.export-based default of torch >= 2.9 needs onnxscript.

What changes against the eager model, numerically nothing:
- the cost volume is built by `gather_concat_volume` (Pad, Gather, Transpose, Where, Concat:
  a handful of nodes for any number of levels) instead of `cost_volume.build_concat_volume`,
  whose in-place slice writes and `unfold` trace into one slice per disparity level;
- with precision fp16 every convolution holds float16 weights and computes in float16 (a Cast
  before and after it), while everything else, the inputs and the regression (upsampling,
  softmax, soft-argmin, confidence) stay float32, as in the node's own reduced-precision paths.
  The conversion is done on the graph (`convolutions_to_fp16`) rather than by tracing a float16
  model, which the CPU would run at a crawl.

A future per-pixel disparity uncertainty becomes one more output: `PsmnetOnnxGraph.forward`
returns one tensor per name in `output_names`, and the onnx backend reads outputs by name.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stereo_depth_ros.core.onnx_metadata import (INPUT_NAMES, OUTPUT_CONFIDENCE,
                                                 OUTPUT_DISPARITY, OUTPUT_UNCERTAINTY,
                                                 ExportMetadata)
from stereo_depth_ros.models.checkpoint import OFFICIAL_PREPROCESSING, PsmnetPreprocessing
from stereo_depth_ros.models.psmnet import SIZE_MULTIPLE, PSMNetBase

LOG = logging.getLogger(__name__)

DEFAULT_OPSET = 17
"""ai.onnx opset of exported files (TensorRT >= 8.6 and ONNX Runtime >= 1.14 read it)."""
STANDARD_DOMAINS = ("", "ai.onnx")


def gather_concat_volume(left_features: torch.Tensor, right_features: torch.Tensor,
                         num_levels: int) -> torch.Tensor:
    """The PSMNet concatenation volume as a few whole-tensor operations (export-friendly).

    left_features, right_features: (B, C, H, W) float, 1/4-resolution features.
    num_levels: D, the number of disparity levels.
    Returns (B, 2C, D, H, W) in the features' dtype, equal element for element to
    `cost_volume.build_concat_volume`: channels [0, C) hold left[..., x] and [C, 2C)
    right[..., x - i] at level i for x >= i; columns x < i are zero in both halves.

    The right half gathers columns from the right map padded with D-1 zero columns on the left:
    level i, column x reads padded column x - i + D - 1, which is the zero padding for x < i.
    The index table is a (D * W) constant, so the graph has the same few nodes for any D.
    """
    if left_features.shape != right_features.shape:
        raise ValueError(f"left and right features differ in shape: "
                         f"{tuple(left_features.shape)} vs {tuple(right_features.shape)}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    batch, channels, height, width = left_features.shape
    device = left_features.device
    levels = torch.arange(num_levels, device=device).view(-1, 1)
    columns = torch.arange(width, device=device).view(1, -1)
    index = (columns - levels + (num_levels - 1)).reshape(-1)          # (D * W,)
    padded = F.pad(right_features, (num_levels - 1, 0))                 # (B, C, H, W + D - 1)
    right = torch.index_select(padded, 3, index)                        # (B, C, H, D * W)
    right = right.view(batch, channels, height, num_levels, width).permute(0, 1, 3, 2, 4)
    inside = (columns >= levels).view(1, 1, num_levels, 1, width)       # (1, 1, D, 1, W)
    left = torch.where(inside, left_features.unsqueeze(2),
                       torch.zeros((), dtype=left_features.dtype, device=device))
    return torch.cat([left, right], dim=1)


class PsmnetOnnxGraph(nn.Module):
    """The exported computation: normalised left/right -> disparity, confidence, uncertainty.

    model: an eval-mode PSMNet (either variant) in float32.
    Inputs of `forward`: left, right (1, 3, H, W) float32, normalised, H and W multiples of 16
    and >= 256. Returns (disparity, confidence, uncertainty), each (1, 1, H, W) float32:
    disparity in px in [0, max_disparity - 1], confidence in [0, 1]
    (`regression.window_confidence`), uncertainty sigma_d px (`regression.disparity_std`).
    """

    output_names = (OUTPUT_DISPARITY, OUTPUT_CONFIDENCE, OUTPUT_UNCERTAINTY)
    # The metadata's `outputs` records the names; the onnx backend picks outputs by name.

    def __init__(self, model: PSMNetBase) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        size = (left.shape[2], left.shape[3])
        left_features, right_features = model.extract_features(left, right)
        volume = gather_concat_volume(left_features, right_features, model.num_levels)
        cost = model.aggregate(volume)[-1]
        return model.regress(cost, size, with_confidence=True, with_uncertainty=True)


@dataclass(frozen=True)
class ExportReport:
    """What `export_psmnet_onnx` wrote: the metadata, the file's size and the seconds taken."""

    metadata: ExportMetadata
    path: Path
    size_bytes: int
    seconds: float


def export_psmnet_onnx(model: PSMNetBase, path: str | Path, *, height: int, width: int,
                       precision: str = "fp32", checkpoint_sha256: str,
                       preprocessing: PsmnetPreprocessing = OFFICIAL_PREPROCESSING,
                       opset: int = DEFAULT_OPSET) -> ExportReport:
    """Write `model` as an ONNX file for input size (height, width) px, padded already.

    model: a PSMNet (`build_psmnet`, weights loaded); it is put in eval mode on the CPU.
    precision: "fp32", or "fp16" (float16 convolutions, see the module docstring).
    height, width: the padded network input (multiples of 16, >= 256; see core.padding).
    checkpoint_sha256: recorded in the metadata (`core.onnx_metadata.RANDOM_WEIGHTS` if none).
    Raises ValueError for a size the network cannot take or a graph with non-standard operators.
    """
    import onnx

    if (height % SIZE_MULTIPLE or width % SIZE_MULTIPLE
            or min(height, width) < preprocessing.min_size):
        raise ValueError(f"input size {height}x{width} (HxW) must be padded already: multiples "
                         f"of {SIZE_MULTIPLE}, at least {preprocessing.min_size} px")
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    started = time.perf_counter()
    model = model.cpu().eval()
    graph = PsmnetOnnxGraph(model).eval()
    example = torch.zeros((1, 3, height, width), dtype=torch.float32)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one (module docstring);
        # its tracer warns about sizes read as Python numbers, which are fixed here by design.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(graph, (example, example), buffer, dynamo=False,
                          opset_version=opset, input_names=list(INPUT_NAMES),
                          output_names=list(graph.output_names), do_constant_folding=True)
    proto = fold_static_shapes(buffer.getvalue())
    if precision == "fp16":
        convolutions_to_fp16(proto)
    check_standard_operators(proto)
    metadata = ExportMetadata(
        checkpoint_sha256=checkpoint_sha256, model_variant=model.variant,
        max_disparity=model.max_disparity, input_height=height, input_width=width,
        pad_multiple=preprocessing.pad_multiple, pad_sides=preprocessing.pad_sides,
        pad_value=preprocessing.pad_value, min_size=preprocessing.min_size,
        channel_order=preprocessing.channel_order, scale=preprocessing.scale,
        mean=tuple(preprocessing.mean), std=tuple(preprocessing.std), precision=precision,
        align_corners=model.align_corners, outputs=tuple(graph.output_names), opset=opset)
    onnx.helper.set_model_props(proto, metadata.to_props())
    onnx.checker.check_model(proto)
    path = Path(path)
    onnx.save(proto, str(path))
    return ExportReport(metadata=metadata, path=path, size_bytes=path.stat().st_size,
                        seconds=time.perf_counter() - started)


def fold_static_shapes(model_bytes: bytes):
    """The traced graph with its shape arithmetic folded into constants (an onnx ModelProto).

    The TorchScript tracer records `Shape`/`Slice`/`Range`/`If` nodes for sizes the model reads
    from its tensors (the upsampling size, the soft-argmin levels, `squeeze`). The input size is
    fixed, so ONNX Runtime's basic optimisation level (constant folding and redundant-node
    removal: provider-independent rewrites that keep standard operators) turns them into
    constants. Opset imports that no node uses are dropped.
    """
    import tempfile

    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="stereo_depth_export_") as folder:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(folder) / "folded.onnx")
        onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        proto = onnx.load(options.optimized_model_filepath)
    used = {node.domain for node in proto.graph.node}
    keep = [entry for entry in proto.opset_import if entry.domain in used | {""}]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return proto


def convolutions_to_fp16(proto) -> int:
    """Make every Conv of `proto` (in place) compute in float16: its weight and bias initializers
    become float16, a Cast to float16 feeds it and a Cast back to float32 follows it, so the
    rest of the graph keeps its float32 types. Returns the number of convolutions converted.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    nodes = []
    converted = 0
    for node in proto.graph.node:
        if node.op_type != "Conv" or any(name not in initializers for name in node.input[1:]):
            nodes.append(node)
            continue
        for name in node.input[1:]:
            init = initializers[name]
            if init.data_type == TensorProto.FLOAT:
                half = numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"),
                                               name)
                init.CopyFrom(half)
        data, output = node.input[0], node.output[0]
        node.input[0], node.output[0] = f"{data}__{converted}_fp16", f"{output}__fp16"
        nodes.append(onnx.helper.make_node("Cast", [data], [node.input[0]],
                                           to=TensorProto.FLOAT16, name=f"{node.name}/to_fp16"))
        nodes.append(node)
        nodes.append(onnx.helper.make_node("Cast", [node.output[0]], [output],
                                           to=TensorProto.FLOAT, name=f"{node.name}/to_fp32"))
        converted += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.graph.value_info[:]          # intermediate types changed; readers infer them
    return converted


def check_standard_operators(proto) -> None:
    """ValueError naming any node outside the standard ai.onnx domain (custom operators)."""
    custom = sorted({f"{node.domain}::{node.op_type}" for node in proto.graph.node
                     if node.domain not in STANDARD_DOMAINS})
    if custom:
        raise ValueError(f"the exported graph uses non-standard operators: {', '.join(custom)}")
