"""The training loop in every process under ``torchrun``: the process group, and rank 0's decisions shared.

Without torchrun (WORLD_SIZE unset or 1) every helper here is a no-op on a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from edgeseg.train.checkpoints import capture_rng


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
    )


def teardown_distributed(ddp: Distributed) -> None:
    """Wait for every rank (rank 0 finishes the run alone), then leave the process group."""
    if ddp.enabled:
        dist.barrier()
        dist.destroy_process_group()


def broadcast_flag(flag: bool, ddp: Distributed) -> bool:
    """Rank 0's decision, so every rank stops at the same step."""
    return bool(broadcast_int(int(flag), ddp))


def broadcast_int(value: int, ddp: Distributed) -> int:
    if not ddp.enabled:
        return value
    tensor = torch.tensor(
        [value],
        dtype=torch.int64,
        device=f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu",
    )
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def gather_rng(ddp: Distributed) -> list[dict[str, Any]]:
    """Every rank's RNG state (each augments differently), in rank order; every rank must call it."""
    mine = capture_rng()
    if not ddp.enabled:
        return [mine]
    states: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(states, mine)
    return states
