"""The official PSMNet training recipes as presets, and the learning-rate schedule.

SceneFlow pre-training (official main.py): random 256x512 crops, max disparity 192, Adam
betas (0.9, 0.999), lr 0.001 for all 10 epochs, batch 12. KITTI 2015 fine-tuning (official
finetune.py): the same crops and optimiser, 300 epochs, lr 0.001 for epochs 1..200 and 0.0001
after, batch 12, 160 training / 40 validation pairs. The paper trained on four GPUs with
nn.DataParallel, so BatchNorm saw 3 pairs per GPU: `--batch-size 12` on 4 processes, or
`--batch-size 12 --accumulate 4` in one, reproduces that grouping.

Without a preset the defaults are the tool's historical ones (the KITTI schedule with batch 2 and
no validation split). Every value can be overridden on the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

RECIPE_FIELDS = ("epochs", "batch_size", "crop", "max_disparity", "lr", "lr_drop_epoch",
                 "lr_drop_factor", "adam_betas", "val_count")
"""Recipe values that are also command-line options (argparse dests)."""


@dataclass(frozen=True)
class Recipe:
    """One training recipe.

    epochs: last epoch (1-based). batch_size: global batch (pairs per optimiser step, over all
    processes). crop: (height, width) px. max_disparity: px, a multiple of 16. lr: Adam learning
    rate until `lr_drop_epoch` (<= 0: never dropped), then lr * lr_drop_factor. adam_betas:
    Adam's (beta1, beta2). val_count: pairs held out for validation. dataset: the dataset the
    recipe was published for (None: any).
    """

    name: str
    epochs: int
    batch_size: int
    crop: tuple[int, int]
    max_disparity: int
    lr: float
    lr_drop_epoch: int
    lr_drop_factor: float
    adam_betas: tuple[float, float]
    val_count: int
    dataset: str | None = None

    def values(self) -> dict:
        """The command-line values of the recipe (RECIPE_FIELDS -> value)."""
        data = asdict(self)
        return {name: data[name] for name in RECIPE_FIELDS}


DEFAULT_RECIPE = Recipe("default", epochs=300, batch_size=2, crop=(256, 512), max_disparity=192,
                        lr=1e-3, lr_drop_epoch=200, lr_drop_factor=0.1, adam_betas=(0.9, 0.999),
                        val_count=0)
"""Without --preset: the tool's defaults before presets existed (unchanged)."""

PRESETS = {
    "sceneflow": Recipe("sceneflow", epochs=10, batch_size=12, crop=(256, 512),
                        max_disparity=192, lr=1e-3, lr_drop_epoch=0, lr_drop_factor=0.1,
                        adam_betas=(0.9, 0.999), val_count=0, dataset="sceneflow"),
    "kitti2015": Recipe("kitti2015", epochs=300, batch_size=12, crop=(256, 512),
                        max_disparity=192, lr=1e-3, lr_drop_epoch=200, lr_drop_factor=0.1,
                        adam_betas=(0.9, 0.999), val_count=40, dataset="kitti2015"),
}


def resolve_recipe(preset: str | None, overrides: dict) -> tuple[Recipe, tuple[str, ...]]:
    """The preset (None: DEFAULT_RECIPE) with every non-None value of `overrides` applied.

    overrides: RECIPE_FIELDS name -> value or None (not given). Returns (recipe, the names that
    were overridden, sorted).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(RECIPE_FIELDS)
    if unknown:
        raise ValueError(f"not recipe values: {', '.join(sorted(unknown))}")
    given = {name: value for name, value in overrides.items() if value is not None}
    base = PRESETS[preset] if preset is not None else DEFAULT_RECIPE
    return replace(base, **given), tuple(sorted(given))


def describe_recipe(recipe: Recipe, overridden: tuple[str, ...] = ()) -> str:
    """One line naming every value, overridden ones marked with '*'."""
    def mark(name: str, text: str) -> str:
        return text + ("*" if name in overridden else "")

    schedule = (f"lr {recipe.lr:g} until epoch {recipe.lr_drop_epoch}, then "
                f"x{recipe.lr_drop_factor:g}" if recipe.lr_drop_epoch > 0
                else f"lr {recipe.lr:g} constant")
    parts = [
        mark("epochs", f"epochs {recipe.epochs}"),
        mark("batch_size", f"batch {recipe.batch_size}"),
        mark("crop", f"crop {recipe.crop[0]}x{recipe.crop[1]}"),
        mark("max_disparity", f"max_disparity {recipe.max_disparity}"),
        schedule + ("*" if {"lr", "lr_drop_epoch", "lr_drop_factor"} & set(overridden)
                    else ""),
        mark("adam_betas", f"Adam betas ({recipe.adam_betas[0]:g}, {recipe.adam_betas[1]:g})"),
        mark("val_count", f"val-count {recipe.val_count}"),
    ]
    suffix = " (* = overridden)" if overridden else ""
    return f"recipe {recipe.name}: " + ", ".join(parts) + suffix


def learning_rate(epoch: int, base_lr: float = 1e-3, drop_epoch: int = 200,
                  drop_factor: float = 0.1) -> float:
    """Official finetune schedule: base_lr for epoch <= drop_epoch (1-based), then scaled.

    drop_epoch <= 0 keeps base_lr for ever (the SceneFlow pre-training schedule).
    """
    if drop_epoch > 0 and epoch > drop_epoch:
        return base_lr * drop_factor
    return base_lr
