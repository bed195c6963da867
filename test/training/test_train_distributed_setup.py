"""stereo_depth_train under torchrun, without training: the process group comes from torchrun's
environment only (none without it, Gloo with one process, clear errors for broken variables),
and the option combinations refused under it (--sync-bn on the CPU, a --device other than
cuda:LOCAL_RANK, a global batch that does not split). The data-parallel runs themselves:
test_train_distributed.py."""

from __future__ import annotations

import pytest
import torch
from helpers.process import assert_clean_exit
from helpers.training import TINY

from stereo_depth_ros.tools import train


def test_sync_bn_on_the_cpu_under_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    assert train.main([*TINY, "--sync-bn", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--sync-bn needs CUDA" in err
    assert_clean_exit(err)
    assert train.main([*TINY, "--device", "cuda:1", "--out", str(tmp_path)]) == 1
    assert "--device cuda:1: under torchrun every process uses cuda:LOCAL_RANK" in (
        capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_a_global_batch_that_does_not_split_is_refused(tmp_path, capsys):
    assert train.main([*TINY, "--batch-size", "3", "--accumulate", "2", "--count", "8",
                       "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--batch-size 3 must be a multiple of processes x --accumulate = 1 x 2 = 2" in err


def test_process_group_comes_from_torchrun_environment_only(monkeypatch):
    """No torchrun variables (or only WORLD_SIZE=1): no process group, one process as before.
    torchrun's variables with one process: a one-process Gloo group (NCCL on CUDA), so one GPU
    under torchrun runs the DistributedDataParallel path. Broken variables: a clear error."""
    import socket

    import torch.distributed as dist

    from stereo_depth_ros.training import distributed

    cpu = torch.device("cpu")
    assert distributed.init_from_env(cpu, environ={}) is distributed.SINGLE_PROCESS
    assert distributed.init_from_env(cpu, environ={"WORLD_SIZE": "1"}).enabled is False
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but MASTER_ADDR, MASTER_PORT not set"):
        distributed.init_from_env(cpu, environ={"WORLD_SIZE": "2", "RANK": "0",
                                                "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        distributed.world_size_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="LOCAL_RANK='x' is not an integer"):
        distributed.local_rank_from_env({"LOCAL_RANK": "x"})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        monkeypatch.setenv(name, value)              # env:// reads os.environ itself
    context = distributed.init_from_env(cpu)
    try:
        assert (context.enabled, context.backend, context.world_size) == (True, "gloo", 1)
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert float(distributed.all_reduce_sum(torch.ones(1), context)) == 1.0
    finally:
        distributed.shutdown(context)
    assert not dist.is_initialized()
