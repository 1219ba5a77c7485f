"""Distributed data parallel under ``torchrun``: one process per device, gloo on CPU, NCCL on GPU.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the
trainer joins the process group, wraps the model in DDP and shards every epoch by rank.
Without them everything here is a no-op for a single process.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import MissingDependency, UserError

__all__ = ["DistEnv", "init_distributed", "cleanup_distributed", "all_reduce_sum", "broadcast_buffers", "barrier",
           "pick_device"]


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: Optional[str] = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; ``cuda`` without CUDA is a one-line error."""
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not re.fullmatch(r"cuda:[0-9]+", name):
        raise UserError(f"unknown --device {name!r} (cpu, cuda, cuda:N or auto)")
    if not torch.cuda.is_available():
        raise MissingDependency(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    index = local_rank if name == "cuda" else int(name[5:])
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def env_world() -> DistEnv:
    """What torchrun's variables say, before any process group exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return DistEnv(rank, world, local_rank, local_world)


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistEnv:
    """Join torchrun's process group when there is one; pick this process's device."""
    env = env_world()
    env.device = pick_device(device, env.local_rank)
    if not env.distributed:
        return env
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    env.backend = "nccl" if env.device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {}
        if env.device.type == "cuda":
            kwargs["device_id"] = env.device  # binds NCCL to this device at once (torch >= 2.3)
        dist.init_process_group(env.backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return env


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank 0's buffers (BN running statistics), so evaluation on any rank
    measures exactly the model that rank 0 saves."""
    if dist.is_available() and dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, src)
