"""The data stream: which item each rank and micro-batch trains on, as a pure function of the step.

Item positions run 0, 1, 2, ... over the whole run; position p is item perm_e[p mod N] of epoch
e = p // N, perm_e a seeded shuffle. Optimizer step s covers positions [s·G, (s+1)·G), G = batch ×
grad_accum × world, split first by micro-batch then by rank. So 1 process with batch B equals 2
processes with B/2, and 2 micro-batches of B/2 equal one of B, item for item; and resuming needs only
the step number.
"""

from __future__ import annotations

import numpy as np


class ItemStream:
    def __init__(self, num_items: int, seed: int, shuffle: bool = True):
        if num_items <= 0:
            raise ValueError("the dataset is empty")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self._perm_epoch, self._perm = -1, None

    def item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._perm_epoch = epoch
        return int(self._perm[offset])


def micro_positions(step: int, micro: int, *, batch_size: int, grad_accum: int, world: int, rank: int) -> list[int]:
    """Stream positions of the given 0-based optimizer step, micro-batch and rank."""
    global_batch = batch_size * grad_accum * world
    start = step * global_batch + (micro * world + rank) * batch_size
    return list(range(start, start + batch_size))
