"""Data-parallel training under `torchrun`: process-group set-up and the few collectives the trainer needs.

`torchrun --nproc_per_node=N -m condgen.cli train RECIPE` starts N processes
and sets RANK, LOCAL_RANK and WORLD_SIZE in each. Without torchrun
WORLD_SIZE is unset and everything here is a no-op for a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from condgen.errors import CondgenError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: `rank` of `world_size`, `local_rank` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes checkpoints, logs files and TensorBoard events."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise CondgenError(f"environment variable {name}={text!r} is not an integer; it is set by torchrun, so start the job with torchrun or unset it") from None


def context_from_env() -> Distributed:
    """Read RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a single process when they are unset."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise CondgenError(f"RANK={rank} and WORLD_SIZE={world_size} are inconsistent; start the job with torchrun")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


def setup(context: Distributed, device: torch.device) -> torch.device:
    """Join the process group (nccl on CUDA, gloo on the CPU) and return this rank's device.

    On CUDA each process takes the GPU of its local rank, so `train.device`
    `cuda` (or `auto`) means "one GPU per process".
    """
    if not context.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined the %s process group on %s", context.rank, context.world_size, backend, device)
    return device


def teardown(context: Distributed) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Distributed) -> None:
    if context.enabled:
        dist.barrier()


def max_across_ranks(context: Distributed, values: list[float], device: torch.device) -> list[float]:
    """Return the element-wise maximum of `values` over all ranks, so that every rank takes the same decision."""
    if not context.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()
