"""Which training pairs each process sees, in which order, epoch after epoch.

Two orders:

* "generator" (one process, no micro-batches: the tool's original order, kept so such runs are
  reproduced exactly): a DataLoader shuffling with its own generator seeded from --seed, crops
  from torch's global RNG. A resume restores both RNG states (`rng_state`), so the epochs after
  a resume see the order and crops the uninterrupted run would have seen.
* "epoch-seeded" (several processes or micro-batches): DistributedSampler's permutation of
  (seed, epoch), each process taking every world_size-th pair, and crop windows drawn from
  (seed, epoch, sample) alone. The global batch of step k is always the same slice of the
  permutation, and the micro-batch j of process r holds the pairs that shard r + world_size * j
  would hold, so N processes and one process with N micro-batches (--accumulate N) train on
  the same pairs in the same BatchNorm groups. Resuming needs only the epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

GENERATOR_ORDER = "generator"
EPOCH_SEEDED_ORDER = "epoch-seeded"
_GENERATOR_SEED_STRIDE = 100003


def micro_batches(batch, count: int) -> list:
    """Split every tensor of `batch` into `count` strided micro-batches (j::count).

    batch: a sequence of tensors with the same first dimension B (a multiple of count).
    Returns `count` tuples; tuple j holds rows j, j + count, j + 2 * count, ...
    """
    if count == 1:
        return [tuple(batch)]
    return [tuple(tensor[j::count] for tensor in batch) for j in range(count)]


class TrainBatches:
    """The batches of one process, one epoch at a time: call set_epoch(epoch), then iterate.

    crops: a data.RandomCropDataset (seeded when order is EPOCH_SEEDED_ORDER).
    batch_size: pairs per step for this process (the global batch / world_size).
    first_epoch: the first epoch this run trains (seeds the generator order as before).
    """

    def __init__(self, crops, *, batch_size: int, world_size: int, rank: int, seed: int,
                 first_epoch: int, order: str, workers: int = 0, pin_memory: bool = False):
        self.crops = crops
        self.order = order
        self.generator = None
        if order == GENERATOR_ORDER:
            if world_size != 1:
                raise ValueError("the generator order is for one process only")
            self.generator = torch.Generator().manual_seed(
                seed * _GENERATOR_SEED_STRIDE + first_epoch)
            self.sampler = None
            self.loader = DataLoader(crops, batch_size=batch_size, shuffle=True,
                                     drop_last=True, num_workers=workers,
                                     pin_memory=pin_memory, generator=self.generator)
        elif order == EPOCH_SEEDED_ORDER:
            if crops.seed is None:
                raise ValueError("the epoch-seeded order needs crops drawn with a seed")
            self.sampler = DistributedSampler(crops, num_replicas=world_size, rank=rank,
                                              shuffle=True, seed=seed, drop_last=True)
            self.loader = DataLoader(crops, batch_size=batch_size, sampler=self.sampler,
                                     drop_last=True, num_workers=workers,
                                     pin_memory=pin_memory)
        else:
            raise ValueError(f"unknown order {order!r}")

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation and crop windows of `epoch` (epoch-seeded order)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            self.crops.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)

    def rng_state(self) -> dict | None:
        """What a resume needs to continue the generator order (None for epoch-seeded)."""
        if self.generator is None:
            return None
        return {"torch": torch.get_rng_state(), "loader": self.generator.get_state()}

    def load_rng_state(self, state: dict) -> None:
        """Restore `rng_state()` of an interrupted run (generator order only)."""
        if self.generator is None:
            return
        torch.set_rng_state(state["torch"])
        self.generator.set_state(state["loader"])
