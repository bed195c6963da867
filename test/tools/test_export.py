"""stereo_depth_export and the exported graph: the compact cost volume equals the model's, the
metadata round-trips, ONNX Runtime on the file equals the exact engine (a small basic network; the
released stackhourglass weights on the real golden crop), fp16 export, the tool's errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

pytest.register_assert_rewrite("helpers.tiny_onnx")
from helpers.tiny_onnx import TINY_MAX_DISPARITY, TINY_PADDED, TINY_SIZE  # noqa: E402

from stereo_depth_ros.core.onnx_metadata import ExportMetadata  # noqa: E402
from stereo_depth_ros.core.synthetic import make_scene  # noqa: E402
from stereo_depth_ros.models.checkpoint import OFFICIAL_PREPROCESSING  # noqa: E402
from stereo_depth_ros.models.cost_volume import build_concat_volume  # noqa: E402
from stereo_depth_ros.models.onnx_export import gather_concat_volume  # noqa: E402

pytest_plugins = ("helpers.tiny_onnx",)       # the tiny_export fixture


@pytest.mark.parametrize("levels, width", [(1, 7), (5, 20), (12, 9), (48, 64)])
def test_the_compact_cost_volume_equals_the_models(levels, width):
    generator = torch.Generator().manual_seed(levels)
    left = torch.randn(2, 4, 3, width, generator=generator)
    right = torch.randn(2, 4, 3, width, generator=generator)
    got = gather_concat_volume(left, right, levels)
    assert got.shape == (2, 8, levels, 3, width)
    assert torch.equal(got, build_concat_volume(left, right, levels))


def _props(path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def test_the_metadata_round_trips_and_records_the_export(tiny_export):
    meta = ExportMetadata.from_props(_props(tiny_export.onnx_path), str(tiny_export.onnx_path))
    pre = OFFICIAL_PREPROCESSING
    assert meta.checkpoint_sha256 == hashlib.sha256(tiny_export.checkpoint.read_bytes()
                                                    ).hexdigest()
    assert (meta.model_variant, meta.max_disparity, meta.precision) == ("basic", 16, "fp32")
    assert meta.input_size == TINY_PADDED
    assert (meta.pad_multiple, meta.pad_sides, meta.pad_value, meta.min_size) == \
        (16, "top,right", 0.0, 256)
    assert (meta.channel_order, meta.scale, meta.mean, meta.std) == \
        ("RGB", 255.0, pre.mean, pre.std)
    assert meta.align_corners is True and meta.opset == 17
    assert meta.outputs == ("disparity", "confidence", "uncertainty")
    assert ExportMetadata.from_props(meta.to_props()) == meta
    assert "padded to 256x256" in tiny_export.output


@pytest.mark.parametrize("key", ["checkpoint_sha256", "mean", "input_width", "padding"])
def test_a_file_without_a_metadata_entry_is_refused_naming_it(tiny_export, key):
    props = _props(tiny_export.onnx_path)
    del props[key]
    with pytest.raises(ValueError, match=f"lacks {key}"):
        ExportMetadata.from_props(props, "net.onnx")


def test_bad_metadata_values_are_named():
    props = _props_of_a_valid_file()
    with pytest.raises(ValueError, match=r"mean='\[1, 2\]' is not a JSON list of 3 numbers"):
        ExportMetadata.from_props({**props, "mean": "[1, 2]"})
    with pytest.raises(ValueError, match="precision 'int4'"):
        ExportMetadata.from_props({**props, "precision": "int4"})


def _props_of_a_valid_file() -> dict[str, str]:
    pre = OFFICIAL_PREPROCESSING
    return ExportMetadata(
        checkpoint_sha256="0" * 64, model_variant="basic", max_disparity=16, input_height=256,
        input_width=256, pad_multiple=16, pad_sides="top,right", pad_value=0.0, min_size=256,
        channel_order="RGB", scale=255.0, mean=pre.mean, std=pre.std, precision="fp32",
        align_corners=True, outputs=("disparity", "confidence"), opset=17).to_props()


def test_the_graph_is_standard_static_and_compact(tiny_export):
    proto = onnx.load(str(tiny_export.onnx_path))
    onnx.checker.check_model(proto)
    assert {entry.domain for entry in proto.opset_import} <= {"", "ai.onnx"}
    assert max(entry.version for entry in proto.opset_import) >= 17
    ops = [node.op_type for node in proto.graph.node]
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    # Shapes are folded (no Shape/If/Range left) and the volume is one Gather, not D slices.
    assert not {"Shape", "If", "Range", "Loop", "Slice"} & set(ops)
    assert ops.count("Gather") == 1 and ops.count("Concat") <= 3
    shapes = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in [*proto.graph.input, *proto.graph.output]}
    assert [value.name for value in proto.graph.input] == ["left", "right"]
    assert [value.name for value in proto.graph.output] == [
        "disparity", "confidence", "uncertainty"]
    assert shapes == {"left": [1, 3, 256, 256], "right": [1, 3, 256, 256],
                      "disparity": [1, 1, 256, 256], "confidence": [1, 1, 256, 256],
                      "uncertainty": [1, 1, 256, 256]}


def test_onnx_runtime_equals_the_exact_engine(tiny_export):
    from stereo_depth_ros.backends.onnx import OnnxBackend
    from stereo_depth_ros.backends.psmnet import PsmnetBackend

    scene = make_scene(*TINY_SIZE, background_disparity=4.0, foreground_disparity=9.0,
                       texture_cell_px=2.0, seed=1)
    got = OnnxBackend(tiny_export.onnx_path, "cpu").compute(scene.left, scene.right)
    exact = PsmnetBackend(tiny_export.checkpoint, model="basic",
                          max_disparity=TINY_MAX_DISPARITY, device="cpu",
                          engine="exact").compute(scene.left, scene.right)
    assert got.disparity.shape == TINY_SIZE
    assert np.ptp(exact.disparity) > 2.0 and 0.05 < exact.confidence.mean() < 0.95  # not flat
    diff = np.abs(got.disparity - exact.disparity)
    assert diff.mean() <= 1e-4 and diff.max() <= 1e-2, (diff.mean(), diff.max())
    assert np.abs(got.confidence - exact.confidence).mean() <= 1e-4
    assert np.ptp(exact.uncertainty) > 0.1                         # sigma_d is not flat
    assert np.nanmean(np.abs(got.uncertainty - exact.uncertainty)) <= 1e-4


@pytest.mark.slow
def test_the_released_weights_on_the_real_golden_equal_exact(tmp_path, kitti_weights,
                                                             real_golden):
    """The acceptance check of the export: ONNX Runtime (CPU) on the exported released network
    against the exact engine computed here and the official output (mean <= 1e-3 px)."""
    from stereo_depth_ros.backends.onnx import OnnxBackend
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.tools.export import main

    path = tmp_path / "kitti2015_256x512.onnx"
    assert main(["--weights", str(kitti_weights), "--size", "256x512",
                 "--output", str(path)]) == 0
    got = OnnxBackend(path, "cpu").compute(real_golden["left"], real_golden["right"])
    exact = PsmnetBackend(kitti_weights, device="cpu", engine="exact").compute(
        real_golden["left"], real_golden["right"])
    for reference in (exact.disparity, real_golden[True]):
        diff = np.abs(got.disparity - reference)
        assert diff.mean() <= 1e-3 and diff.max() <= 1e-2, (diff.mean(), diff.max())
    assert np.abs(got.confidence - exact.confidence).mean() <= 1e-3
    assert np.nanmean(np.abs(got.uncertainty - exact.uncertainty)) <= 1e-3


@pytest.mark.parametrize("arguments, message", [
    (["--output", "{tmp}/net.txt"], "expected a .onnx file name"),
    (["--output", "{tmp}/none/net.onnx"], "does not exist"),
    (["--output", "{tmp}/net.onnx", "--opset", "16"], "--opset 16: must be 17 or newer"),
    (["--output", "{tmp}/net.onnx", "--weights", "{tmp}/none.tar"], "no such file"),
])
def test_tool_errors_are_one_line(tmp_path, capsys, arguments, message):
    from stereo_depth_ros.tools.export import main

    code = main(["--size", "256x256", *[a.format(tmp=tmp_path) for a in arguments]])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("stereo_depth_export: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_the_fp16_file_has_float16_convolutions_and_stays_close(tmp_path, kitti_weights,
                                                                real_golden):
    """fp16 export of the released stackhourglass: float16 convolution weights behind Casts,
    float32 inputs and outputs; ONNX Runtime CPU runs it too (measured mean 5e-4 px, max
    0.04 px from the official output)."""
    from stereo_depth_ros.backends.onnx import OnnxBackend
    from stereo_depth_ros.tools.export import main

    path = tmp_path / "kitti2015_256x512_fp16.onnx"
    assert main(["--weights", str(kitti_weights), "--size", "256x512", "--precision", "fp16",
                 "--output", str(path)]) == 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]} \
        == {float32}
    initializers = {init.name: init.data_type for init in proto.graph.initializer}
    convolutions = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convolutions) > 100
    assert {initializers[name] for node in convolutions for name in node.input[1:]} == {float16}
    producers = {output: node for node in proto.graph.node for output in node.output}
    assert all(producers[node.input[0]].op_type == "Cast" for node in convolutions)

    backend = OnnxBackend(path, "cpu")
    assert backend.metadata.precision == "fp16"
    assert backend.metadata.model_variant == "stackhourglass"
    got = backend.compute(real_golden["left"], real_golden["right"])
    diff = np.abs(got.disparity - real_golden[True])
    assert diff.mean() <= 0.01 and diff.max() <= 0.5, (diff.mean(), diff.max())
