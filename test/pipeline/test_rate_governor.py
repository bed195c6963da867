"""The rate governor's control law with a backend whose cost is controlled: frame time = a fixed
part + a cost per matched pixel, on a fake clock, through the real StereoPipeline (so the scale is
applied as the node applies it). The scale converges, holds, recovers when the load goes away,
and never oscillates with noisy frame times; every frame's geometry matches its scale."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stereo_depth_ros.backends.base import DisparityResult
from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
from stereo_depth_ros.pipeline.rate_governor import RateGovernor, scale_ladder

WIDTH, HEIGHT = 320, 240
RIG = StereoRig(fx=400.0, fy=400.0, cx_left=160.0, cx_right=160.0, cy=120.0, baseline_m=0.12,
                width=WIDTH, height=HEIGHT)
PLANE_M = 4.0                          # the scene: a fronto-parallel plane 4 m away


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0


class CostBackend:
    """Disparity of the 4 m plane at whatever size it is given; each call advances the fake
    clock by fixed_s + per_pixel_s * pixels * noise (noise: uniform factor, seeded)."""

    name = "cost"
    min_disparity, max_disparity, delta_d = 0.0, 64.0, 1.0

    def __init__(self, clock: FakeClock, per_pixel_s: float, fixed_s: float = 0.0,
                 noise: float = 0.0, seed: int = 0) -> None:
        self.clock, self.per_pixel_s, self.fixed_s, self.noise = clock, per_pixel_s, fixed_s, noise
        self._rng = np.random.default_rng(seed)

    def check_input_size(self, width: int, height: int) -> None:
        pass

    def compute(self, left, right) -> DisparityResult:
        height, width = left.shape[:2]
        factor = 1.0 + self._rng.uniform(-self.noise, self.noise) if self.noise else 1.0
        self.clock.now += (self.fixed_s + self.per_pixel_s * width * height) * factor
        disparity = RIG.fx * (width / WIDTH) * RIG.baseline_m / PLANE_M
        return DisparityResult(np.full((height, width), disparity, np.float32))


def run(governor: RateGovernor, backend: CostBackend, frames: int) -> list[float]:
    """Frames through the pipeline at the governor's scale; returns the scale of each frame and
    checks each frame's geometry against its scale."""
    pipeline = StereoPipeline(backend, PipelineOptions(), on_event=lambda text: None)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    scales = []
    for _ in range(frames):
        scale = governor.scale
        pipeline.options = dataclasses.replace(pipeline.options, input_scale=scale)
        started = backend.clock.now
        result = pipeline.process(image, image, RIG)
        governor.observe(scale, backend.clock.now - started)
        scales.append(scale)
        rig = result.rig
        assert result.depth_m.shape == (rig.height, rig.width) == result.points.shape[:2]
        assert (rig.width, rig.height) == (round(WIDTH * scale), round(HEIGHT * scale))
        assert rig.fx == pytest.approx(RIG.fx * rig.width / WIDTH)
        assert rig.cy == pytest.approx(RIG.cy * rig.height / HEIGHT)
        assert np.allclose(result.depth_m, PLANE_M, rtol=1e-5)       # geometry matches scale
    return scales


def reversals(scales: list[float]) -> int:
    """How often the direction of scale changes flips (down then up, or up then down)."""
    steps = [np.sign(b - a) for a, b in zip(scales, scales[1:]) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:]) if a != b)


def test_the_ladder_runs_from_the_input_scale_to_the_minimum_in_pixel_steps():
    ladder = scale_ladder(1.0, 0.25)
    assert ladder[0] == 1.0 and ladder[-1] == 0.25
    ratios = [(b / a) ** 2 for a, b in zip(ladder, ladder[1:-1])]
    assert ratios == pytest.approx([0.75] * len(ratios), abs=1e-5)
    assert (ladder[-2] / ladder[-1]) ** 2 <= 1 / 0.75 + 1e-6
    assert scale_ladder(0.5, 0.8) == (0.5,)                 # minimum above the maximum


def test_it_converges_holds_and_recovers():
    clock = FakeClock()
    # Full scale costs 5 ms + 76800 px * 2.5 us = 197 ms; the budget at 10 Hz is 100 ms.
    backend = CostBackend(clock, per_pixel_s=2.5e-6, fixed_s=0.005)
    governor = RateGovernor(10.0, 1.0, 0.25)
    loaded = run(governor, backend, 60)
    settled = loaded[-1]
    assert settled < 1.0
    first = loaded.index(settled)
    assert first <= 12                                   # down within a few decisions
    assert set(loaded[first:]) == {settled}              # then holds
    assert reversals(loaded) == 0                        # monotonic on the way down
    cost = backend.fixed_s + backend.per_pixel_s * round(WIDTH * settled) * round(
        HEIGHT * settled)
    assert cost <= 0.1                                   # the rate is held ...
    one_up = governor.steps[governor.steps.index(settled) - 1]
    assert backend.fixed_s + backend.per_pixel_s * WIDTH * HEIGHT * one_up ** 2 > 0.08
    # ... at the largest scale that leaves the 20 % headroom hysteresis asks for.
    backend.per_pixel_s /= 4                             # the load goes away
    recovered = run(governor, backend, 80)
    assert recovered[-1] == 1.0 and set(recovered[-20:]) == {1.0}
    assert reversals(loaded + recovered) == 1            # one turn: down, then back up
    trajectory = loaded + recovered
    assert governor.changes == sum(a != b for a, b in zip(trajectory, trajectory[1:]))


@pytest.mark.parametrize("noise", [0.10, 0.25])
def test_noisy_frame_times_at_a_step_boundary_do_not_oscillate(noise):
    """The step above the settled one costs 102 % of the budget, +-10 % or +-25 % noise per
    frame: with frame times smoothed (a single frame can be 24 % under) and 20 % headroom asked
    for before a step up, the scale never flips."""
    clock = FakeClock()
    ladder = scale_ladder(1.0, 0.25)
    above = ladder[2]                                    # 0.75: the step that just does not fit
    per_pixel = 1.02 * 0.1 / (round(WIDTH * above) * round(HEIGHT * above))
    backend = CostBackend(clock, per_pixel_s=per_pixel, noise=noise, seed=7)
    governor = RateGovernor(10.0, 1.0, 0.25)
    scales = run(governor, backend, 300)
    assert scales[-1] == ladder[3]
    assert reversals(scales) == 0
    assert governor.changes <= 3


def test_off_keeps_the_input_scale():
    clock = FakeClock()
    governor = RateGovernor(0.0, 0.5, 0.25)
    assert run(governor, CostBackend(clock, per_pixel_s=1e-3), 10) == [0.5] * 10
    assert governor.state().budget_s is None and governor.changes == 0


def test_the_first_frame_after_a_change_is_not_counted():
    governor = RateGovernor(10.0, 1.0, 0.25, settle_frames=2)
    for _ in range(2):
        governor.observe(1.0, 0.3)
    lowered = governor.scale
    assert lowered < 1.0
    governor.observe(lowered, 5.0)                       # the new size's first, slow frame
    assert governor.scale == lowered and governor.state().frame_time_s is None
    governor.observe(lowered, 0.05)
    assert governor.state().frame_time_s == pytest.approx(0.05)
    assert governor.observe(1.0, 9.0) == lowered         # a frame from before the change
