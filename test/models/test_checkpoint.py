"""Checkpoint loading: accepted formats load, each bad file gives one clear CheckpointError."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from stereo_depth_ros.models import CheckpointError, build_psmnet, load_checkpoint
from stereo_depth_ros.models.checkpoint import read_state_dict


class Tiny(nn.Module):
    """A small stand-in with the parts that matter: a conv, a BatchNorm and max_disparity."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Conv2d(channels, 1, 1)
        self.max_disparity = 32


def _source():
    torch.manual_seed(1)
    model = Tiny()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
        model.bn.num_batches_tracked.fill_(7)
    return model


def _save(obj, path, legacy=False):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _prefixed(state):
    return {"module." + k: v for k, v in state.items()}


def _without_counters(state):
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


ACCEPTED = {
    "official_zip": lambda s: {"epoch": 10, "state_dict": _prefixed(s), "train_loss": 0.5},
    "official_legacy": lambda s: {"epoch": 10, "state_dict": _prefixed(s)},
    "bare": lambda s: dict(s),
    "bare_prefixed": lambda s: _prefixed(s),
    "no_num_batches_tracked": lambda s: {"state_dict": _prefixed(_without_counters(s))},
    "matching_maxdisp": lambda s: {"state_dict": dict(s), "maxdisp": 32},
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("variant", list(ACCEPTED))
def test_accepted_variants_load(tmp_path, variant, legacy):
    source = _source()
    path = _save(ACCEPTED[variant](source.state_dict()), tmp_path / "ckpt.tar", legacy)
    target = Tiny()
    extra = load_checkpoint(target, path)
    for key, value in source.state_dict().items():
        if key.endswith("num_batches_tracked") and variant == "no_num_batches_tracked":
            assert target.state_dict()[key].item() == 0          # model's own counter kept
        else:
            assert torch.equal(target.state_dict()[key], value), key
    if variant == "official_zip":
        assert extra == {"epoch": 10, "train_loss": 0.5}


def test_real_kitti_weights_load(kitti_weights):
    state, extra = read_state_dict(kitti_weights)
    assert extra == {} and len(state) == 429
    model = build_psmnet("stackhourglass")
    load_checkpoint(model, kitti_weights)
    key = "feature_extraction.firstconv.0.0.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    with pytest.raises(CheckpointError, match="looks like a 'stackhourglass'.*model is 'basic'"):
        load_checkpoint(build_psmnet("basic"), kitti_weights)


def test_basic_checkpoint_into_stackhourglass(tmp_path):
    path = _save({"state_dict": _prefixed(build_psmnet("basic", max_disparity=16).state_dict())},
                 tmp_path / "basic.tar")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_psmnet("stackhourglass", max_disparity=16), path)
    message = str(info.value)
    assert str(path) in message
    assert "looks like a 'basic' PSMNet, the model is 'stackhourglass'" in message
    assert "missing keys: dres2.conv1.0.0.weight" in message
    assert "unexpected keys: dres2.0.0.weight" in message


def test_changed_shape(tmp_path):
    state = _source().state_dict()
    state["conv.weight"] = torch.zeros(4, 3, 5, 5)
    path = _save({"state_dict": state}, tmp_path / "shape.tar")
    with pytest.raises(CheckpointError, match=r"shape.tar.*1 tensors of a different shape.*"
                       r"conv\.weight \(4, 3, 5, 5\) != \(4, 3, 3, 3\)"):
        load_checkpoint(Tiny(), path)


def test_missing_tensor(tmp_path):
    state = _source().state_dict()
    del state["head.bias"]
    path = _save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing.pth does not match Tiny: 1 missing keys: "
                       "head.bias"):
        load_checkpoint(Tiny(), path)


def test_max_disparity_mismatch(tmp_path):
    path = _save({"state_dict": _source().state_dict(), "max_disparity": 192},
                 tmp_path / "d192.tar")
    with pytest.raises(CheckpointError, match="d192.tar was trained with max_disparity=192 but "
                       "the model has max_disparity=32"):
        load_checkpoint(Tiny(), path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_file(tmp_path, legacy):
    full = _save({"state_dict": _source().state_dict()}, tmp_path / "full.tar", legacy)
    data = full.read_bytes()
    path = tmp_path / "truncated.tar"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError,
                       match="truncated.tar is not a readable PyTorch checkpoint"):
        load_checkpoint(Tiny(), path)


def _png(path):
    ok, encoded = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    path.write_bytes(encoded.tobytes())


@pytest.mark.parametrize("name,write", [
    ("image.png", _png),
    ("notes.txt", lambda p: p.write_text("these are not weights\n")),
    ("random.bin", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096))),
    ("empty.tar", lambda p: p.write_bytes(b"")),
])
def test_not_a_checkpoint(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(CheckpointError, match=f"{name} is not a readable PyTorch checkpoint"):
        load_checkpoint(Tiny(), path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found: .*absent.tar"):
        load_checkpoint(Tiny(), tmp_path / "absent.tar")


def _leave_marker(path: str) -> str:
    """Called by unpickling a _RunsCodeWhenLoaded: proof that loading executed pickled code."""
    Path(path).write_text("pickled code ran")
    return path


class _RunsCodeWhenLoaded:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return _leave_marker, (str(self.marker),)


def test_pickled_module_is_refused_not_executed(tmp_path):
    path = _save(Tiny(), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match=r"module.pt .*Python objects "
                       r"\(test_checkpoint.Tiny\).*save `model.state_dict\(\)`"):
        load_checkpoint(Tiny(), path)
    # A checkpoint whose pickle would run code: refused, and the code never ran.
    marker = tmp_path / "marker.txt"
    path = _save({"state_dict": Tiny().state_dict(), "hook": _RunsCodeWhenLoaded(marker)},
                 tmp_path / "hook.tar")
    with pytest.raises(CheckpointError, match=r"hook.tar .*Python objects"):
        load_checkpoint(Tiny(), path)
    assert not marker.exists()


@pytest.mark.parametrize("obj,message", [
    (torch.zeros(3), "holds a Tensor, not a checkpoint dict"),
    ({"epoch": 3}, "no state dict .*non-tensor entries: epoch"),
    ({}, "no state dict .*found nothing"),
])
def test_wrong_content(tmp_path, obj, message):
    path = _save(obj, tmp_path / "odd.tar")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(Tiny(), path)


def test_failed_load_leaves_model_untouched(tmp_path):
    state = _source().state_dict()
    state["head.weight"] = torch.zeros(1, 4, 2, 2)
    path = _save(state, tmp_path / "bad.tar")
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
