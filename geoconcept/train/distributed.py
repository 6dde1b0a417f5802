"""torchrun / DDP support: one process per device, gloo on CPU, NCCL on GPUs.

Launched by `torchrun --nproc_per_node N -m geoconcept.train ...`, each process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment. Every rank computes the same global batch order
(same seed, from row counts alone) and reads the features of its own slice only; it pushes the
whole global batch into its GPS queue, so the queues stay identical without communication. The
losses gather the other ranks' batch locations and concept vectors with gradients and are scaled
so that DDP's averaged gradient is the single-process gradient over the global batch (see
geoconcept.model.losses): N processes at batch B/N train the same model as one at batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from geoconcept.model.losses import Ranks


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def ranks(self) -> Ranks:
        return Ranks(self.rank, self.world_size)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(0, 1, 0, resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, target)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def mean_across_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if not info.enabled:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64)
    dist.all_reduce(t)
    return {n: v / info.world_size for n, v in zip(names, t.tolist(), strict=True)}


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
