"""Data-parallel fitting on several processes (``torchrun``): the process group and global batch sums.

``torchrun --nproc-per-node N -m umedprotect.cli fit ...`` starts N ranks; :func:`start_from_env` joins
them (gloo on CPU, nccl on CUDA, one GPU per local rank). Every rank draws the same global batch and
fits on its share; DistributedDataParallel averages the gradients. Batch-wide sums (the soft Dice's,
the visibility penalty's) go through :func:`global_sum`, so the loss is the one of the global batch
and the fit follows the single-process one (docs/scale.md gives the tolerance).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist

from .errors import InputError


def start_from_env(device: str) -> bool:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; whether this is a distributed run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is then this rank's GPU
    dist.init_process_group("nccl" if cuda else "gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    return True


def stop(wait_for_others: bool = True) -> None:
    """Leave the process group, if one was joined: after a normal end once every rank is here (a rank that tears
    gloo down while another still writes its output can abort it), after an error at once (a barrier could hang)."""
    if dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints and writes files."""
    return rank() == 0


def share(batch_size: int) -> slice:
    """This rank's rows of a global batch of ``batch_size``."""
    size = world_size()
    if batch_size % size:
        raise InputError(f"{batch_size} is not a multiple of the {size} processes", option="batch_size")
    per_rank = batch_size // size
    return slice(rank() * per_rank, (rank() + 1) * per_rank)


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, differentiably (itself in a single process)."""
    if not dist.is_initialized():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated for a functional collective that does not differentiate yet
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor)


def parallel(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel in a distributed run (itself otherwise)."""
    if not dist.is_initialized():
        return module
    device_ids = [torch.cuda.current_device()] if next(module.parameters()).is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
