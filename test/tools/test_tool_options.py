"""Console tool options, each proven by its effect on what the tool produces.

stereo_depth_replay --list/--rate/--loop/--clock-hz (the player driven by a fake clock, so the
schedule is checked exactly and never by wall-clock timing), stereo_depth_eval
--limit/--max-gt-disparity, stereo_depth_infer --engine/--precision/--model and
stereo_depth_train --init (stereo_depth_kitti2bag's: test_kitti2bag_options.py). Expected values
are written out by hand or derived from the fixture's numbers, not from the code under test.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core.disparity_io import write_kitti_png
from stereo_depth_ros.tools import evaluate

NS = 1_000_000_000


# =================================================================== stereo_depth_replay

# bag time (s after the first message) and topic of every message in the test bag
BAG_MESSAGES = [(0.0, "/a"), (0.5, "/b"), (1.0, "/a"), (2.0, "/a"), (2.5, "/b"), (3.0, "/a")]
BAG_START_NS = 100 * NS


@pytest.fixture(scope="module")
def string_bag(tmp_path_factory) -> Path:
    """A ROS 2 bag: /a (std_msgs/String) x4 and /b x2 at the times of BAG_MESSAGES."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    path = tmp_path_factory.mktemp("replay") / "bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connections = {}
        for k, (offset_s, topic) in enumerate(BAG_MESSAGES):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, "std_msgs/msg/String",
                                                           typestore=typestore)
            message = typestore.types["std_msgs/msg/String"](data=f"message {k}")
            writer.write(connections[topic], BAG_START_NS + int(offset_s * NS),
                         bytes(typestore.serialize_cdr(message, "std_msgs/msg/String")))
    return path


def test_replay_list_gives_each_topic_with_its_message_count(string_bag, caplog):
    pytest.importorskip("rclpy")
    from stereo_depth_ros.tools import replay

    caplog.set_level(logging.INFO, logger="stereo_depth_ros.tools.replay")
    assert replay.main([str(string_bag), "--list"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "stereo_depth_ros.tools.replay"]
    assert lines == ["/a: 4 messages", "/b: 2 messages"]


def texts(sent) -> list[str]:
    """The std_msgs/String data of recorded (wall time, CDR bytes) publications."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    return [typestore.deserialize_cdr(cdr, "std_msgs/msg/String").data for _, cdr in sent]


class FakeClock:
    """time.monotonic()/time.time() of the player; advanced only by the fake executor."""

    def __init__(self, start: float = 1024.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class _Recorder:
    """Stands in for a publisher: records (fake wall time, payload)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, object]] = []

    def publish(self, message) -> None:
        if hasattr(message, "clock"):                       # rosgraph_msgs/Clock: keep the ns
            message = message.clock.sec * NS + message.clock.nanosec
        self.sent.append((self.clock.now, message))


@pytest.fixture
def fake_player(monkeypatch):
    """Run stereo_depth_replay's main() with a Player whose clock, executor and publishers are
    fakes: spinning advances the fake clock by the timeout asked for, so the schedule is exact.
    Returns (run(argv, passes=None) -> (exit code, players), clock)."""
    pytest.importorskip("rclpy")
    from stereo_depth_ros.ros import bag_player
    from stereo_depth_ros.tools import replay

    clock = FakeClock()
    monkeypatch.setattr(bag_player, "time", clock)
    players = []

    class RecordingPlayer(bag_player.Player):
        stop_after_passes: int | None = None

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.passes = 0
            self.sent = _Recorder(clock)
            self.publishers = {topic: self.sent for topic in self.publishers}
            self.clock_sent = _Recorder(clock)
            if self.clock_pub is not None:
                self.clock_pub = self.clock_sent
            self.executor.spin_once = self._fake_spin_once
            players.append(self)

        @staticmethod
        def _fake_spin_once(timeout_sec: float | None = None) -> None:
            clock.now += max(0.0, timeout_sec or 0.0)

        def play_once(self) -> None:
            super().play_once()
            self.passes += 1
            if self.stop_after_passes is not None and self.passes >= self.stop_after_passes:
                raise replay.Interrupted()            # how SIGTERM ends a --loop replay

    monkeypatch.setattr(replay, "Player", RecordingPlayer)

    def run(argv: list[str], passes: int | None = None):
        RecordingPlayer.stop_after_passes = passes
        code = replay.main(argv + ["--wait-timeout", "0"])
        return code, players

    return run, clock


@pytest.mark.parametrize("rate, expected_offsets_s", [
    ("1", [0.0, 0.5, 1.0, 2.0, 2.5, 3.0]),           # the bag's own spacing
    ("2", [0.0, 0.25, 0.5, 1.0, 1.25, 1.5]),         # twice as fast: half the spacing
    ("0.5", [0.0, 1.0, 2.0, 4.0, 5.0, 6.0]),
    ("0", [0.0] * 6),                                # as fast as possible: no waiting
])
def test_replay_rate_scales_the_publishing_schedule(string_bag, fake_player, rate,
                                                    expected_offsets_s):
    run, _ = fake_player
    code, (player,) = run([str(string_bag), "--rate", rate])
    assert code == 0
    sent = player.sent.sent
    assert texts(sent) == [f"message {k}" for k in range(6)]
    wall0 = sent[0][0]
    offsets = [wall - wall0 for wall, _ in sent]
    assert offsets == pytest.approx(expected_offsets_s, abs=1e-9)
    assert player.clock_sent.sent == []                   # no --clock: no /clock


@pytest.mark.parametrize("rate, hz", [(1.0, 8), (1.0, 4), (2.0, 8)])
def test_replay_clock_hz_sets_the_clock_rate_between_messages(string_bag, fake_player, rate,
                                                              hz):
    run, _ = fake_player
    code, (player,) = run([str(string_bag), "--rate", str(rate), "--clock",
                           "--clock-hz", str(hz)])
    assert code == 0
    ticks = player.clock_sent.sent
    wall0 = player.sent.sent[0][0]
    span_wall_s = 3.0 / rate                              # the bag lasts 3 s of bag time
    # about `hz` messages per second of playing, the first and last included
    assert span_wall_s * hz <= len(ticks) <= span_wall_s * hz + 2, len(ticks)
    walls = [wall for wall, _ in ticks]
    assert max(np.diff(walls)) <= 1.0 / hz + 1e-9           # never a longer gap than 1/hz
    # every /clock says the bag time of its moment: start + (wall - wall0) * rate
    for wall, clock_ns in ticks:
        assert clock_ns == pytest.approx(BAG_START_NS + (wall - wall0) * rate * NS, abs=1)
    # ... and each message goes out with /clock at its own bag time
    values = {clock_ns for _, clock_ns in ticks}
    assert {BAG_START_NS + int(offset * NS) for offset, _ in BAG_MESSAGES} <= values


def test_replay_loop_plays_the_bag_again(string_bag, fake_player, tmp_path):
    run, _ = fake_player
    stats = tmp_path / "stats.json"
    code, (player,) = run([str(string_bag), "--rate", "0", "--loop", "--stats-json",
                           str(stats)], passes=3)
    assert code == 130                                   # ended by the (simulated) SIGTERM
    assert player.passes == 3
    assert texts(player.sent.sent) == [f"message {k}" for k in range(6)] * 3
    assert json.loads(stats.read_text())["published"] == {"/a": 12, "/b": 6}
    # without --loop: one pass, then a normal exit
    code, players = run([str(string_bag), "--rate", "0", "--stats-json", str(stats)],
                        passes=None)
    assert code == 0 and players[-1].passes == 1
    assert json.loads(stats.read_text())["published"] == {"/a": 4, "/b": 2}


# =================================================================== stereo_depth_eval

def _kitti_predictions(root: Path, frames: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """KITTI 2015 split under root/training with (gt, prediction) per frame (exact in
    KITTI's 1/256 px PNG steps); returns the predictions folder."""
    split, predictions = root / "training", root / "pred"
    for name in ("image_2", "image_3", "disp_occ_0"):
        (split / name).mkdir(parents=True, exist_ok=True)
    predictions.mkdir(parents=True, exist_ok=True)
    for index, (gt, prediction) in enumerate(frames):
        stem = f"{index:06d}_10"
        image = np.full(gt.shape + (3,), 90 + index, np.uint8)
        for side in ("image_2", "image_3"):
            assert cv2.imwrite(str(split / side / f"{stem}.png"), image)
        write_kitti_png(split / "disp_occ_0" / f"{stem}.png", gt)
        write_kitti_png(predictions / f"{stem}.png", prediction)
    return predictions


def _evaluate(tmp_path: Path, predictions: Path, *options: str) -> dict:
    out = tmp_path / "out"
    assert evaluate.main(["--dataset", "kitti2015", "--root", str(tmp_path / "kitti"),
                          "--predictions", str(predictions), "--out", str(out),
                          "--metrics", "epe,bad_3,n_valid", "--quiet", *options]) == 0
    with (out / "per_image.csv").open() as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    return {"summary": json.loads((out / "summary.json").read_text()), "names": names}


def test_eval_limit_scores_exactly_the_first_n_pairs(tmp_path):
    gt = np.full((4, 8), 20.0)
    # frame k is off by (k + 1) / 4 px everywhere: epe 0.25, 0.5, 0.75
    frames = [(gt, gt + (k + 1) * 0.25) for k in range(3)]
    predictions = _kitti_predictions(tmp_path / "kitti", frames)

    everything = _evaluate(tmp_path, predictions)
    assert everything["summary"]["pairs"] == 3
    assert everything["summary"]["metrics"]["all"]["pooled"]["epe"] == pytest.approx(0.5)

    limited = _evaluate(tmp_path, predictions, "--limit", "2")
    assert limited["summary"]["pairs"] == 2
    assert limited["names"] == ["000000_10", "000001_10"]
    pooled = limited["summary"]["metrics"]["all"]["pooled"]
    assert pooled["epe"] == pytest.approx((0.25 + 0.5) / 2)
    assert pooled["n_valid"] == 2 * 32


def test_eval_max_gt_disparity_leaves_out_large_ground_truth(tmp_path):
    gt = np.full((4, 8), 10.0)
    prediction = np.full((4, 8), 10.5)                      # 26 px off by 0.5
    gt[0, :2], prediction[0, :2] = 50.0, 52.0               # 2 px at the limit, off by 2
    gt[3, 4:], prediction[3, 4:] = 90.0, 60.0               # 4 far px, off by 30
    predictions = _kitti_predictions(tmp_path / "kitti", [(gt, prediction)])

    def pooled(*options):
        return _evaluate(tmp_path, predictions, *options)["summary"]["metrics"]["all"]["pooled"]

    full = pooled()
    assert full["n_valid"] == 32
    assert full["epe"] == pytest.approx((26 * 0.5 + 2 * 2 + 4 * 30) / 32)     # 4.28125
    assert full["bad_3"] == pytest.approx(100 * 4 / 32)
    below_50 = pooled("--max-gt-disparity", "50")           # gt >= 50 left out
    assert below_50["n_valid"] == 26
    assert below_50["epe"] == pytest.approx(0.5) and below_50["bad_3"] == 0.0
    below_60 = pooled("--max-gt-disparity", "60")           # the 50 px count again
    assert below_60["n_valid"] == 28
    assert below_60["epe"] == pytest.approx((26 * 0.5 + 2 * 2) / 28)
    assert below_60["bad_3"] == 0.0


# =================================================================== stereo_depth_infer

@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory):
    """Random-weight checkpoints of both PSMNet variants (official layout) and a small pair."""
    torch = pytest.importorskip("torch")
    from stereo_depth_ros.models import build_psmnet

    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for variant in ("basic", "stackhourglass"):
        torch.manual_seed(3)
        model = build_psmnet(variant, max_disparity=16)
        paths[variant] = folder / f"{variant}.tar"
        torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
                   paths[variant])
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    for side in ("left", "right"):
        assert cv2.imwrite(str(folder / f"{side}.png"), image)
    return folder, paths


def _infer(folder: Path, *options: str, output: Path | None = None) -> int:
    from stereo_depth_ros.tools import infer

    output = output or folder / "out.npy"
    return infer.main(["--left", str(folder / "left.png"), "--right", str(folder / "right.png"),
                       "--output", str(output), "--max-disparity", "16", "--device", "cpu",
                       *options])


def test_infer_model_must_match_the_checkpoint(random_checkpoints, capsys):
    folder, paths = random_checkpoints
    assert _infer(folder, "--model", "basic", "--weights", str(paths["stackhourglass"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("stereo_depth_infer: error:")
    assert "does not match PSMNetBasic (the file looks like a 'stackhourglass' PSMNet, " \
           "the model is 'basic')" in err
    # the default model is stackhourglass: a basic checkpoint is refused the other way round
    assert _infer(folder, "--weights", str(paths["basic"])) == 1
    assert "(the file looks like a 'basic' PSMNet, the model is 'stackhourglass')" in \
        capsys.readouterr().err


def test_infer_engine_and_model_reach_the_backend(random_checkpoints, capsys, tmp_path):
    folder, paths = random_checkpoints
    output = tmp_path / "disparity.npy"
    assert _infer(folder, "--model", "basic", "--weights", str(paths["basic"]),
                  "--engine", "fast", "--no-occlusion-filter", output=output) == 0
    out = capsys.readouterr().out
    # without --engine the CPU runs "exact": the describe line names the engine that ran
    assert "stereo_depth_infer: psmnet engine=fast on cpu: fused CPU engine, mode fast" in out
    disparity = np.load(output)
    assert disparity.shape == (64, 128) and np.isfinite(disparity).all()
    assert 0.0 <= disparity.min() and disparity.max() <= 16.0


@pytest.mark.parametrize("options, message", [
    (["--engine", "exact", "--precision", "bf16"],
     "engine='exact' is float32: use precision='fp32' with it (got 'bf16')"),
    (["--engine", "reference", "--precision", "bf16"],
     "precision='bf16' with engine='reference' on the CPU"),
    (["--precision", "fp16"], "precision='fp16' needs CUDA"),
])
def test_infer_precision_reaches_the_engine_choice(random_checkpoints, capsys, options,
                                                   message):
    folder, paths = random_checkpoints
    assert _infer(folder, "--model", "basic", "--weights", str(paths["basic"]), *options) == 1
    assert message in capsys.readouterr().err


# =================================================================== stereo_depth_train

def test_train_init_starts_from_the_given_weights(tmp_path):
    """No valid ground truth: every batch is skipped (0 optimiser steps), so the saved weights
    are exactly the ones training started from: the --init checkpoint's, or the seeded random
    initialisation without it."""
    torch = pytest.importorskip("torch")
    from stereo_depth_ros.models import build_psmnet
    from stereo_depth_ros.tools import train
    from stereo_depth_ros.training import runner

    split = tmp_path / "kitti" / "training"
    rng = np.random.default_rng(4)
    for name in ("image_2", "image_3", "disp_occ_0"):
        (split / name).mkdir(parents=True)
    for index in range(2):
        stem = f"{index:06d}_10"
        for side in ("image_2", "image_3"):
            cv2.imwrite(str(split / side / f"{stem}.png"),
                        rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        write_kitti_png(split / "disp_occ_0" / f"{stem}.png", np.full((256, 256), np.nan))
    torch.manual_seed(1234)
    initial = build_psmnet("basic", max_disparity=16)
    init = tmp_path / "init.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in initial.state_dict().items()}}, init)

    def train_and_load(*options: str) -> dict:
        out = tmp_path / f"run{len(options)}"
        result = runner.run(train.build_parser().parse_args([
            "--dataset", "kitti2015", "--root", str(tmp_path / "kitti"), "--crop", "256x256",
            "--model", "basic", "--max-disparity", "16", "--epochs", "1", "--device", "cpu",
            "--out", str(out), "--quiet", *options]))
        assert [e["iterations"] for e in result["epochs"]] == [0]
        saved = torch.load(out / "checkpoint_1.tar", map_location="cpu", weights_only=True)
        return {k[len("module."):]: v for k, v in saved["state_dict"].items()}

    started = train_and_load("--init", str(init))
    expected = initial.state_dict()
    assert set(started) == set(expected)
    for key, value in expected.items():
        assert torch.equal(started[key], value), key
    fresh = train_and_load()
    convolutions = [k for k, v in expected.items() if v.dim() > 1]
    assert len(convolutions) > 50
    assert all(not torch.equal(fresh[k], expected[k]) for k in convolutions)
