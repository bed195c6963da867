"""Rate governor: the working input scale that holds a target frame rate; no ROS, no clock.

The matcher's cost grows with the pixels it sees, about the square of the scale. The governor is
told how long each frame took at the scale it ran at, and answers the scale for the next frame:

- scales are discrete: a ladder from `max_scale` (the node's `input_scale`) down to `min_scale`,
  each step `STEP_PIXEL_RATIO` (0.75) of the pixels of the one above, the last step `min_scale`;
- the frame time is smoothed (exponential average, `smoothing`), and only frames run at the
  current step count; after each change the first frame (new plans, new buffers) is discarded and
  `settle_frames` frames are averaged afresh before the next decision;
- down: when the smoothed time exceeds the budget (1 / target_rate_hz), to the largest step whose
  predicted time (time * (scale' / scale)^2) fits in `down_fraction` of the budget;
- up: one step, only when that step's predicted time fits in `up_fraction` of the budget (0.8),
  so a step up never lands over budget and the next frames do not step straight back down
  (hysteresis: between 0.8 and 1.0 of the budget the scale holds).

Because a fixed per-frame cost does not shrink with the scale, the s^2 prediction underestimates a
step down (a second step may follow) and overestimates a step up (conservative): the scale settles
and stays, and comes back up once the load goes away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEP_PIXEL_RATIO = 0.75


def scale_ladder(max_scale: float, min_scale: float,
                 pixel_ratio: float = STEP_PIXEL_RATIO) -> tuple[float, ...]:
    """Scales from max_scale down to min_scale (inclusive), each step pixel_ratio of the pixels
    of the one above (linear factor sqrt(pixel_ratio)); min_scale above max_scale: just max."""
    if not 0.0 < max_scale <= 1.0:
        raise ValueError(f"max_scale={max_scale} must be in (0, 1]")
    if not 0.0 < pixel_ratio < 1.0:
        raise ValueError(f"pixel_ratio={pixel_ratio} must be in (0, 1)")
    min_scale = min(min_scale, max_scale)
    factor = math.sqrt(pixel_ratio)
    steps = [max_scale]
    while steps[-1] * factor > min_scale * (1.0 + 1e-9):
        steps.append(round(steps[-1] * factor, 6))
    if steps[-1] > min_scale:
        steps.append(min_scale)
    return tuple(steps)


@dataclass(frozen=True)
class GovernorState:
    """What the governor reports: scale in use, smoothed frame time (s, None before any), the
    budget (s, None when off) and how many times the scale changed."""

    scale: float
    frame_time_s: float | None
    budget_s: float | None
    changes: int


class RateGovernor:
    """Chooses the input scale of each frame (see the module docstring).

    target_rate_hz: frames per second to hold; 0 = off (the scale stays max_scale).
    max_scale, min_scale: the range of scales, (0, 1].
    """

    def __init__(self, target_rate_hz: float, max_scale: float, min_scale: float, *,
                 smoothing: float = 0.3, settle_frames: int = 3, up_fraction: float = 0.8,
                 down_fraction: float = 0.9) -> None:
        if target_rate_hz < 0:
            raise ValueError(f"target_rate_hz={target_rate_hz} must be >= 0 (0 = off)")
        if not 0.0 < up_fraction < down_fraction <= 1.0:
            raise ValueError("need 0 < up_fraction < down_fraction <= 1 (hysteresis band), got "
                             f"{up_fraction} and {down_fraction}")
        self.target_rate_hz = float(target_rate_hz)
        self.steps = scale_ladder(max_scale, min_scale)
        self.smoothing = smoothing
        self.settle_frames = settle_frames
        self.up_fraction = up_fraction
        self.down_fraction = down_fraction
        self._index = 0
        self._average: float | None = None
        self._frames = 0           # frames counted at the current step (after the discarded one)
        self._discard = False      # the next frame at this step is the first after a change
        self.changes = 0

    @property
    def enabled(self) -> bool:
        return self.target_rate_hz > 0

    @property
    def scale(self) -> float:
        return self.steps[self._index]

    @property
    def budget_s(self) -> float | None:
        return 1.0 / self.target_rate_hz if self.enabled else None

    def state(self) -> GovernorState:
        return GovernorState(self.scale, self._average, self.budget_s, self.changes)

    def observe(self, scale: float, frame_time_s: float) -> float:
        """A frame run at `scale` took frame_time_s; returns the scale for the next frame."""
        if not self.enabled or not math.isclose(scale, self.scale, rel_tol=1e-6):
            return self.scale                      # off, or a frame from before a change
        if self._discard:
            self._discard = False
            return self.scale
        if self._average is None:
            self._average = float(frame_time_s)
        else:
            self._average += self.smoothing * (float(frame_time_s) - self._average)
        self._frames += 1
        if self._frames >= self.settle_frames:
            self._decide()
        return self.scale

    def _predicted(self, index: int) -> float:
        return self._average * (self.steps[index] / self.scale) ** 2

    def _decide(self) -> None:
        budget = self.budget_s
        index = self._index
        if self._average > budget:
            while (index + 1 < len(self.steps)
                   and self._predicted(index) > self.down_fraction * budget):
                index += 1
        elif index > 0 and self._predicted(index - 1) <= self.up_fraction * budget:
            index -= 1
        if index != self._index:
            self._index = index
            self._average = None
            self._frames = 0
            self._discard = True
            self.changes += 1
