"""What a training run records: a JSON-lines log (always) and TensorBoard summaries (optional).

The JSON log (`<out>/train_log.jsonl`) has one object per line with an "event" ("start",
"step", "epoch", "benchmark") and the time; non-finite numbers are written as null. TensorBoard
needs the `tensorboard` package (an optional dependency); without it the run goes on with a
one-line hint.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from stereo_depth_ros.core.disparity_io import colorize
from stereo_depth_ros.core.json_values import json_safe

TENSORBOARD_HINT = ("TensorBoard summaries are off: the tensorboard package is not installed "
                    "(pip install tensorboard, or pip install 'stereo_depth_ros[train]'); the "
                    "JSON log records the same numbers")


class JsonLog:
    """Append-only JSON-lines log; path None writes nothing (processes other than rank 0)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields) -> None:
        """One line {"event": event, "time": unix seconds, **fields}."""
        if self._file is None:
            return
        line = {"event": event, "time": round(time.time(), 3), **json_safe(fields)}
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def disparity_colours(prediction: np.ndarray, gt: np.ndarray | None,
                      max_disparity: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour maps (H, W, 3) uint8 RGB of prediction and gt (px, NaN invalid -> black) over one
    shared range, 0 .. the largest finite gt (max_disparity when there is none)."""
    finite = gt[np.isfinite(gt)] if gt is not None else np.empty(0)
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else float(max_disparity)
    pred_rgb = colorize(prediction, 0.0, vmax)[..., ::-1].copy()
    gt_rgb = colorize(gt, 0.0, vmax)[..., ::-1].copy() if gt is not None else None
    return pred_rgb, gt_rgb


class TensorBoardLog:
    """Scalars and image summaries through torch.utils.tensorboard.SummaryWriter."""

    def __init__(self, writer):
        self.writer = writer

    def scalars(self, step: int, values: dict) -> None:
        """`tag -> value` at `step`; non-finite values are left out."""
        for tag, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)

    def pair_images(self, step: int, prefix: str, left: np.ndarray, prediction: np.ndarray,
                    gt: np.ndarray | None, max_disparity: float) -> None:
        """`<prefix>/left` (H, W, 3) uint8 RGB, `<prefix>/disparity_pred` and
        `<prefix>/disparity_gt` (colour maps over the same range, see disparity_colours)."""
        pred_rgb, gt_rgb = disparity_colours(prediction, gt, max_disparity)
        self.writer.add_image(f"{prefix}/left", np.ascontiguousarray(left), step,
                              dataformats="HWC")
        self.writer.add_image(f"{prefix}/disparity_pred", pred_rgb, step, dataformats="HWC")
        if gt_rgb is not None:
            self.writer.add_image(f"{prefix}/disparity_gt", gt_rgb, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(log_dir: Path, *, purge_step: int | None = None
                     ) -> tuple[TensorBoardLog | None, str | None]:
    """(a TensorBoardLog writing to log_dir, None), or (None, TENSORBOARD_HINT) when the
    tensorboard package is missing. purge_step: on resume, the first step of the continuation
    (events the interrupted run logged from there on are dropped)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None, TENSORBOARD_HINT
    return TensorBoardLog(SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)), None
