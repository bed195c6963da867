"""Loading PSMNet checkpoints, and the preprocessing the official weights expect.

Accepted files: anything `torch.save` wrote (the legacy pre-1.6 pickle format of the released
weights and the zip format), holding either `{'state_dict': {...}, ...}` (the official training
scripts) or a bare state dict, with or without the `module.` prefix that `nn.DataParallel` adds,
with or without BatchNorm `num_batches_tracked` entries (torch <= 0.4.0 did not write them).

Files are read with `torch.load(..., weights_only=True)`, which only unpickles tensors and plain
containers. On torch 2.13 this also reads the legacy-format released KITTI 2015 weights, so
there is no unsafe fallback; a file that would need one is rejected with a CheckpointError.

max_disparity cannot be checked against the weights: no parameter's shape depends on the disparity
range (the 3-D convolutions slide over it and the regression levels are not stored). A checkpoint
dict with a `max_disparity`, `maxdisp` or `max_disp` entry is checked against the model.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

LOG = logging.getLogger(__name__)

_PREFIX = "module."
_MAX_DISPARITY_KEYS = ("max_disparity", "maxdisp", "max_disp")
_SHOW = 5
# A key only one variant has, to name the architecture a checkpoint was saved from.
_VARIANT_MARKERS = {"classif1.0.0.weight": "stackhourglass", "classify.0.0.weight": "basic"}


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class PsmnetPreprocessing:
    """What the official PSMNet weights expect as input (Test_img.py / submission.py).

    The network input is ((rgb / scale) - mean) / std per channel, then zero-padded on the top and
    right to a multiple of `pad_multiple` (and at least `min_size` px, which the SPP needs),
    with the prediction cropped back.
    """

    channel_order: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pad_multiple: int = 16
    pad_sides: str = "top,right"
    pad_value: float = 0.0
    min_size: int = 256
    max_disparity: int = 192


OFFICIAL_PREPROCESSING = PsmnetPreprocessing()
"""Preprocessing of the released PSMNet weights (KITTI 2012/2015, SceneFlow)."""


def _short(items, limit: int = _SHOW) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint into (state_dict without `module.` prefixes, other top-level entries).

    Raises CheckpointError for a missing, truncated or non-checkpoint file, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe:
            # weights_only refused to import a class: the file pickles objects, not just tensors.
            reason = (f"it holds Python objects ({unsafe.group(1)}), not only tensors; "
                      "save `model.state_dict()` instead")
        else:
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
            reason = ("not a torch.save file or corrupted"
                      + (f" ({detail.group(1).strip()})" if detail else f": {text[:200]}"))
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason}") from exc
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError,
            AttributeError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or "
                              f"another kind of file): {type(exc).__name__}: {exc}") from exc

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict "
                              "or state dict")
    extra: dict = {}
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        extra = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not obj or not_tensors:
        found = "nothing" if not obj else "non-tensor entries: " + _short(not_tensors)
        raise CheckpointError(f"{path} has no state dict (expected tensors, found {found})")
    state = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in obj.items()}
    return state, extra


def _guess_variant(keys) -> str | None:
    for marker, variant in _VARIANT_MARKERS.items():
        if marker in keys:
            return variant
    return None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint into `model` strictly (every key present, no extra key, equal shapes).

    model: a PSMNet from `build_psmnet` (any nn.Module works; `max_disparity` is checked when the
        model has that attribute and the file records one).
    Returns the checkpoint's other top-level entries (e.g. {'epoch': 10, 'train_loss': ...}).
    Raises CheckpointError naming the file and the first mismatching keys/shapes.
    """
    path = Path(path)
    state, extra = read_state_dict(path)
    expected = model.state_dict()

    # torch <= 0.4.0 wrote no num_batches_tracked; keep the model's own counters for those.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        model_name = type(model).__name__
        found = _guess_variant(state)
        ours = getattr(model, "variant", None)
        hint = ""
        if found and ours and found != ours:
            hint = f" (the file looks like a '{found}' PSMNet, the model is '{ours}')"
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_short(unexpected)}")
        raise CheckpointError(f"{path} does not match {model_name}{hint}: " + "; ".join(parts))

    wrong_shape = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                   for k, v in expected.items() if state[k].shape != v.shape]
    if wrong_shape:
        raise CheckpointError(f"{path} does not match {type(model).__name__}: "
                              f"{len(wrong_shape)} tensors of a different shape (file != model): "
                              f"{_short(wrong_shape)}")

    model_max = getattr(model, "max_disparity", None)
    for key in _MAX_DISPARITY_KEYS:
        if key in extra and model_max is not None:
            try:
                recorded = int(extra[key])
            except (TypeError, ValueError):
                raise CheckpointError(f"{path}: entry {key!r} = {extra[key]!r} is not an "
                                      "integer") from None
            if recorded != model_max:
                raise CheckpointError(f"{path} was trained with {key}={recorded} but the model "
                                      f"has max_disparity={model_max}")

    model.load_state_dict(state, strict=True)
    LOG.debug("loaded %d tensors from %s", len(state), path)
    return extra
