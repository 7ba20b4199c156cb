"""Which process am I: the one place that asks ``torch.distributed`` for the rank and world size.

Outside a process group (one process, no torchrun) the rank is 0 of a world of 1.
"""

from __future__ import annotations

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process in the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    """This process's rank (0 without a process group): rank 0 writes run folders and logs."""
    return rank_and_world()[0]
