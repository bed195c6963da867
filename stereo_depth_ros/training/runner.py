"""One training run as `stereo_depth_train` describes it (tools/train.py's docstring: recipe,
torchrun, checkpoints, logs): options checked, device and processes set up, dataset split, model
and optimiser built or resumed, then the epochs (`_Loop`) or the throughput benchmark, with rank
0's JSON log and TensorBoard (`_Monitor`). The console tool parses the command line and calls
`run`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stereo_depth_ros.data import dataset_from_options
from stereo_depth_ros.models import build_psmnet, load_checkpoint
from stereo_depth_ros.training import distributed
from stereo_depth_ros.training.checkpoint import TrainingState, resume_from, save_checkpoint
from stereo_depth_ros.training.data import (RandomCropDataset, check_batchnorm_trainable,
                                            denormalize_image)
from stereo_depth_ros.training.errors import TrainingError
from stereo_depth_ros.training.loop import EpochStats, train_one_epoch, validate
from stereo_depth_ros.training.loss import mask_mode_for
from stereo_depth_ros.training.precision import Precision
from stereo_depth_ros.training.progress import ProgressReporter
from stereo_depth_ros.training.recipe import (RECIPE_FIELDS, describe_recipe, learning_rate,
                                              resolve_recipe)
from stereo_depth_ros.training.sampling import (EPOCH_SEEDED_ORDER, GENERATOR_ORDER,
                                                TrainBatches)
from stereo_depth_ros.training.summaries import JsonLog, open_tensorboard

PROG = "stereo_depth_train"
"""The name the run's messages start with (the console tool's)."""


def _apply_recipe(args: argparse.Namespace):
    """Fill the recipe values left unset from the preset; returns (recipe, overridden names)."""
    overrides = {name: getattr(args, name) for name in RECIPE_FIELDS}
    if overrides["adam_betas"] is not None:
        overrides["adam_betas"] = tuple(overrides["adam_betas"])
    recipe, overridden = resolve_recipe(args.preset, overrides)
    for name, value in recipe.values().items():
        setattr(args, name, value)
    return recipe, overridden


def _check_args(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1:
        raise TrainingError("--epochs and --batch-size must be >= 1")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise TrainingError(f"--lr must be > 0, got {args.lr}")
    if not all(0 <= beta < 1 for beta in args.adam_betas):
        raise TrainingError(f"--adam-betas must be in [0, 1), got {args.adam_betas}")
    if args.val_count < 0 or (args.limit is not None and args.limit < 1):
        raise TrainingError("--val-count must be >= 0 and --limit >= 1")
    if args.save_every < 1 or args.val_every < 0:
        raise TrainingError("--save-every must be >= 1 and --val-every >= 0")
    if args.accumulate < 1 or args.benchmark_steps < 0 or args.benchmark_warmup < 0:
        raise TrainingError("--accumulate must be >= 1, --benchmark-steps and --benchmark-warmup "
                            ">= 0")
    for flag, path in (("--init", args.init), ("--resume", args.resume)):
        if path is not None and not path.is_file():
            raise TrainingError(f"{flag} checkpoint not found: {path}")
    check_batchnorm_trainable(args.crop, args.batch_size)


def _check_split(args: argparse.Namespace, world_size: int) -> tuple[int, int]:
    """(pairs per process per step, pairs per micro-batch) for --batch-size over the processes
    and --accumulate micro-batches."""
    shards = world_size * args.accumulate
    if args.batch_size % shards:
        raise TrainingError(f"--batch-size {args.batch_size} must be a multiple of processes x "
                            f"--accumulate = {world_size} x {args.accumulate} = {shards}")
    micro = args.batch_size // shards
    if micro < args.batch_size:
        try:
            check_batchnorm_trainable(args.crop, micro)
        except TrainingError:
            raise TrainingError(f"--batch-size {args.batch_size} over {world_size} process(es) x "
                                f"{args.accumulate} micro-batch(es) leaves {micro} pair(s) per "
                                f"BatchNorm, too few at crop {args.crop[0]}x{args.crop[1]}: use a "
                                "larger batch or crop, or fewer micro-batches") from None
    return args.batch_size // world_size, micro


def _training_device(args: argparse.Namespace) -> torch.device:
    """--device, made cuda:LOCAL_RANK for each process under torchrun on GPUs."""
    from stereo_depth_ros.backends.psmnet import resolve_device

    launched = distributed.launched_by_torchrun()
    if launched and args.device.startswith("cuda:"):
        raise TrainingError(f"--device {args.device}: under torchrun every process uses "
                            "cuda:LOCAL_RANK; pass --device cuda (or auto) and choose the GPUs "
                            "with CUDA_VISIBLE_DEVICES")
    device = resolve_device(args.device)
    if launched and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank_from_env())
        torch.cuda.set_device(device)
    return device


class _Silent:
    """A stream for the processes other than rank 0."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def run(args: argparse.Namespace, stdout=None, stderr=None, *, build_model=None) -> dict:
    """Train as the command line says; returns {'epochs': [...per-epoch dicts], 'checkpoint',
    'step', 'model'} ('benchmark' instead of checkpoints with --benchmark-steps).

    Under torchrun every process calls this; only rank 0 writes output and files.
    build_model: `(variant, *, max_disparity) -> nn.Module` for another stereo network with
    PSMNet's interface (train mode: a disparity tensor or a tuple of them, (B, 1, H, W) px;
    eval mode: one; attributes `variant` and `max_disparity`); default models.build_psmnet.
    """
    recipe, overridden = _apply_recipe(args)
    _check_args(args)
    device = _training_device(args)
    precision = Precision(args.precision, device)
    if args.sync_bn and device.type != "cuda" and distributed.launched_by_torchrun():
        raise TrainingError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on "
                            "the CPU each process normalises its own pairs, as the official "
                            "recipe did")
    context = distributed.init_from_env(device)
    try:
        silent = _Silent()
        return _train(args, recipe, overridden, context, device, precision,
                      (stdout or sys.stdout) if context.is_main else silent,
                      (stderr or sys.stderr) if context.is_main else silent,
                      build_model or build_psmnet)
    finally:
        distributed.shutdown(context)


def _train(args, recipe, overridden, context, device, precision, stdout, stderr,
           build_model) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % 2**32)
    dataset = dataset_from_options(args, seed=args.scene_seed, size=args.size or args.crop,
                                   max_disparity=float(args.max_disparity),
                                   error=TrainingError)
    train_indices, val_indices = _split_dataset(args, dataset)
    per_process, micro = _check_split(args, context.world_size)
    if recipe.dataset is not None and recipe.dataset != args.dataset:
        stderr.write(f"{PROG}: note: the {recipe.name} preset is the recipe for "
                     f"{recipe.dataset}, training on {args.dataset}\n")
    net = _Network.build(args, build_model, device, context, precision)
    shards = context.world_size * args.accumulate
    batches, order_info = _batches(args, dataset, train_indices, per_process, context, device,
                                   net, stderr)
    stderr.write(f"{PROG}: {describe_recipe(recipe, overridden)}\n")
    stderr.write(f"{PROG}: {net.variant} max_disparity {args.max_disparity} on {device}; "
                 f"{len(train_indices)} training / {len(val_indices)} validation samples, "
                 f"{len(batches)} iterations per epoch, epochs {net.first_epoch}..{args.epochs}\n")
    _describe_processes(args, context, precision, shards, per_process, micro, stderr)
    monitor = _Monitor(args, context, resumed_step=net.state.step if args.resume else None,
                       stderr=stderr)
    try:
        monitor.json.write("start", prog=PROG, recipe=recipe.name, overridden=list(overridden),
                           values=recipe.values(), dataset=args.dataset, model=net.variant,
                           device=str(device), world_size=context.world_size,
                           accumulate=args.accumulate, precision=args.precision,
                           sync_bn=bool(args.sync_bn), first_epoch=net.first_epoch,
                           last_epoch=args.epochs, step=net.state.step, order=order_info,
                           train_samples=len(train_indices), val_samples=len(val_indices),
                           iterations_per_epoch=len(batches))
        loop = _Loop(args, context, device, precision, net.trained, net.model, net.optimizer,
                     net.scaler, batches, mask_mode_for(args.dataset), monitor, stdout, stderr)
        if args.benchmark_steps:
            return loop.benchmark(net.first_epoch, net.state.step)
        return loop.epochs(net.first_epoch, net.state, order_info, dataset, val_indices)
    finally:
        monitor.close()


def _split_dataset(args: argparse.Namespace, dataset) -> tuple[list[int], list[int]]:
    """(training, validation) sample indices: the last --val-count samples by name validate."""
    total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    if args.val_count >= total:
        raise TrainingError(f"--val-count {args.val_count} leaves no training samples out of "
                            f"{total}")
    names = dataset.names()
    order = sorted(range(total), key=lambda i: names[i])
    train_indices = order[:total - args.val_count]
    val_indices = order[total - args.val_count:] if args.val_count else []
    if len(train_indices) < args.batch_size:
        raise TrainingError(f"{len(train_indices)} training samples cannot fill a batch of "
                            f"{args.batch_size}")
    return train_indices, val_indices


@dataclass
class _Network:
    """The model as trained (`trained`: DDP-wrapped when distributed), its optimiser and
    gradient scaler, and where the run starts (`first_epoch`, the resumed `state`)."""

    model: nn.Module
    trained: nn.Module
    variant: str
    optimizer: torch.optim.Optimizer
    scaler: object
    first_epoch: int
    state: TrainingState

    @classmethod
    def build(cls, args, build_model, device, context, precision) -> _Network:
        """Built, --init loaded or --resume'd, SyncBatchNorm and DDP as asked."""
        model = build_model(args.model, max_disparity=args.max_disparity).to(device)
        variant = str(getattr(model, "variant", args.model))
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                     betas=tuple(args.adam_betas))
        scaler = precision.make_scaler()
        first_epoch = 1
        state = TrainingState()
        if args.init is not None:
            load_checkpoint(model, args.init)
        if args.resume is not None:
            finished, state = resume_from(args.resume, model, optimizer)
            first_epoch = finished + 1
            if first_epoch > args.epochs and not args.benchmark_steps:
                raise TrainingError(f"{args.resume} already finished epoch {first_epoch - 1}; "
                                    f"raise --epochs above it to continue")
            if scaler is not None and state.scaler:
                scaler.load_state_dict(state.scaler)
        if args.sync_bn and context.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = model
        if context.enabled:
            trained = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        return cls(model, trained, variant, optimizer, scaler, first_epoch, state)


def _batches(args, dataset, train_indices, per_process, context, device, net: _Network,
             stderr) -> tuple[TrainBatches, dict]:
    """The training batches of this process and the sample order's description (kept in
    checkpoints; a resumed run with the same order continues its random state)."""
    shards = context.world_size * args.accumulate
    sampling = GENERATOR_ORDER if shards == 1 else EPOCH_SEEDED_ORDER
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    crops = RandomCropDataset(dataset, args.crop, indices=train_indices, cache=args.cache,
                              seed=args.seed if sampling == EPOCH_SEEDED_ORDER else None)
    batches = TrainBatches(crops, batch_size=per_process, world_size=context.world_size,
                           rank=context.rank, seed=args.seed, first_epoch=net.first_epoch,
                           order=sampling, workers=workers, pin_memory=device.type == "cuda")
    order_info = {"order": sampling, "seed": int(args.seed), "batch_size": int(args.batch_size),
                  "shards": int(shards)}
    if args.resume is not None:
        if net.state.order and net.state.order != order_info:
            stderr.write(f"{PROG}: note: {args.resume} was trained with sample order "
                         f"{net.state.order}, this run uses {order_info}: the epochs from here "
                         "on see a different order than the interrupted run would have\n")
        elif net.state.rng is not None:
            batches.load_rng_state(net.state.rng)
    return batches, order_info


def _describe_processes(args, context, precision, shards, per_process, micro, stderr) -> None:
    """The start-up notes on processes, micro-batches, BatchNorm and precision."""
    if shards > 1 or context.enabled:
        norm = "synchronised over all processes" if args.sync_bn and context.enabled else \
            f"per micro-batch of {micro}"
        stderr.write(f"{PROG}: {context.world_size} process(es)"
                     f"{f' ({context.backend})' if context.enabled else ''} x "
                     f"{args.accumulate} micro-batch(es): global batch {args.batch_size}, "
                     f"{per_process} pair(s) per process, BatchNorm {norm}\n")
    if args.sync_bn and not context.enabled:
        stderr.write(f"{PROG}: note: --sync-bn has no effect in one process\n")
    if precision.note():
        stderr.write(f"{PROG}: note: {precision.note()}\n")


class _Monitor:
    """Rank 0's JSON log and TensorBoard writer (nothing on the other ranks)."""

    def __init__(self, args, context, *, resumed_step: int | None, stderr):
        self.json = JsonLog((args.json_log or args.out / "train_log.jsonl")
                            if context.is_main else None)
        self.board = None
        if context.is_main and not args.no_tensorboard and not args.benchmark_steps:
            self.board, hint = open_tensorboard(
                args.tensorboard or args.out / "tensorboard",
                purge_step=None if resumed_step is None else resumed_step + 1)
            if hint:
                stderr.write(f"{PROG}: note: {hint}\n")

    def close(self) -> None:
        self.json.close()
        if self.board is not None:
            self.board.close()


class _Loop:
    """The epochs of one run (state shared by the epoch loop and the benchmark)."""

    def __init__(self, args, context, device, precision, trained, model, optimizer, scaler,
                 batches, mask_mode, monitor, stdout, stderr):
        self.args, self.context, self.device = args, context, device
        self.precision, self.trained, self.model = precision, trained, model
        self.optimizer, self.scaler, self.batches = optimizer, scaler, batches
        self.mask_mode, self.monitor = mask_mode, monitor
        self.stdout, self.stderr = stdout, stderr
        self.step = 0                     # optimiser steps so far (set by `epochs`)

    def _set_epoch(self, epoch: int) -> float:
        args = self.args
        lr = learning_rate(epoch, args.lr, args.lr_drop_epoch, args.lr_drop_factor)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.batches.set_epoch(epoch)
        return lr

    def _train_epoch(self, on_step, max_iterations=None) -> EpochStats:
        return train_one_epoch(self.trained, self.batches, self.optimizer, device=self.device,
                               max_disparity=float(self.args.max_disparity),
                               mask_mode=self.mask_mode, precision=self.precision,
                               accumulate=self.args.accumulate, context=self.context,
                               scaler=self.scaler, on_step=on_step,
                               max_iterations=max_iterations)

    def _check_replicas(self, epoch: int) -> list[str] | None:
        """Make every replica's BatchNorm statistics rank 0's, then check the replicas are
        bit-identical (SHA-256 of every parameter and buffer); their fingerprints."""
        if not self.context.enabled:
            return None
        distributed.broadcast_buffers(self.model, self.context)
        prints = distributed.gather_objects(distributed.state_fingerprint(self.model),
                                            self.context)
        if len(set(prints)) != 1:
            shown = ", ".join(p[:12] for p in prints)
            raise TrainingError(f"the {self.context.world_size} replicas differ after epoch "
                                f"{epoch} (parameter fingerprints {shown}): the processes did not "
                                "train in step")
        return prints

    def epochs(self, first_epoch: int, state: TrainingState, order_info: dict, dataset,
               val_indices: list[int]) -> dict:
        args, monitor = self.args, self.monitor
        total_steps = (args.epochs - first_epoch + 1) * len(self.batches)
        progress = ProgressReporter(self.stderr, quiet=args.quiet, total_steps=total_steps)
        history = []
        checkpoint = None
        self.step = state.step
        for epoch in range(first_epoch, args.epochs + 1):
            lr = self._set_epoch(epoch)
            progress.start_epoch(epoch, lr)
            example = [None]
            stats = self._train_epoch(self._step_logger(progress, epoch, lr, example))
            replicas = self._check_replicas(epoch)
            record = {"epoch": epoch, "lr": lr, "train_loss": stats.mean_loss,
                      "iterations": stats.iterations, "seconds": stats.seconds,
                      "losses": stats.losses, "output_losses": stats.output_losses,
                      "step": self.step, "pairs_per_s": stats.pairs_per_second}
            val_metrics = None
            if val_indices and args.val_every and (epoch % args.val_every == 0
                                                   or epoch == args.epochs):
                val_metrics = self._validate(dataset, val_indices, self.step)
                record["val"] = val_metrics
            if monitor.board is not None and example[0] is not None:
                left, prediction, gt = example[0]
                monitor.board.pair_images(self.step, "train", denormalize_image(left),
                                          prediction.float().cpu().numpy(),
                                          gt.float().cpu().numpy(), args.max_disparity)
            history.append(record)
            self._print_epoch(epoch, lr, stats, val_metrics)
            checkpoint = self._save(epoch, stats, val_metrics, order_info) or checkpoint
            monitor.json.write("epoch", epoch=epoch, step=self.step, lr=lr,
                               train_loss=stats.mean_loss, output_losses=stats.output_losses,
                               iterations=stats.iterations, skipped=stats.skipped,
                               seconds=stats.seconds, pairs_per_s=stats.pairs_per_second,
                               val=val_metrics, replicas=replicas, checkpoint=checkpoint)
            if monitor.board is not None:
                monitor.board.flush()
            distributed.barrier(self.context)
        return {"epochs": history, "checkpoint": checkpoint, "step": self.step,
                "model": self.model}

    def _step_logger(self, progress: ProgressReporter, epoch: int, lr: float, example: list):
        """train_one_epoch's on_step: counts the step, reports progress, logs it (JSON,
        TensorBoard) and keeps the step's example in `example[0]`."""
        monitor = self.monitor

        def on_step(record) -> None:
            self.step += 1
            progress.step(record.iteration, len(self.batches), record)
            rate = record.pairs / record.seconds if record.seconds > 0 else math.nan
            monitor.json.write("step", epoch=epoch, step=self.step, iteration=record.iteration,
                               loss=record.loss, output_losses=record.output_losses, lr=lr,
                               pairs=record.pairs, seconds=record.seconds, pairs_per_s=rate)
            if monitor.board is not None:
                monitor.board.scalars(self.step, {
                    "loss/total": record.loss, "lr": lr, "throughput/pairs_per_s": rate,
                    **{f"loss/output{i + 1}": value
                       for i, value in enumerate(record.output_losses)}})
            example[0] = record.example

        return on_step

    def _print_epoch(self, epoch: int, lr: float, stats: EpochStats,
                     val_metrics: dict | None) -> None:
        line = (f"epoch {epoch}/{self.args.epochs} lr {lr:g} train_loss {stats.mean_loss:.4f} "
                f"({stats.iterations} it, {stats.seconds:.1f} s, "
                f"{stats.pairs_per_second:.2f} pairs/s)")
        if val_metrics:
            line += " val " + " ".join(f"{k} {v:.3f}" for k, v in val_metrics.items())
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def _save(self, epoch: int, stats: EpochStats, val_metrics: dict | None,
              order_info: dict):
        """Rank 0: last.tar every epoch, checkpoint_<epoch>.tar every --save-every and at the
        end; the path written last (None on the other ranks)."""
        args, context = self.args, self.context
        if not context.is_main:
            return None
        training = TrainingState(
            step=self.step, order=order_info, rng=self.batches.rng_state(),
            precision=args.precision, world_size=context.world_size, accumulate=args.accumulate,
            scaler=self.scaler.state_dict() if self.scaler is not None else None)
        saved = {"epoch": epoch, "train_loss": stats.mean_loss, "val_metrics": val_metrics,
                 "training": training.to_dict()}
        checkpoint = save_checkpoint(args.out / "last.tar", self.model, self.optimizer, **saved)
        if epoch % args.save_every == 0 or epoch == args.epochs:
            checkpoint = save_checkpoint(args.out / f"checkpoint_{epoch}.tar", self.model,
                                         self.optimizer, **saved)
        return checkpoint

    def _validate(self, dataset, val_indices: list[int], step: int) -> dict:
        first = []

        def keep(sample, prediction) -> None:
            if not first:
                first.append((sample, prediction))

        metrics = validate(self.model, dataset, device=self.device, indices=val_indices,
                           context=self.context, autocast=self.precision.autocast,
                           on_prediction=keep)
        board = self.monitor.board
        if board is not None:
            board.scalars(step, {f"val/{name}": value for name, value in metrics.items()})
            if first:
                sample, prediction = first[0]
                board.pair_images(step, "val", sample.left, prediction, sample.disparity,
                                  self.args.max_disparity)
        return metrics

    def benchmark(self, first_epoch: int, step: int) -> dict:
        """Train --benchmark-warmup + --benchmark-steps steps; pairs/s of the timed ones."""
        args = self.args
        wanted = args.benchmark_warmup + args.benchmark_steps
        records = []
        epoch = first_epoch
        while len(records) < wanted:
            self._set_epoch(epoch)
            before = len(records)
            self._train_epoch(records.append, max_iterations=wanted - len(records))
            if len(records) == before:
                raise TrainingError("no training step in a whole epoch: the ground truth is empty")
            epoch += 1
        timed = records[args.benchmark_warmup:]
        seconds = sum(r.seconds for r in timed)
        pairs = sum(r.pairs for r in timed)
        variant = getattr(self.model, "variant", args.model)
        result = {"processes": self.context.world_size, "accumulate": args.accumulate,
                  "batch_size": args.batch_size, "crop": list(args.crop), "model": variant,
                  "max_disparity": args.max_disparity, "precision": args.precision,
                  "device": str(self.device), "backend": self.context.backend,
                  "threads_per_process": torch.get_num_threads(), "steps": len(timed),
                  "warmup_steps": args.benchmark_warmup, "seconds": seconds,
                  "pairs": pairs, "pairs_per_s": pairs / seconds if seconds > 0 else math.nan,
                  "losses": [r.loss for r in records]}
        self.monitor.json.write("benchmark", **result)
        self.stdout.write(
            f"benchmark: {result['processes']} process(es) x {args.accumulate} micro-batch(es), "
            f"global batch {args.batch_size}, crop {args.crop[0]}x{args.crop[1]}, {variant} "
            f"max_disparity {args.max_disparity}, {args.precision} on {self.device}: "
            f"{result['pairs_per_s']:.3f} pairs/s ({len(timed)} steps after "
            f"{args.benchmark_warmup} warm-up, {seconds:.1f} s)\n")
        self.stdout.flush()
        return {"epochs": [], "checkpoint": None, "step": step + len(records),
                "model": self.model, "benchmark": result}
