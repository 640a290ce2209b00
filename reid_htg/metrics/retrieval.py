"""Class-level retrieval metrics (CUB-200, Cars196, SOP style): Recall@K, MAP@R, NMI.

Every item is a query against all the others: the query itself is excluded
from its own results.
"""
from __future__ import annotations

import numpy as np
import torch

from reid_htg.metrics.distance import pairwise_distance


def _neighbours(x: torch.Tensor, k: int, metric: str, chunk_size: int) -> torch.Tensor:
    """(N, k) indices of each row's k nearest other rows, nearest first (ties by index)."""
    n = len(x)
    out = torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, chunk_size):
        d = pairwise_distance(x[s : s + chunk_size], x, metric)
        d[torch.arange(len(d)), torch.arange(s, s + len(d))] = float("inf")  # not its own neighbour
        # A stable sort of the k+1 smallest keeps the tie order deterministic.
        vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        order = torch.sort(vals, dim=1, stable=True).indices
        out[s : s + len(d)] = idx.gather(1, order)
    return out


def _prepare(embeddings, labels):
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings must be (N, D) with N labels; got {tuple(x.shape)} and {len(y)} labels")
    if len(x) < 2:
        raise ValueError("class-level retrieval needs at least 2 items")
    return x, y


def recall_at_k(embeddings, labels, ks=(1, 2, 4, 8), metric: str = "cosine", chunk_size: int = 1024) -> dict[int, float]:
    """Recall@K: the fraction of queries with a same-class item among their K nearest others.

    Args:
        embeddings: (N, D) features.
        labels: (N,) class labels.
        ks: the K values (explicit; each at most N - 1).
        metric: ``cosine`` or ``euclidean``.

    Returns:
        ``{K: recall}``.

    >>> recall_at_k([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]], [0, 1, 1, 0], ks=(1, 3))
    {1: 0.0, 3: 1.0}
    """
    x, y = _prepare(embeddings, labels)
    kmax = max(ks)
    if kmax > len(x) - 1:
        raise ValueError(f"Recall@{kmax} needs more than {kmax} items; got {len(x)}")
    nn = _neighbours(x, kmax, metric, chunk_size).numpy()
    hit = y[nn] == y[:, None]
    first = np.where(hit.any(1), hit.argmax(1), kmax)
    return {int(k): float((first < k).mean()) for k in ks}


def map_at_r(embeddings, labels, metric: str = "cosine", chunk_size: int = 1024) -> float:
    """MAP@R: mean over queries of the average precision within the first R results.

    R is the number of other items of the query's class. Queries whose class has
    no other item are skipped.

    Reference:
        Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020.

    >>> round(map_at_r([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]], [0, 0, 1, 1]), 6)
    1.0
    """
    x, y = _prepare(embeddings, labels)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    r = counts[inverse] - 1
    if r.max() == 0:
        raise ValueError("MAP@R needs at least one class with two or more items")
    rmax = int(r.max())
    nn = _neighbours(x, rmax, metric, chunk_size).numpy()
    hit = (y[nn] == y[:, None]) & (np.arange(rmax)[None, :] < r[:, None])
    prec = np.cumsum(hit, 1) / np.arange(1, rmax + 1)[None, :]
    ok = r > 0
    return float(((prec * hit).sum(1)[ok] / r[ok]).mean())


def nmi(embeddings, labels, seed: int = 0, n_init: int = 1) -> float:
    """Normalised mutual information between labels and a k-means clustering with k = number of classes.

    Args:
        embeddings: (N, D) features (L2-normalised before clustering).
        labels: (N,) class labels.
        seed: k-means seed (results depend on it; it is explicit).
        n_init: k-means restarts.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _prepare(embeddings, labels)
    x = torch.nn.functional.normalize(x, dim=1).numpy()
    k = len(np.unique(y))
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, pred))
