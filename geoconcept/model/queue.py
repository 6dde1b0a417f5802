"""GeoCLIP's dynamic GPS queue: recent training coordinates, re-encoded each step as extra negatives.

Unlike GeoCLIP's, it works for any batch size (a batch larger than the queue keeps its last
`size` points; a batch that runs past the end wraps around), and it only hands out slots that
hold real coordinates (GeoCLIP starts from random unit vectors read as degrees).
"""

from __future__ import annotations

import torch
from torch import nn


class GPSQueue(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 0:
            raise ValueError("queue size must be >= 0")
        self.size = size
        self.register_buffer("coords", torch.zeros(size, 2))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots

    @torch.no_grad()
    def push(self, latlon: torch.Tensor) -> None:
        """Enqueue a batch of (lat, lon), overwriting the oldest entries (FIFO)."""
        n = latlon.shape[0]
        if self.size == 0 or n == 0:
            return
        if n >= self.size:
            self.coords.copy_(latlon[-self.size :])
            self.ptr.zero_()
            self.count.fill_(self.size)
            return
        slots = (int(self.ptr) + torch.arange(n)) % self.size
        self.coords[slots] = latlon.to(self.coords.dtype)
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def entries(self) -> torch.Tensor:
        """The filled entries, (count, 2), in slot order (a copy: pushing later does not change it)."""
        return self.coords[: int(self.count)].clone()

    def oldest_first(self) -> torch.Tensor:
        """The filled entries from oldest to newest (for inspection and tests)."""
        if int(self.count) < self.size:
            return self.entries()
        return torch.roll(self.coords, -int(self.ptr), dims=0).clone()
