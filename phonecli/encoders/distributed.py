"""torchrun support for extraction and fine-tuning: rank/world from the environment, a gloo/nccl
group, and the few collectives the runners need (error broadcast, barrier, sums).

Ranks never write the same region: each takes the cache parts with ``index % world == rank``
(``CacheWriter.pending``), so no locking is needed; rank 0 finalizes after a barrier. The same
holds across machines (``torchrun --nnodes N``): only the store must be reachable from every node.

Backend choice: extraction's collectives carry a few Python objects and floats (an error line,
three sums, barriers), never model tensors, so extraction asks for gloo on every device: it needs
only the TCP connectivity torchrun's rendezvous needs anyway, while NCCL would need a working
GPU-to-GPU transport between the nodes (InfiniBand/sockets configuration) and a communicator on
every GPU for nothing. Fine-tuning (DDP gradients) uses NCCL on CUDA, bound to this rank's GPU
(``device_id``) so that barriers know their device instead of guessing it.
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


def init_distributed(device: str, backend: str | None = None) -> DistContext:
    """Join the torchrun group when ``WORLD_SIZE > 1``.

    ``backend``: ``"gloo"`` or ``"nccl"``; default nccl on CUDA, gloo on CPU (see the module
    docstring for why extraction passes gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
    created = False
    if not dist.is_initialized():
        kwargs = {}
        if backend == "nccl":
            import torch

            torch.cuda.set_device(local_rank)
            kwargs["device_id"] = torch.device("cuda", local_rank)
        # generous timeout: ranks wait at the final barrier for the slowest rank's last part
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2), **kwargs)
        created = True
    else:
        backend = dist.get_backend()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank,
                       initialized_here=created, backend=backend)
