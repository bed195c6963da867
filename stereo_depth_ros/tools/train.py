"""`stereo_depth_train`: train or fine-tune PSMNet the way the official scripts do, on one device
or data-parallel over several (torchrun).

Examples:

    # KITTI 2015 fine-tuning from the SceneFlow weights (official finetune.py recipe)
    stereo_depth_train --preset kitti2015 --dataset kitti2015 --root data_scene_flow/training \\
        --init pretrained_sceneflow.tar --out runs/kitti15
    # SceneFlow pre-training on 4 GPUs of one machine (official main.py recipe, global batch 12)
    torchrun --nproc_per_node=4 -m stereo_depth_ros.tools.train --preset sceneflow \\
        --dataset sceneflow --root SceneFlow --subset TRAIN --out runs/sceneflow
    # ... on 2 machines with 4 GPUs each (run on both; the same --rdzv-endpoint)
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-id=psm \\
        --rdzv-endpoint=host0:29400 -m stereo_depth_ros.tools.train --preset sceneflow ...
    # resume after an interruption (the same command, plus --resume)
    stereo_depth_train --preset kitti2015 --dataset kitti2015 --root data_scene_flow/training \\
        --resume runs/kitti15/last.tar --out runs/kitti15
    # a quick CPU smoke run on synthetic scenes
    stereo_depth_train --dataset synthetic --count 4 --crop 256x256 --batch-size 2 \\
        --max-disparity 32 --epochs 3 --device cpu --out runs/smoke

Recipe (official main.py / finetune.py, see the project's notes; `--preset` picks one, every
value can still be overridden, and the values in force are printed at start):
- random crops (default 256x512), the same window for both images and the ground truth; no other
  augmentation; images as RGB / 255 normalised with the ImageNet mean/std;
- loss for stackhourglass: 0.5 * SL1(pred1) + 0.7 * SL1(pred2) + 1.0 * SL1(pred3), smooth-L1
  (beta 1) averaged over the masked pixels of the (global) batch; for basic: SL1 of its output;
- masks: KITTI `gt > 0`, SceneFlow `gt < max_disparity`, others both; always finite gt;
- Adam, betas (0.9, 0.999); lr `--lr` (0.001) for epochs <= `--lr-drop-epoch` (200), then
  lr * `--lr-drop-factor` (0.1); epochs count from 1 as in finetune.py.

Under torchrun (also with one process): DistributedDataParallel over NCCL (CUDA, one GPU per
process) or Gloo (CPU). `--batch-size` is the global batch, split evenly over the
processes and, with `--accumulate N`, over N micro-batches per process; BatchNorm normalises each
micro-batch on its own, as the official 4-GPU DataParallel did (`--sync-bn`: over all processes,
CUDA only). Rank 0 alone prints, logs and writes checkpoints; every process resumes from the same
checkpoint. N processes and one process with `--accumulate N` train on the same pairs in the same
BatchNorm groups (training/sampling.py). One process with `--accumulate 1` runs as before.

Checkpoints (`<out>/checkpoint_<epoch>.tar` every `--save-every` epochs and at the end, and
`<out>/last.tar` after every epoch) use the official layout: {'epoch', 'state_dict' (keys prefixed
'module.', as nn.DataParallel writes them), 'train_loss'}, plus 'optimizer', 'max_disparity',
'model', 'val_metrics' and 'training' (step, sampling order, RNG state) for resuming. They load
with `models.load_checkpoint` and into the official code (`model = nn.DataParallel(model);
model.load_state_dict(ckpt['state_dict'])`). A resume continues at the epoch after the
checkpoint with the step count, sample order and crops the uninterrupted run would have had.

Watching: progress with throughput and ETA on stderr, one summary line per epoch on stdout, a
JSON-lines log (`<out>/train_log.jsonl`) and, when the `tensorboard` package is installed,
TensorBoard summaries in `<out>/tensorboard` (loss per output, lr, pairs/s, validation
epe/bad_1/bad_3/d1_all, left image and predicted / ground-truth disparity colour maps).
Exit status 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stereo_depth_ros.tools._cli import add_dataset_arguments, hxw_size, run_tool, spec_type
from stereo_depth_ros.training.precision import PRECISIONS
from stereo_depth_ros.training.recipe import PRESETS
from stereo_depth_ros.training.runner import PROG, run


# --------------------------------------------------------------------------- command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for the recipe values, whose default is the preset's (None)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train or fine-tune PSMNet with the official recipe, on one "
        "device or data-parallel under torchrun.", formatter_class=_HelpFormatter)
    _add_data_arguments(parser)
    _add_recipe_arguments(parser)
    _add_model_arguments(parser)
    _add_run_arguments(parser)
    return parser


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    size = hxw_size("256x512")
    data = parser.add_argument_group("data")
    add_dataset_arguments(data, size_type=size, size_default=None,
                          size_help="synthetic: HxW (default: the crop size)",
                          limit_help="use only the first N samples", seed_flag="--scene-seed",
                          subset_example="TRAIN")
    data.add_argument("--val-count", type=int, default=None,
                      help="hold out the last N samples (by name) for validation (default 0; "
                      "kitti2015 preset: 40)")
    data.add_argument("--crop", type=size, default=None, help="training crop HxW (default "
                      "256x512)")
    data.add_argument("--workers", type=int, help="data loader processes per training process "
                      "(default: 4 on CUDA, 0 on CPU)")
    data.add_argument("--cache", action="store_true", help="keep decoded samples in memory")


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    recipe = parser.add_argument_group("recipe (defaults: --preset's values, else the "
                                       "historical defaults shown)")
    recipe.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="the paper's recipe: sceneflow (pre-training: 10 epochs, lr 0.001, "
                        "batch 12) or kitti2015 (fine-tuning: 300 epochs, lr 0.001 then 0.0001 "
                        "after epoch 200, batch 12, 40 validation pairs); both 256x512 crops, "
                        "max disparity 192, Adam betas (0.9, 0.999)")
    recipe.add_argument("--max-disparity", type=spec_type("max_disparity"), default=None,
                        help="disparity levels, px (multiple of 16; default 192)")
    recipe.add_argument("--epochs", type=int, default=None, help="last epoch, 1-based "
                        "(default 300)")
    recipe.add_argument("--batch-size", type=int, default=None,
                        help="global batch: pairs per optimiser step over all processes "
                        "(default 2)")
    recipe.add_argument("--lr", type=float, default=None, help="Adam learning rate (default "
                        "0.001)")
    recipe.add_argument("--lr-drop-epoch", type=int, default=None,
                        help="epochs after this use lr * --lr-drop-factor (<= 0: never; "
                        "default 200)")
    recipe.add_argument("--lr-drop-factor", type=float, default=None, help="default 0.1")
    recipe.add_argument("--adam-betas", type=float, nargs=2, metavar=("BETA1", "BETA2"),
                        default=None, help="Adam betas (default 0.9 0.999)")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", type=spec_type("model"), default="stackhourglass",
                       help="PSMNet variant: stackhourglass or basic")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--init", type=Path, help="start from these weights (any PSMNet "
                       "checkpoint); epochs and optimizer start fresh")
    start.add_argument("--resume", type=Path, help="continue a run from its checkpoint "
                       "(weights, optimizer state, epoch, step, sample order)")
    model.add_argument("--device", type=spec_type("device"), default="auto",
                       help="auto, cpu, cuda or cuda:N (under torchrun: auto or cuda, each "
                       "process then uses cuda:LOCAL_RANK)")
    model.add_argument("--seed", type=int, default=0, help="torch seed (init, crops, order)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Scale and precision, output."""
    scale = parser.add_argument_group("scale and precision")
    scale.add_argument("--accumulate", type=int, default=1,
                       help="micro-batches per process and step (gradient accumulation; "
                       "BatchNorm sees one micro-batch at a time)")
    scale.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32; bf16 autocast; fp16 autocast with a GradScaler (CUDA only). "
                       "The loss and the soft-argmin stay float32")
    scale.add_argument("--sync-bn", action="store_true",
                       help="with several CUDA processes: SyncBatchNorm over all of them "
                       "(default: plain BatchNorm per process, as the official recipe)")
    run = parser.add_argument_group("output")
    run.add_argument("--out", type=Path, default=Path("runs/train"), help="checkpoint folder")
    run.add_argument("--save-every", type=int, default=10, help="keep checkpoint_<epoch>.tar "
                     "every N epochs (last.tar is written every epoch)")
    run.add_argument("--val-every", type=int, default=10,
                     help="validate every N epochs (needs --val-count; 0 = never)")
    run.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    run.add_argument("--json-log", type=Path, default=None,
                     help="JSON-lines log (default: <out>/train_log.jsonl)")
    board = run.add_mutually_exclusive_group()
    board.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                       help="TensorBoard folder (default: <out>/tensorboard; needs the "
                       "tensorboard package)")
    board.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard summaries")
    run.add_argument("--benchmark-steps", type=int, default=0, metavar="N",
                     help="only measure: train N steps after --benchmark-warmup steps, print "
                     "pairs/s, write no checkpoint")
    run.add_argument("--benchmark-warmup", type=int, default=2, metavar="N",
                     help="steps before the --benchmark-steps are timed")


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
