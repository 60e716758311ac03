"""torchrun support for extraction: rank/world from the environment, a gloo/nccl group, and
the few collectives the runner needs (error broadcast, barrier, sums).

Ranks never write the same region: each takes the cache parts with ``index % world == rank``
(``CacheWriter.pending``), so no locking is needed; rank 0 finalizes after a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False   # we created the process group, so we destroy it
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def broadcast_error(self, message: str | None) -> str | None:
        """Rank 0's error message (or None) on every rank, so nobody waits on a dead peer."""
        if not self.active:
            return message
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized_here = False


def init_distributed(device: str) -> DistContext:
    """Join the torchrun group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    created = False
    if not dist.is_initialized():
        if backend == "nccl":
            import torch

            torch.cuda.set_device(local_rank)
        # generous timeout: ranks wait at the final barrier for the slowest rank's last part
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
        created = True
    else:
        backend = dist.get_backend()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank,
                       initialized_here=created, backend=backend)
