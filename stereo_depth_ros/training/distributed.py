"""Data-parallel training processes started by torchrun: process group, collectives, checks.

`torchrun --nproc_per_node=N -m stereo_depth_ros.tools.train ...` sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init_from_env` joins the group they describe (NCCL for
CUDA, Gloo for the CPU), also for N = 1 (so one GPU under torchrun runs the NCCL /
DistributedDataParallel path). Without torchrun (none of them set, or only WORLD_SIZE=1) nothing
is initialised and every helper here is a no-op, so one process runs exactly as it did before.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

ENV_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group: rank 0..world_size-1, local_rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when this process is in a process group (started by torchrun)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs and writes checkpoints."""
        return self.rank == 0


SINGLE_PROCESS = DistContext()


def world_size_from_env(environ=None) -> int:
    """WORLD_SIZE as torchrun set it (1 when absent); ValueError when it is not a number."""
    environ = os.environ if environ is None else environ
    text = environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={text!r} is not an integer") from None
    if size < 1:
        raise ValueError(f"WORLD_SIZE={size} must be >= 1")
    return size


def launched_by_torchrun(environ=None) -> bool:
    """Whether the environment describes a process group (torchrun sets all of ENV_VARIABLES)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in ENV_VARIABLES)


def local_rank_from_env(environ=None) -> int:
    """LOCAL_RANK as torchrun set it (0 when absent); ValueError when it is not a number."""
    environ = os.environ if environ is None else environ
    text = environ.get("LOCAL_RANK", "0")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"LOCAL_RANK={text!r} is not an integer") from None


def backend_for(device_type: str) -> str:
    """NCCL for CUDA tensors, Gloo for CPU tensors."""
    return "nccl" if device_type == "cuda" else "gloo"


def init_from_env(device: torch.device, *, timeout_minutes: float = 30.0,
                  environ=None) -> DistContext:
    """Join the process group torchrun describes in the environment (or return SINGLE_PROCESS).

    device: this process's training device (cuda:LOCAL_RANK under torchrun on GPUs).
    environ: where to read the variables (default os.environ); the process group itself is
    joined through torch's env:// rendezvous, which reads os.environ.
    """
    environ = os.environ if environ is None else environ
    world_size = world_size_from_env(environ)
    if world_size == 1 and not launched_by_torchrun(environ):
        return SINGLE_PROCESS
    missing = [name for name in ENV_VARIABLES if name not in environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start the "
                         "processes with torchrun (torchrun --nproc_per_node=N -m "
                         "stereo_depth_ros.tools.train ...)")
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed: train in one process")
    backend = backend_for(device.type)
    if not dist.is_initialized():
        options = {"backend": backend, "init_method": "env://",
                   "timeout": timedelta(minutes=timeout_minutes)}
        if device.type == "cuda":
            options["device_id"] = device
        dist.init_process_group(**options)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=local_rank_from_env(environ), backend=backend)


def shutdown(context: DistContext) -> None:
    """Leave the process group if this process joined one."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    """Wait for every process (no-op in one process)."""
    if context.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum `tensor` over all processes, in place; returns it (unchanged in one process)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(value, context: DistContext) -> list:
    """[value of rank 0, value of rank 1, ...] on every process ([value] in one process)."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(module: nn.Module, context: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DistributedDataParallel does this at the start of each training forward; after the last
    step of an epoch the replicas' running statistics differ until it is done again, so do it
    before validating or saving.
    """
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes), in state_dict
    order: equal fingerprints mean bit-identical replicas."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
