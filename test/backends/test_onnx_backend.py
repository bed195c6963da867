"""backend onnx: providers chosen and named, the size refusal (in the backend, the pipeline and
the real node), a run without torch, and the node publishing what the file computes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

pytest.register_assert_rewrite("helpers.tiny_onnx")
from helpers.tiny_onnx import TINY_SIZE  # noqa: E402

from stereo_depth_ros import drop_reasons  # noqa: E402
from stereo_depth_ros.backends.base import InputSizeError  # noqa: E402
from stereo_depth_ros.backends.onnx import choose_providers  # noqa: E402
from stereo_depth_ros.config import NodeConfig  # noqa: E402
from stereo_depth_ros.core.synthetic import make_scene  # noqa: E402
from stereo_depth_ros.drop_reasons import FrameDropped  # noqa: E402

pytest_plugins = ("helpers.tiny_onnx",)       # the tiny_export fixture
ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_prefers_tensorrt_then_cuda_then_openvino_then_cpu():
    assert choose_providers("auto", ["CPUExecutionProvider", *ALL[:2]]) == ALL
    assert choose_providers("", ["AzureExecutionProvider", "CPUExecutionProvider"]) == \
        ["CPUExecutionProvider"]
    assert choose_providers("CUDA, cpu", ALL) == ALL[1:]


def test_a_provider_that_is_not_there_is_refused_naming_what_is():
    with pytest.raises(ValueError, match=r"tensorrt \(TensorrtExecutionProvider\) is not in "
                                         r"this onnxruntime, which has CPUExecutionProvider"):
        choose_providers("tensorrt,cpu", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unknown provider 'rocm'"):
        choose_providers("rocm", ALL)


def test_parameters_are_checked():
    config = NodeConfig.from_params({"backend": "onnx", "onnx_path": "/x/net.onnx",
                                     "onnx_providers": "cuda,cpu"})
    assert config.backend_options() == {"onnx_path": "/x/net.onnx", "providers": "cuda,cpu"}
    with pytest.raises(ValueError, match="onnx_providers='gpu' is not allowed"):
        NodeConfig.from_params({"onnx_providers": "gpu"})
    with pytest.raises(ValueError, match="onnx_path is empty but backend is onnx"):
        NodeConfig.from_params({"backend": "onnx"}).validate_startup()


@pytest.fixture(scope="module")
def backend(tiny_export):
    from stereo_depth_ros.backends import make_backend
    return make_backend("onnx", onnx_path=str(tiny_export.onnx_path), providers="auto")


def test_the_backend_describes_itself_and_its_providers(backend):
    assert backend.name == "onnx" and backend.max_disparity == 16.0
    assert backend.provides_uncertainty            # the file has sigma_d: depth/uncertainty
    assert backend.delta_d == 1.0 / 256.0
    text = backend.describe()
    assert "basic fp32, input 256x256 (padded), max_disparity 16" in text
    assert "providers CPUExecutionProvider" in text


@pytest.mark.parametrize("width, height", [(250, 240), (256, 256), (241, 250)])
def test_sizes_that_pad_to_the_files_size_are_accepted(backend, width, height):
    backend.check_input_size(width, height)


@pytest.mark.parametrize("width, height, padded", [(250, 300, "256x304"), (512, 256, "512x256"),
                                                   (1242, 375, "1248x384")])
def test_a_size_that_pads_otherwise_is_refused_naming_both(backend, width, height, padded):
    with pytest.raises(InputSizeError) as error:
        backend.check_input_size(width, height)
    assert (f"exported for 256x256 (WxH, padded) but the matcher input is {width}x{height}, "
            f"which pads to {padded}") in str(error.value)
    image = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(InputSizeError):
        backend.compute(image, image)


def test_the_pipeline_drops_a_mismatched_pair_under_its_own_reason(backend):
    """The size that counts is the matcher's input, after input_scale and padding."""
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline

    scene = make_scene(600, 620, texture_cell_px=4.0)
    pipeline = StereoPipeline(backend, PipelineOptions(input_scale=1.0))
    with pytest.raises(FrameDropped) as dropped:
        pipeline.process(scene.left, scene.right, scene.rig)
    assert dropped.value.reason == drop_reasons.INPUT_SIZE_MISMATCH
    assert "matcher input is 620x600, which pads to 624x608: export it again" in \
        str(dropped.value)
    pipeline.options = PipelineOptions(input_scale=0.4)                 # 248x240 -> 256x256
    result = pipeline.process(scene.left, scene.right, scene.rig)
    assert result.disparity.shape == (240, 248) and np.isfinite(result.depth_m).mean() > 0.99


def test_it_runs_without_torch(tiny_export, repo_root):
    """A Jetson user's install: onnxruntime but no PyTorch (torch imports are blocked)."""
    code = f"""
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ImportError('torch is blocked')
sys.meta_path.insert(0, _NoTorch())
import numpy as np
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.core.synthetic import make_scene
from stereo_depth_ros.pipeline import StereoPipeline
scene = make_scene(240, 250, texture_cell_px=2.0)
backend = make_backend("onnx", onnx_path={str(tiny_export.onnx_path)!r})
result = StereoPipeline(backend).process(scene.left, scene.right, scene.rig)
print(np.isfinite(result.depth_m).mean())
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0.99


# ----------------------------------------------------------------------------- the real node
@pytest.mark.ros
@pytest.mark.slow
def test_the_node_publishes_what_the_file_computes_and_drops_other_sizes(tiny_export, backend):
    pytest.importorskip("rclpy")
    from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess
    from helpers.ros_messages import as_array, stereo_infos

    scene = make_scene(*TINY_SIZE, background_disparity=4.0, foreground_disparity=9.0,
                       texture_cell_px=2.0, seed=1)
    expected = backend.compute(scene.left, scene.right)
    big = make_scene(300, TINY_SIZE[1], texture_cell_px=2.0, seed=2)
    args = ["-r", "__ns:=/onnx", "-p", "backend:=onnx",
            "-p", f"onnx_path:={tiny_export.onnx_path}", "-p", "onnx_providers:=cpu",
            "-p", "diagnostics_period_seconds:=0.25",
            "-p", "max_relative_uncertainty:=0.0",     # the file's own output, unmasked
            "-p", "max_disparity_uncertainty:=0.0"]
    names = ["disparity", "disparity/confidence", "depth/image_rect"]
    with NodeProcess(args) as node:
        node.wait_for_output(r"ready: backend=onnx", timeout=120.0)
        harness = Harness(node, {n: OUTPUTS[n] for n in names}, namespace="/onnx")
        try:
            harness.wait_until_connected(names)
            when = harness.next_stamp()
            harness.send(big.left, big.right, "rgb8", *stereo_infos(big.rig, when, FRAME), when)
            status = harness.wait_status(
                lambda s: int(s.get(f"dropped.{drop_reasons.INPUT_SIZE_MISMATCH}", 0)) >= 1)
            when = harness.next_stamp()
            harness.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME),
                         when)
            out = harness.outputs_for(when, names, timeout=120.0)
        finally:
            harness.close()
            code = node.stop()
    log = node.output()
    assert code == 0, log
    assert "providers CPUExecutionProvider" in log
    assert ("exported for 256x256 (WxH, padded) but the matcher input is 250x300, which pads "
            "to 256x304") in log
    assert int(status.get("pairs_published", 0)) == 0
    disp = out["disparity"]
    # max_disparity inclusive, as stereo_image_proc: min + range - 1
    assert (disp.min_disparity, disp.max_disparity, disp.delta_d) == (0.0, 15.0, 1.0 / 256)
    published = as_array(disp.image)
    np.testing.assert_allclose(published, expected.disparity, atol=1e-5)
    np.testing.assert_allclose(as_array(out["disparity/confidence"]), expected.confidence,
                               atol=1e-5)
    np.testing.assert_allclose(as_array(out["depth/image_rect"]),
                               scene.rig.fx * scene.rig.baseline_m / expected.disparity,
                               rtol=1e-5)


@pytest.mark.ros
@pytest.mark.slow
def test_a_warmup_size_the_file_does_not_fit_stops_the_node_at_start(tiny_export):
    pytest.importorskip("rclpy")
    from helpers.ros import NodeProcess

    args = ["-r", "__ns:=/onnx_warm", "-p", "backend:=onnx",
            "-p", f"onnx_path:={tiny_export.onnx_path}", "-p", "warmup_size:=1242x375"]
    with NodeProcess(args) as node:
        code = node.wait_exit(timeout=120.0)
    assert code != 0
    assert ("exported for 256x256 (WxH, padded) but the matcher input is 1242x375, which pads "
            "to 1248x384") in node.output()


def test_infer_runs_a_file_and_refuses_one_without_onnx_path(tiny_export, tmp_path, capsys,
                                                             backend):
    import cv2

    from stereo_depth_ros.tools.infer import main

    scene = make_scene(*TINY_SIZE, background_disparity=4.0, foreground_disparity=9.0,
                       texture_cell_px=2.0, seed=1)
    for side, image in (("left", scene.left), ("right", scene.right)):
        cv2.imwrite(str(tmp_path / f"{side}.png"), image[..., ::-1])
    common = ["--left", str(tmp_path / "left.png"), "--right", str(tmp_path / "right.png"),
              "--output", str(tmp_path / "d.npy"), "--backend", "onnx"]
    assert main([*common, "--onnx-path", str(tiny_export.onnx_path),
                 "--max-relative-uncertainty", "0", "--max-disparity-uncertainty", "0"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"),
                               backend.compute(scene.left, scene.right).disparity, atol=1e-6)
    capsys.readouterr()
    assert main(common) == 1
    assert "--backend onnx needs --onnx-path FILE.onnx" in capsys.readouterr().err
