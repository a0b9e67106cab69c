"""Mini-batches straight from tensors: no per-example Python, no collate.

``TensorBatches`` is what the supervised stages (MF, GeMS) feed to Lightning: each epoch
draws one permutation (seeded per epoch) and yields dicts of index-selected slices. Data may
live on the GPU, in which case batches never cross the bus.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor


class TensorBatches:
    """Iterate over aligned tensors in mini-batches (optionally shuffled, seeded per epoch)."""

    def __init__(
        self, tensors: Mapping[str, Tensor], batch_size: int, shuffle: bool = True, seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        sizes = {k: t.shape[0] for k, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors have different lengths: {sizes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = dict(tensors)
        self.size = next(iter(sizes.values()))
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.batch_size
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        device = next(iter(self.tensors.values())).device
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).to(device)
        else:
            order = torch.arange(self.size, device=device)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield {k: t[idx] for k, t in self.tensors.items()}
