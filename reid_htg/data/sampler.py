"""P x K identity sampling for batch-hard triplet training."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


class PKSampler(torch.utils.data.Sampler):
    """Batches of P identities x K images each, seeded, split across processes.

    Each epoch, every identity's images are shuffled and cut into groups of K
    (an identity with fewer than K images, or a remainder, is filled by
    sampling its own images again); batches draw P distinct identities from
    those with groups left, so an epoch covers about every image once. Under
    distributed training every process builds the same epoch from the same
    seed and takes every ``world_size``-th batch, so the processes see disjoint
    batches and the same number of them.

    Args:
        labels: (N,) identity of each dataset index.
        p: identities per batch (P >= 2).
        k: images per identity (K >= 2 for triplets to have positives).
        seed: base seed; the epoch is mixed in (call :meth:`set_epoch`).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, labels, p: int, k: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels)
        if p < 2 or k < 1:
            raise ValueError(f"PKSampler needs P >= 2 and K >= 1, got P={p}, K={k}")
        self.index = defaultdict(list)
        for i, lab in enumerate(labels.tolist()):
            self.index[lab].append(i)
        if len(self.index) < p:
            raise ValueError(f"PKSampler: P={p} identities per batch but the data has only {len(self.index)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.epoch = 0
        self._len = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[int, list[list[int]]] = {}
        for lab in sorted(self.index):
            idx = rng.permutation(self.index[lab]).tolist()
            short = (-len(idx)) % self.k
            idx += rng.choice(self.index[lab], short, replace=True).tolist()
            groups[lab] = [idx[i : i + self.k] for i in range(0, len(idx), self.k)]
        batches = []
        avail = sorted(groups)
        while len(avail) >= self.p:
            chosen = rng.choice(len(avail), self.p, replace=False)
            batch = []
            for c in chosen:
                batch += groups[avail[c]].pop()
            batches.append(batch)
            avail = [lab for lab in avail if groups[lab]]
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable][self.rank :: self.world_size]

    def __iter__(self):
        batches = self._epoch_batches()
        self._len = len(batches)
        return iter(batches)

    def __len__(self) -> int:
        if self._len is None:
            self._len = len(self._epoch_batches())
        return self._len
