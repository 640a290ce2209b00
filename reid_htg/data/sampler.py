"""P x K identity sampling for batch-hard triplet training."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


class PKSampler(torch.utils.data.Sampler):
    """Batches of P identities x K images each, seeded, split across processes.

    Each epoch, every identity's images are shuffled and cut into groups of K
    (an identity with fewer than K images, or a remainder, is filled by
    sampling its own images again). An epoch has
    ``max(most groups of one identity, ceil(all groups / P))`` batches, the
    same every epoch (the learning-rate schedule reads ``len(sampler)``);
    each batch takes P distinct identities, first those whose groups would
    not fit in the batches left, then others drawn with probability
    proportional to their groups left, and tops up with a fresh group of an
    identity already used up when fewer than P have groups left. So an epoch
    visits about every image once even when a few identities hold most of the
    images (data with 100 identities of 4 images and 10 of 100). Under
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        labs = sorted(self.index)
        groups: dict[int, list[list[int]]] = {}
        for lab in labs:
            idx = rng.permutation(self.index[lab]).tolist()
            short = (-len(idx)) % self.k
            idx += rng.choice(self.index[lab], short, replace=True).tolist()
            groups[lab] = [idx[i : i + self.k] for i in range(0, len(idx), self.k)]
        n_batches = self.num_batches()
        batches = []
        for b in range(n_batches):
            left = np.array([len(groups[lab]) for lab in labs])
            must = np.flatnonzero(left >= n_batches - b)  # would not fit in the batches left otherwise
            chosen = list(rng.permutation(must)[: self.p])
            cands = np.setdiff1d(np.flatnonzero(left > 0), chosen)
            n = min(self.p - len(chosen), len(cands))
            if n > 0:
                chosen += list(rng.choice(cands, n, replace=False, p=left[cands] / left[cands].sum()))
            if len(chosen) < self.p:  # fewer than P identities have groups left: fresh groups of used-up ones
                spent = np.setdiff1d(np.arange(len(labs)), chosen)
                chosen += list(rng.choice(spent, self.p - len(chosen), replace=False))
            batch = []
            for c in chosen:
                lab = labs[c]
                batch += groups[lab].pop() if groups[lab] else rng.choice(self.index[lab], self.k, replace=len(self.index[lab]) < self.k).tolist()
            batches.append(batch)
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable][self.rank :: self.world_size]

    def num_batches(self) -> int:
        """Batches in one epoch over all processes (before the split): the same every epoch."""
        counts = [-(-len(v) // self.k) for v in self.index.values()]
        return max(max(counts), -(-sum(counts) // self.p))

    def __iter__(self):
        return iter(self._epoch_batches())

    def __len__(self) -> int:
        n = self.num_batches()
        return (n - n % self.world_size) // self.world_size
