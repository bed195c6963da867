"""`stereo_depth_train`: train or fine-tune PSMNet the way the official scripts do.

Examples:

    # KITTI 2015 fine-tuning from the SceneFlow weights (official finetune.py recipe)
    stereo_depth_train --dataset kitti2015 --root data_scene_flow/training \\
        --init pretrained_sceneflow.tar --epochs 300 --val-count 40 --out runs/kitti15
    # resume after an interruption
    stereo_depth_train --dataset kitti2015 --root data_scene_flow/training \\
        --resume runs/kitti15/last.tar --epochs 300 --val-count 40 --out runs/kitti15
    # a quick CPU smoke run on synthetic scenes
    stereo_depth_train --dataset synthetic --count 4 --crop 256x256 --batch-size 2 \\
        --max-disparity 32 --epochs 3 --device cpu --out runs/smoke

Recipe (official main.py / finetune.py, see the project's notes):
- random crops (default 256x512), the same window for both images and the ground truth; no other
  augmentation; images as RGB / 255 normalised with the ImageNet mean/std;
- loss for stackhourglass: 0.5 * SL1(pred1) + 0.7 * SL1(pred2) + 1.0 * SL1(pred3), smooth-L1
  (beta 1) averaged over the masked pixels; for basic: SL1 of its single output;
- masks: KITTI `gt > 0`, SceneFlow `gt < max_disparity`, others both; always finite gt;
- Adam, betas (0.9, 0.999); lr `--lr` (0.001) for epochs <= `--lr-drop-epoch` (200), then
  lr * `--lr-drop-factor` (0.1); epochs count from 1 as in finetune.py.

Checkpoints (`<out>/checkpoint_<epoch>.tar` every `--save-every` epochs and at the end, and
`<out>/last.tar` after every epoch) use the official layout: {'epoch', 'state_dict' (keys prefixed
'module.', as nn.DataParallel writes them), 'train_loss'}, plus 'optimizer', 'max_disparity',
'model' and 'val_metrics' for resuming. They load with `models.load_checkpoint` and into the
official code (`model = nn.DataParallel(model); model.load_state_dict(ckpt['state_dict'])`).
Progress goes to stderr, one summary line per epoch to stdout. Exit status 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stereo_depth_ros.core.metrics import MetricCounts, count_metrics
from stereo_depth_ros.core.padding import InputPadder
from stereo_depth_ros.models import OFFICIAL_PREPROCESSING, build_psmnet, load_checkpoint
from stereo_depth_ros.tools._cli import (ToolError, add_dataset_arguments, dataset_from_args,
                                         hxw_size, run_tool, spec_type)

PROG = "stereo_depth_train"
LOSS_WEIGHTS = (0.5, 0.7, 1.0)
MODULE_PREFIX = "module."
VAL_METRICS = ("epe", "bad_1", "bad_3", "d1_all")
_SPP_LARGEST_POOL = 64


class TrainError(ToolError):
    """A problem the user can fix (bad option combination, unusable checkpoint)."""


# --------------------------------------------------------------------------- schedule, loss

def learning_rate(epoch: int, base_lr: float = 1e-3, drop_epoch: int = 200,
                  drop_factor: float = 0.1) -> float:
    """Official finetune schedule: base_lr for epoch <= drop_epoch (1-based), then scaled.

    drop_epoch <= 0 keeps base_lr for ever (the SceneFlow pre-training schedule).
    """
    if drop_epoch > 0 and epoch > drop_epoch:
        return base_lr * drop_factor
    return base_lr


def mask_mode_for(dataset: str) -> str:
    """Official loss mask per dataset: "gt>0" (KITTI), "gt<max" (SceneFlow) or "both"."""
    if dataset.startswith("kitti"):
        return "gt>0"
    if dataset == "sceneflow":
        return "gt<max"
    return "both"


def loss_mask(gt: torch.Tensor, mode: str, max_disparity: float) -> torch.Tensor:
    """Bool mask of the pixels that enter the loss; gt: (B, H, W) px, NaN = no ground truth."""
    mask = torch.isfinite(gt)
    if mode in ("gt>0", "both"):
        mask &= gt > 0
    if mode in ("gt<max", "both"):
        mask &= gt < max_disparity
    if mode not in ("gt>0", "gt<max", "both"):
        raise ValueError(f"unknown mask mode {mode!r}")
    return mask


def psmnet_loss(outputs, gt: torch.Tensor, mask: torch.Tensor,
                weights: tuple[float, ...] = LOSS_WEIGHTS) -> torch.Tensor:
    """Weighted smooth-L1 over masked px.

    outputs: (pred1, pred2, pred3) from stackhourglass in train mode, or one tensor (basic);
    each (B, 1, H, W) or (B, H, W) px. gt: (B, H, W) px. mask: (B, H, W) bool, not empty.
    """
    if isinstance(outputs, torch.Tensor):
        outputs, weights = (outputs,), (1.0,)
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} loss weights")
    target = gt[mask]
    total = gt.new_zeros(())
    for weight, output in zip(weights, outputs):
        if output.dim() == 4:
            output = output.squeeze(1)
        total = total + weight * F.smooth_l1_loss(output[mask], target, reduction="mean")
    return total


# --------------------------------------------------------------------------- data

def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised as the official weights expect."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(
        OFFICIAL_PREPROCESSING.scale)
    mean = torch.tensor(OFFICIAL_PREPROCESSING.mean).view(3, 1, 1)
    std = torch.tensor(OFFICIAL_PREPROCESSING.std).view(3, 1, 1)
    return (tensor - mean) / std


class RandomCropDataset(Dataset):
    """Random (crop_h, crop_w) windows of a StereoDataset, one window for images and gt.

    Items: (left (3, h, w) float32 normalised, right (same), gt (h, w) float32 px, NaN invalid).
    The window is drawn with torch's RNG (seed it for reproducible crops). cache: keep decoded
    samples in memory (fine for a few hundred KITTI pairs).
    """

    def __init__(self, dataset, crop: tuple[int, int], *, indices: list[int] | None = None,
                 cache: bool = False):
        self.dataset = dataset
        self.crop = crop
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def _sample(self, index: int):
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = self.dataset[index]
        if sample.disparity is None:
            raise TrainError(f"{sample.name}: no ground-truth disparity to train on")
        item = (sample.left, sample.right, sample.disparity, sample.name)
        if self.cache is not None:
            self.cache[index] = item
        return item

    def __getitem__(self, i: int):
        left, right, gt, name = self._sample(self.indices[i])
        height, width = gt.shape
        crop_h, crop_w = self.crop
        if height < crop_h or width < crop_w:
            raise TrainError(f"{name}: image {width}x{height} is smaller than the crop "
                             f"{crop_w}x{crop_h} (--crop is HxW)")
        top = int(torch.randint(0, height - crop_h + 1, (1,)))
        x0 = int(torch.randint(0, width - crop_w + 1, (1,)))
        window = (slice(top, top + crop_h), slice(x0, x0 + crop_w))
        return (normalize_image(left[window]), normalize_image(right[window]),
                torch.from_numpy(np.ascontiguousarray(gt[window], dtype=np.float32)))


def check_batchnorm_trainable(crop: tuple[int, int], batch_size: int) -> None:
    """PSMNet's largest SPP branch pools 64x64 at 1/4 resolution; BatchNorm needs > 1 value."""
    half = [-(-size // 2) for size in crop]
    pooled = [-(-size // 2) // _SPP_LARGEST_POOL for size in half]     # ceil(ceil(s/2)/2) // 64
    if min(crop) < 256 or crop[0] % 16 or crop[1] % 16:
        raise TrainError(f"crop {crop[0]}x{crop[1]} must be at least 256x256 and a multiple of "
                         "16 (PSMNet's SPP and hourglass need it)")
    if batch_size * pooled[0] * pooled[1] <= 1:
        raise TrainError(f"crop {crop[0]}x{crop[1]} with batch size {batch_size} leaves the 64-px "
                         "SPP branch one value per channel, which BatchNorm cannot train on: use "
                         "--batch-size >= 2 or a crop of at least 256x512")


# --------------------------------------------------------------------------- loops

@dataclass
class EpochStats:
    """Mean loss and counts of one epoch; losses: per-iteration values."""

    mean_loss: float
    iterations: int
    skipped: int
    seconds: float
    losses: list[float]


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *,
                    device: torch.device, max_disparity: float, mask_mode: str,
                    progress=None, max_iterations: int | None = None) -> EpochStats:
    """One pass over `loader` ((left, right, gt) batches); returns EpochStats.

    Batches whose mask is empty are skipped (counted in `skipped`). progress: optional callable
    (iteration, total, loss) for reporting.
    """
    model.train()
    losses: list[float] = []
    skipped = 0
    start = time.perf_counter()
    total = len(loader) if max_iterations is None else min(len(loader), max_iterations)
    for iteration, (left, right, gt) in enumerate(loader, start=1):
        if max_iterations is not None and iteration > max_iterations:
            break
        left, right, gt = left.to(device), right.to(device), gt.to(device)
        mask = loss_mask(gt, mask_mode, max_disparity)
        if not bool(mask.any()):
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss = psmnet_loss(model(left, right), gt, mask)
        if not torch.isfinite(loss):
            raise TrainError(f"loss became {loss.item()} at iteration {iteration}; lower --lr")
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(iteration, total, losses[-1])
    mean_loss = float(np.mean(losses)) if losses else math.nan
    return EpochStats(mean_loss, len(losses), skipped, time.perf_counter() - start, losses)


@torch.no_grad()
def predict_disparity(model: nn.Module, left: np.ndarray, right: np.ndarray,
                      device: torch.device) -> np.ndarray:
    """Eval-mode disparity of one full pair: (H, W, 3) uint8 RGB -> (H, W) float32 px.

    Pads top/right to a multiple of 16 (>= 256 px) as the official test scripts do, crops back.
    """
    model.eval()
    padder = InputPadder(left.shape[:2])
    left_t, right_t = (padder.pad(normalize_image(image)[None]).to(device)
                       for image in (left, right))
    output = model(left_t, right_t)
    return padder.unpad(output[0, 0]).float().cpu().numpy().astype(np.float32)


def validate(model: nn.Module, dataset, *, device: torch.device, indices: list[int] | None = None,
             names: tuple[str, ...] = VAL_METRICS) -> dict[str, float]:
    """Pooled metrics (core.metrics, pixel-weighted) of `model` on full images of `dataset`.

    Returns {metric: value} on the "all" ground truth, plus `<metric>_noc` where the dataset has
    non-occluded ground truth.
    """
    indices = list(range(len(dataset))) if indices is None else list(indices)
    counts = {"all": MetricCounts(), "noc": MetricCounts()}
    for index in indices:
        sample = dataset[index]
        if sample.disparity is None:
            raise TrainError(f"{sample.name}: no ground truth to validate against")
        prediction = predict_disparity(model, sample.left, sample.right, device)
        counts["all"] = counts["all"] + count_metrics(prediction, sample.disparity)
        if sample.disparity_noc is not None:
            counts["noc"] = counts["noc"] + count_metrics(prediction, sample.disparity_noc)
    metrics = counts["all"].finalize(names)
    if counts["noc"].n_valid:
        metrics.update({f"{k}_noc": v for k, v in counts["noc"].finalize(names).items()})
    return metrics


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
                    epoch: int, train_loss: float, val_metrics: dict | None = None) -> Path:
    """Write an official-layout checkpoint ('module.' keys) plus resume state; returns path."""
    state = {MODULE_PREFIX + key: value.detach().cpu()
             for key, value in model.state_dict().items()}
    payload = {"epoch": int(epoch), "state_dict": state, "train_loss": float(train_loss),
               "max_disparity": int(model.max_disparity), "model": str(model.variant),
               "val_metrics": {k: float(v) for k, v in (val_metrics or {}).items()}}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def resume_from(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load model and optimizer state saved by save_checkpoint; returns the last finished epoch."""
    extra = load_checkpoint(model, path)
    if "optimizer" not in extra or "epoch" not in extra:
        raise TrainError(f"{path} has no optimizer state or epoch: it was not written by "
                         f"{PROG}; use --init to start from its weights instead")
    if extra.get("model") not in (None, model.variant):
        raise TrainError(f"{path} holds a '{extra['model']}' model, --model is "
                         f"'{model.variant}'")
    try:
        optimizer.load_state_dict(extra["optimizer"])
    except (ValueError, KeyError) as error:
        raise TrainError(f"{path}: optimizer state does not fit: {error}") from None
    return int(extra["epoch"])


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train or fine-tune PSMNet with the official recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    size = hxw_size("256x512")
    data = parser.add_argument_group("data")
    add_dataset_arguments(data, size_type=size, size_default=None,
                          size_help="synthetic: HxW (default: the crop size)",
                          limit_help="use only the first N samples", seed_flag="--scene-seed",
                          subset_example="TRAIN")
    data.add_argument("--val-count", type=int, default=0,
                      help="hold out the last N samples (by name) for validation")
    data.add_argument("--crop", type=size, default=(256, 512), help="training crop HxW")
    data.add_argument("--workers", type=int, help="data loader processes (default: 4 on CUDA, "
                      "0 on CPU)")
    data.add_argument("--cache", action="store_true", help="keep decoded samples in memory")
    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", type=spec_type("model"), default="stackhourglass",
                       help="PSMNet variant: stackhourglass or basic")
    model.add_argument("--max-disparity", type=spec_type("max_disparity"), default=192,
                       help="disparity levels, px (multiple of 16)")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--init", type=Path, help="start from these weights (any PSMNet "
                       "checkpoint); epochs and optimizer start fresh")
    start.add_argument("--resume", type=Path, help="continue a run from its checkpoint "
                       "(weights, optimizer state, epoch)")
    model.add_argument("--epochs", type=int, default=300, help="last epoch (1-based)")
    model.add_argument("--batch-size", type=int, default=2)
    model.add_argument("--lr", type=float, default=1e-3)
    model.add_argument("--lr-drop-epoch", type=int, default=200,
                       help="epochs after this use lr * --lr-drop-factor (<= 0: never)")
    model.add_argument("--lr-drop-factor", type=float, default=0.1)
    model.add_argument("--device", type=spec_type("device"), default="auto",
                       help="auto, cpu, cuda or cuda:N")
    model.add_argument("--seed", type=int, default=0, help="torch seed (init, crops, order)")
    run = parser.add_argument_group("output")
    run.add_argument("--out", type=Path, default=Path("runs/train"), help="checkpoint folder")
    run.add_argument("--save-every", type=int, default=10, help="keep checkpoint_<epoch>.tar "
                     "every N epochs (last.tar is written every epoch)")
    run.add_argument("--val-every", type=int, default=10,
                     help="validate every N epochs (needs --val-count; 0 = never)")
    run.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1:
        raise TrainError("--epochs and --batch-size must be >= 1")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise TrainError(f"--lr must be > 0, got {args.lr}")
    if args.val_count < 0 or (args.limit is not None and args.limit < 1):
        raise TrainError("--val-count must be >= 0 and --limit >= 1")
    if args.save_every < 1 or args.val_every < 0:
        raise TrainError("--save-every must be >= 1 and --val-every >= 0")
    for flag, path in (("--init", args.init), ("--resume", args.resume)):
        if path is not None and not path.is_file():
            raise TrainError(f"{flag} checkpoint not found: {path}")
    check_batchnorm_trainable(args.crop, args.batch_size)


def run(args: argparse.Namespace, stdout=None, stderr=None) -> dict:
    """Train as the command line says; returns {'epochs': [...per-epoch dicts], 'checkpoint'}."""
    from stereo_depth_ros.backends.psmnet import resolve_device

    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    _check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % 2**32)

    dataset = dataset_from_args(args, seed=args.scene_seed, size=args.size or args.crop,
                                max_disparity=float(args.max_disparity), error=TrainError)
    total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    if args.val_count >= total:
        raise TrainError(f"--val-count {args.val_count} leaves no training samples out of "
                         f"{total}")
    names = dataset.names()
    order = sorted(range(total), key=lambda i: names[i])
    train_indices = order[:total - args.val_count]
    val_indices = order[total - args.val_count:] if args.val_count else []
    if len(train_indices) < args.batch_size:
        raise TrainError(f"{len(train_indices)} training samples cannot fill a batch of "
                         f"{args.batch_size}")

    model = build_psmnet(args.model, max_disparity=args.max_disparity).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    first_epoch = 1
    if args.init is not None:
        load_checkpoint(model, args.init)
    if args.resume is not None:
        first_epoch = resume_from(args.resume, model, optimizer) + 1
        if first_epoch > args.epochs:
            raise TrainError(f"{args.resume} already finished epoch {first_epoch - 1}; raise "
                             f"--epochs above it to continue")

    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    crops = RandomCropDataset(dataset, args.crop, indices=train_indices, cache=args.cache)
    generator = torch.Generator().manual_seed(args.seed * 100003 + first_epoch)
    loader = DataLoader(crops, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        generator=generator)
    mask_mode = mask_mode_for(args.dataset)
    stderr.write(f"{PROG}: {args.model} max_disparity {args.max_disparity} on {device}; "
                 f"{len(train_indices)} training / {len(val_indices)} validation samples, "
                 f"{len(loader)} iterations per epoch, epochs {first_epoch}..{args.epochs}\n")

    history = []
    checkpoint = None
    for epoch in range(first_epoch, args.epochs + 1):
        lr = learning_rate(epoch, args.lr, args.lr_drop_epoch, args.lr_drop_factor)
        for group in optimizer.param_groups:
            group["lr"] = lr
        last_report = [time.perf_counter()]

        def progress(iteration: int, count: int, loss: float, epoch=epoch) -> None:
            now = time.perf_counter()
            if args.quiet or (now - last_report[0] < 5.0 and iteration not in (1, count)):
                return
            last_report[0] = now
            stderr.write(f"epoch {epoch} iter {iteration}/{count} loss {loss:.4f} lr {lr:g}\n")
            stderr.flush()

        stats = train_one_epoch(model, loader, optimizer, device=device,
                                max_disparity=float(args.max_disparity), mask_mode=mask_mode,
                                progress=progress)
        record = {"epoch": epoch, "lr": lr, "train_loss": stats.mean_loss,
                  "iterations": stats.iterations, "seconds": stats.seconds,
                  "losses": stats.losses}
        val_metrics = None
        if val_indices and args.val_every and (epoch % args.val_every == 0
                                               or epoch == args.epochs):
            val_metrics = validate(model, dataset, device=device, indices=val_indices)
            record["val"] = val_metrics
        history.append(record)
        line = (f"epoch {epoch}/{args.epochs} lr {lr:g} train_loss {stats.mean_loss:.4f} "
                f"({stats.iterations} it, {stats.seconds:.1f} s)")
        if val_metrics:
            line += " val " + " ".join(f"{k} {v:.3f}" for k, v in val_metrics.items())
        stdout.write(line + "\n")
        stdout.flush()
        checkpoint = save_checkpoint(args.out / "last.tar", model, optimizer, epoch=epoch,
                                     train_loss=stats.mean_loss, val_metrics=val_metrics)
        if epoch % args.save_every == 0 or epoch == args.epochs:
            checkpoint = save_checkpoint(args.out / f"checkpoint_{epoch}.tar", model, optimizer,
                                         epoch=epoch, train_loss=stats.mean_loss,
                                         val_metrics=val_metrics)
    return {"epochs": history, "checkpoint": checkpoint}


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 ok, 1 failure (message on stderr), 2 bad command line."""
    args = build_parser().parse_args(argv)

    def train() -> None:
        result = run(args)
        if result["checkpoint"] is not None:
            sys.stdout.write(f"saved {result['checkpoint']}\n")

    return run_tool(PROG, train,
                    interrupted_hint=f"resume with --resume {args.out / 'last.tar'}")


if __name__ == "__main__":
    sys.exit(main())
