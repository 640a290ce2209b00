"""torch.distributed helpers for training under ``torchrun``: set-up, gradient averaging, broadcast, agreement checks.

Every function is a no-op (or the one-process answer) when no process group
is initialised, so callers need no ``if world > 1`` of their own.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from reid_htg.device import default_device


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device_arg: str | None = None) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; under ``torchrun`` (``WORLD_SIZE`` > 1) initialises the process group (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_arg != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        return dist.get_rank(), world, torch.device(f"cuda:{local}" if use_cuda else "cpu")
    return 0, 1, default_device(device_arg)


def average_grads(params) -> None:
    """Average the gradients of ``params`` over the processes (one all-reduce of their concatenation)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_(tensors, src: int = 0) -> None:
    """Copy ``tensors`` (parameters and buffers) from process ``src`` to every process, in place."""
    if not is_distributed():
        return
    for t in tensors:
        dist.broadcast(t.data, src)


def gather_objects(obj) -> list:
    """``obj`` of every process, by rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def weights_agree(modules) -> bool:
    """Do all processes hold the same weights in ``modules``? (sum and absolute sum of every parameter, compared)"""
    if not is_distributed():
        return True
    flat = torch.cat([p.detach().float().flatten() for m in modules for p in m.parameters()])
    sums = [torch.zeros(2) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, torch.stack([flat.sum(), flat.abs().sum()]).cpu())
    return all(torch.allclose(s, sums[0]) for s in sums)
