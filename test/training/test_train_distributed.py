"""stereo_depth_train data-parallel: two Gloo processes on the CPU under torchrun.

Most runs train `helpers.training.TinyStereo` (BatchNorm, PSMNet's cost volume and float32
soft-argmin, milliseconds per pair) through stereo_depth_train's own code
(`training.runner.run(build_model=...)`): 6 synthetic 256x544 scenes, 4 for training (256x512
crops) and 2 for validation, global batch 2 (one pair per process), 2 epochs of 2 steps: once
straight, once resumed from the straight run's epoch-1 checkpoint. A third torchrun start runs
the real console tool (`-m stereo_depth_ros.tools.train`) on PSMNet basic for one step, whose
checkpoint must load into PSMNet in both layouts.

How close: everything runs on one thread per process (torchrun's OMP_NUM_THREADS=1; the
in-process runs and the hand-written reference likewise), so both sides execute the same kernels
on the same one-pair BatchNorm groups, and the 2-process gradient average is exact (each loss
is scaled by 2 and the all-reduced sum halved: powers of two). The weights and Adam moments of
the two ranks, of one process with the same global batch (`--accumulate 2`: the same pairs in
the same BatchNorm groups) and of the reference are then bit-identical; the tests allow
|difference| <= 1e-6 (measured: 0). With another thread count they would differ by rounding
and Adam, which divides each gradient entry by its own magnitude, turns rounding noise in
near-zero entries into steps of up to ~lr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.training import SEED, TINY, TinyStereo, build_tiny_stereo

from stereo_depth_ros.data import make_dataset
from stereo_depth_ros.models import build_psmnet, load_checkpoint
from stereo_depth_ros.tools import train
from stereo_depth_ros.training import runner
from stereo_depth_ros.training.data import RandomCropDataset
from stereo_depth_ros.training.distributed import state_fingerprint
from stereo_depth_ros.training.loop import validate
from stereo_depth_ros.training.loss import loss_mask, psmnet_loss

TORCHRUN_TIMEOUT_S = 400
TOLERANCE = 1e-6


def torchrun(args: list[str], cwd, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=nproc args` (a free rendezvous port, one thread
    per process); the whole process group is killed on a timeout or an error of the test."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT_S} s:\n{stderr[-4000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@contextlib.contextmanager
def one_thread():
    """Run the block on one intra-op thread, as each torchrun worker does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_tiny_here(*options: str) -> dict:
    """stereo_depth_train on TinyStereo in this process (no torchrun), one thread."""
    with one_thread():
        return runner.run(train.build_parser().parse_args(list(options)),
                          build_model=build_tiny_stereo)


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _max_difference(mine: dict, theirs: dict, keys) -> float:
    return max(float((mine[key].double() - theirs[key].double()).abs().max()) for key in keys)


def _parameter_names() -> list[str]:
    return [name for name, _ in TinyStereo().named_parameters()]


def _assert_same_training_state(mine: dict, theirs: dict) -> None:
    """Checkpoints: parameters and Adam moments within TOLERANCE. (BatchNorm running
    statistics differ by design: rank 0 keeps its own pairs', one process sees both.)"""
    keys = ["module." + name for name in _parameter_names()]
    assert _max_difference(mine["state_dict"], theirs["state_dict"], keys) <= TOLERANCE
    for index, state in theirs["optimizer"]["state"].items():
        moments = ("exp_avg", "exp_avg_sq")
        assert _max_difference(mine["optimizer"]["state"][index], state, moments) <= TOLERANCE


def _reference_training(epochs: int):
    """What 2 processes with global batch 2 must compute, written out by hand.

    DistributedSampler's contract: epoch e permutes the training pairs with
    torch.randperm(n, Generator().manual_seed(seed + e)); step k trains on positions 2k (rank 0)
    and 2k + 1 (rank 1), each alone in its BatchNorm; crop windows come from (seed, epoch,
    sample). The step's loss is the mean over every masked pixel of both pairs: each pair's
    smooth-L1 mean weighted by its share of the masked pixels. Adam as the recipe has it.
    Returns (model, optimizer, per-step losses).
    """
    args = train.build_parser().parse_args(TINY)
    dataset = make_dataset("synthetic", count=6, seed=args.scene_seed, height=256, width=544,
                           max_disparity=16.0)
    names = dataset.names()
    training = sorted(range(len(dataset)), key=names.__getitem__)[:4]
    crops = RandomCropDataset(dataset, (256, 512), indices=training, seed=SEED)
    torch.manual_seed(SEED)
    model = TinyStereo(max_disparity=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    losses = []
    with one_thread():
        for epoch in range(1, epochs + 1):
            crops.set_epoch(epoch)
            order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(
                SEED + epoch)).tolist()
            for first in range(0, len(order), 2):
                pairs = [crops[i] for i in order[first:first + 2]]
                masks = [loss_mask(gt[None], "both", 16) for _, _, gt in pairs]
                total = sum(int(mask.sum()) for mask in masks)
                optimizer.zero_grad()
                step_loss = 0.0
                for (left, right, gt), mask in zip(pairs, masks):
                    share = int(mask.sum()) / total
                    loss = psmnet_loss(model(left[None], right[None]), gt[None], mask)
                    (loss * share).backward()
                    step_loss += float(loss.detach()) * share
                optimizer.step()
                losses.append(step_loss)
    return model, optimizer, losses


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, repo_root):
    """Folders of the 2-process runs ('ddp': 2 epochs straight; 'resumed': from ddp's epoch-1
    checkpoint to epoch 2) and of the 1-process run with the same
    global batch ('single'), plus that run's runner.run result."""
    root = tmp_path_factory.mktemp("tiny")
    ddp, resumed, single = root / "ddp", root / "resumed", root / "single"
    helper = str(repo_root / "test" / "helpers" / "training.py")
    for out, options in ((ddp, ()), (resumed, ("--resume", str(ddp / "checkpoint_1.tar")))):
        result = torchrun([helper, "--rank-weights", str(out), *TINY, "--epochs", "2",
                           "--out", str(out), *options], cwd=repo_root)
        assert result.returncode == 0, result.stderr[-4000:]
        assert "2 process(es) (gloo) x 1 micro-batch(es): global batch 2" in result.stderr
    single_result = train_tiny_here(*TINY, "--epochs", "2", "--accumulate", "2", "--out",
                                    str(single), "--no-tensorboard")
    return {"ddp": ddp, "resumed": resumed, "single": single, "single_result": single_result}


@pytest.mark.slow
def test_two_gloo_processes_end_identical_and_equal_one_process(tiny):
    ddp = tiny["ddp"]
    ranks = [_load(ddp / f"rank{rank}.pt") for rank in (0, 1)]
    assert set(ranks[0]) == set(ranks[1])
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    checkpoint = _load(ddp / "checkpoint_2.tar")
    assert all(torch.equal(checkpoint["state_dict"]["module." + key], value)
               for key, value in ranks[0].items())
    log = _events(ddp / "train_log.jsonl")
    epochs = [e for e in log if e["event"] == "epoch"]
    assert [(e["epoch"], e["step"]) for e in epochs] == [(1, 2), (2, 4)]
    model = TinyStereo()
    model.load_state_dict(ranks[0])
    assert epochs[-1]["replicas"] == [state_fingerprint(model)] * 2

    # One process with the same global batch: the same weights, Adam moments and losses.
    for name in ("checkpoint_1.tar", "checkpoint_2.tar"):
        _assert_same_training_state(_load(ddp / name), _load(tiny["single"] / name))
    ddp_losses = [e["loss"] for e in log if e["event"] == "step"]
    single_losses = [loss for e in tiny["single_result"]["epochs"] for loss in e["losses"]]
    np.testing.assert_allclose(ddp_losses, single_losses, rtol=1e-6)

    # ... and what the hand-written reference computes (per-epoch shuffling, the split).
    reference, optimizer, losses = _reference_training(epochs=2)
    expected = {"state_dict": {"module." + k: v for k, v in reference.state_dict().items()},
                "optimizer": optimizer.state_dict()}
    _assert_same_training_state(checkpoint, expected)
    np.testing.assert_allclose(ddp_losses, losses, rtol=1e-6)
    torch.manual_seed(SEED)
    start = TinyStereo().state_dict()
    assert _max_difference(reference.state_dict(), start, _parameter_names()) > 1e-4  # trained


@pytest.mark.slow
def test_validation_metrics_pool_both_processes(tiny):
    """Each process validates one of the 2 held-out scenes; the metrics are those of both,
    exactly what one process computes on both with the same weights."""
    ddp = tiny["ddp"]
    val = [e["val"] for e in _events(ddp / "train_log.jsonl") if e["event"] == "epoch"]
    assert val[0] is None and set(val[1]) == {"epe", "bad_1", "bad_3", "d1_all"}
    model = TinyStereo()
    load_checkpoint(model, ddp / "checkpoint_2.tar")
    args = train.build_parser().parse_args(TINY)
    dataset = make_dataset("synthetic", count=6, seed=args.scene_seed, height=256, width=544,
                           max_disparity=16.0)
    names = dataset.names()
    held_out = sorted(range(len(dataset)), key=names.__getitem__)[4:]
    with one_thread():
        both = validate(model, dataset, device=torch.device("cpu"), indices=held_out)
        first = validate(model, dataset, device=torch.device("cpu"), indices=held_out[:1])
    assert val[1] == pytest.approx(both, rel=1e-6)
    assert first["epe"] != pytest.approx(both["epe"], rel=1e-3)     # the check can fail


@pytest.mark.slow
def test_resume_of_two_processes_continues_epoch_step_and_sample_order(tiny):
    """Stopped after epoch 1 and resumed on both ranks: epoch 2 trains as in the straight run
    (the same pairs, crops and step numbers), and the ranks stay identical."""
    resumed, ddp = tiny["resumed"], tiny["ddp"]
    checkpoint = _load(resumed / "checkpoint_2.tar")
    _assert_same_training_state(checkpoint, _load(ddp / "checkpoint_2.tar"))
    assert checkpoint["epoch"] == 2 and checkpoint["training"]["step"] == 4
    ranks = [_load(resumed / f"rank{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    log = _events(resumed / "train_log.jsonl")
    assert log[0]["event"] == "start" and (log[0]["first_epoch"], log[0]["step"]) == (2, 2)
    assert [e["step"] for e in log if e["event"] == "step"] == [3, 4]
    assert [(e["epoch"], e["step"]) for e in log if e["event"] == "epoch"] == [(2, 4)]
    straight = [e["loss"] for e in _events(ddp / "train_log.jsonl")
                if e["event"] == "step" and e["epoch"] == 2]
    assert [e["loss"] for e in log if e["event"] == "step"] == straight


@pytest.mark.slow
def test_resume_in_one_process_continues_the_generator_order(tmp_path):
    """Without torchrun (the tool's original sample order: a seeded DataLoader shuffle, crops
    from torch's RNG), a resume restores both RNG states: epoch 2 sees the pairs and crops of
    the straight run."""
    common = [*TINY, "--no-tensorboard"]
    straight = train_tiny_here(*common, "--epochs", "2", "--out", str(tmp_path / "straight"))
    train_tiny_here(*common, "--epochs", "1", "--out", str(tmp_path / "stopped"))
    resumed = train_tiny_here(*common, "--epochs", "2", "--out", str(tmp_path / "resumed"),
                              "--resume", str(tmp_path / "stopped" / "last.tar"))
    assert [e["epoch"] for e in resumed["epochs"]] == [2] and resumed["step"] == 4
    assert resumed["epochs"][0]["losses"] == straight["epochs"][1]["losses"]
    mine = _load(tmp_path / "resumed" / "checkpoint_2.tar")
    theirs = _load(tmp_path / "straight" / "checkpoint_2.tar")
    assert all(torch.equal(mine["state_dict"][key], value)
               for key, value in theirs["state_dict"].items())


@pytest.mark.slow
def test_tensorboard_events_hold_the_expected_tags(tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tiny["ddp"] / "tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1       # rank 0 alone
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/total", "loss/output1", "lr", "throughput/pairs_per_s", "val/epe",
            "val/bad_1", "val/bad_3", "val/d1_all"} <= set(tags["scalars"])
    assert {"train/left", "train/disparity_pred", "train/disparity_gt", "val/left",
            "val/disparity_pred", "val/disparity_gt"} <= set(tags["images"])
    log = _events(tiny["ddp"] / "train_log.jsonl")
    losses = [(e["step"], e["loss"]) for e in log if e["event"] == "step"]
    board = [(s.step, s.value) for s in events.Scalars("loss/total")]
    assert [s for s, _ in board] == [s for s, _ in losses] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in board], [v for _, v in losses], rtol=1e-6)
    val = next(e["val"] for e in log if e["event"] == "epoch" and e["val"])
    assert events.Scalars("val/d1_all")[-1].value == pytest.approx(val["d1_all"], rel=1e-6)
    assert [s.value for s in events.Scalars("lr")] == pytest.approx([1e-3] * 4)
    image = events.Images("val/left")[-1]
    assert (image.width, image.height) == (544, 256)


@pytest.mark.slow
def test_json_log_records_start_steps_and_epochs(tiny):
    log = _events(tiny["ddp"] / "train_log.jsonl")
    start = log[0]
    assert start["event"] == "start" and start["world_size"] == 2
    assert start["recipe"] == "default" and start["values"]["crop"] == [256, 512]
    assert start["order"] == {"order": "epoch-seeded", "seed": SEED, "batch_size": 2,
                              "shards": 2}
    steps = [e for e in log if e["event"] == "step"]
    assert [(e["epoch"], e["iteration"]) for e in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(e["pairs"] == 2 and e["pairs_per_s"] > 0 and e["lr"] == 0.001
               and len(e["output_losses"]) == 1 for e in steps)
    epochs = [e for e in log if e["event"] == "epoch"]
    assert [e["checkpoint"].endswith(f"checkpoint_{e['epoch']}.tar") for e in epochs] == [True] * 2


@pytest.fixture(scope="module")
def psmnet_ddp(tmp_path_factory, repo_root):
    """The console tool itself under torchrun: PSMNet basic, 2 synthetic 256x512 scenes, global
    batch 2, one epoch of one step (about 10-20 s per process on one CPU thread)."""
    out = tmp_path_factory.mktemp("psmnet_ddp")
    result = torchrun(["-m", "stereo_depth_ros.tools.train", "--dataset", "synthetic",
                       "--count", "2", "--crop", "256x512", "--batch-size", "2", "--model",
                       "basic", "--max-disparity", "16", "--device", "cpu", "--epochs", "1",
                       "--seed", str(SEED), "--quiet", "--no-tensorboard", "--out", str(out)],
                      cwd=repo_root)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es) (gloo)" in result.stderr and "recipe default:" in result.stderr
    assert "epoch 1/1" in result.stdout and "saved" in result.stdout
    return out


@pytest.mark.slow
def test_checkpoint_of_two_processes_loads_strictly_in_both_layouts(psmnet_ddp):
    path = psmnet_ddp / "checkpoint_1.tar"
    checkpoint = _load(path)
    assert checkpoint["epoch"] == 1 and np.isfinite(checkpoint["train_loss"])
    assert all(key.startswith("module.") and not key.startswith("module.module.")
               for key in checkpoint["state_dict"])
    assert checkpoint["training"]["world_size"] == 2 and checkpoint["training"]["step"] == 1
    model = build_psmnet("basic", max_disparity=16)
    assert load_checkpoint(model, path)["epoch"] == 1                   # strict
    official = torch.nn.DataParallel(build_psmnet("basic", max_disparity=16))
    official.load_state_dict(checkpoint["state_dict"], strict=True)
    epoch = [e for e in _events(psmnet_ddp / "train_log.jsonl") if e["event"] == "epoch"][0]
    assert epoch["replicas"] == [state_fingerprint(model)] * 2
    torch.manual_seed(SEED)
    start = build_psmnet("basic", max_disparity=16).state_dict()
    assert max(float((checkpoint["state_dict"]["module." + k] - v).abs().max())
               for k, v in start.items() if v.is_floating_point()) > 1e-4   # it trained
