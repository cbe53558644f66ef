"""Multi-process training under ``torchrun``: read its environment, set up and tear down the group.

``torchrun --nproc_per_node N tools/train.py ...`` (one node) or
``torchrun --nnodes M --node_rank R --rdzv_endpoint HOST:PORT ...`` (several) starts one process per
GPU and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. A plain
``python tools/train.py`` has none of them and runs as a single process (world size 1, no process
group). There is no home-made launcher.

Backend: NCCL when the device is CUDA, gloo on CPU (used by the tests: two CPU processes). Each
process uses ``cuda:LOCAL_RANK``. Only rank 0 logs, writes checkpoints, TensorBoard and pictures
(:attr:`DistInfo.is_main`).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistInfo",
    "read_dist_env",
    "init_distributed",
    "cleanup_distributed",
    "barrier",
    "all_reduce_sum",
    "broadcast_object",
]

logger = logging.getLogger(__name__)

#: How long a collective may wait for the slowest rank before the run fails with an error.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def read_dist_env(env: dict[str, str] | None = None) -> DistInfo:
    """``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` as set by torchrun (absent: a single process).

    Raises:
        ValueError: inconsistent values (rank outside the world, non-integers).
    """
    env = dict(os.environ) if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(
            f"inconsistent torchrun environment: RANK={rank} LOCAL_RANK={local} WORLD_SIZE={world}")
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group when ``info.distributed`` (NCCL on CUDA, gloo on CPU); no-op otherwise."""
    if not info.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                            timeout=COLLECTIVE_TIMEOUT, **kwargs)
    logger.info("process group: backend %s, rank %d of %d (local rank %d)", backend, info.rank,
                info.world_size, info.local_rank)


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """In-place sum over ranks (no-op without a process group); returns ``tensor``."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s Python object on every rank (the object itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

