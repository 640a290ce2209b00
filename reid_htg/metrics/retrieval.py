"""Class-level retrieval metrics (CUB-200, Cars196, SOP style): Recall@K, MAP@R, NMI.

Every item is a query against all the others: the query itself is excluded
from its own results. Ties in distance are ranked by item index (a stable
sort), the same convention as the re-ID evaluator, so duplicate vectors give
well-defined results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reid_htg.metrics.distance import exact_rescale, pairwise_distance


def _neighbours(x: torch.Tensor, k: int, metric: str, chunk_size: int) -> torch.Tensor:
    """(N, k) indices of each row's k nearest other rows, nearest first (ties by index)."""
    n = len(x)
    out = torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, chunk_size):
        d = pairwise_distance(x[s : s + chunk_size], x, metric)
        rows = torch.arange(len(d))
        d[rows, rows + s] = float("inf")  # not its own neighbour
        order = torch.sort(d, dim=1, stable=True).indices  # ties by index: exact, also at the k-th place
        out[s : s + len(d)] = order[:, :k]
    return out


def _prepare(embeddings, labels):
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings must be (N, D) with N labels; got {tuple(x.shape)} and {len(y)} labels")
    if len(x) < 2:
        raise ValueError("class-level retrieval needs at least 2 items")
    if not torch.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; check the model or the features file")
    (x,) = exact_rescale(x)  # the same ranks and ties, no overflow for huge features
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

    Examples:
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

    Examples:
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


RECALL_KS = (1, 2, 4, 8)


@dataclass
class ClassLevelResult:
    """What :func:`evaluate_class_level` returns; metrics are fractions in [0, 1]."""

    recall: dict  # {K: Recall@K}
    map_at_r: float
    nmi: float
    num_query: int
    num_classes: int
    num_single: int  # items whose class has no other item (no possible match)

    def as_dict(self) -> dict:
        out = {f"recall@{k}": v for k, v in self.recall.items()}
        out.update({"map@r": self.map_at_r, "nmi": self.nmi, "num_query": self.num_query, "num_classes": self.num_classes,
                    "num_single": self.num_single, "protocol": "class-level"})
        return out

    def format(self) -> str:
        lines = [f"Recall@{k:<4} {100 * v:6.2f}%" for k, v in self.recall.items()]
        lines += [f"MAP@R       {100 * self.map_at_r:6.2f}%", f"NMI         {100 * self.nmi:6.2f}%",
                  f"queries     {self.num_query} (every test image against all the others)", f"classes     {self.num_classes}"]
        if self.num_single:
            lines.append(f"note        {self.num_single} image(s) alone in their class: no possible match (they count as misses)")
        return "\n".join(lines)


def evaluate_class_level(embeddings, labels, ks=RECALL_KS, metric: str = "cosine", nmi_seed: int = 0) -> ClassLevelResult:
    """Recall@K (query excluded), MAP@R and NMI (k-means, k = number of classes, seeded) of one set of test embeddings.

    Args:
        embeddings: (N, D) features of the test images.
        labels: (N,) classes.
        ks: Recall@K values; those above N - 1 are left out.
        metric: ``cosine`` or ``euclidean``.
        nmi_seed: the k-means seed.
    """
    x, y = _prepare(embeddings, labels)
    ks = tuple(k for k in ks if k <= len(x) - 1)
    _, counts = np.unique(y, return_counts=True)
    return ClassLevelResult(
        recall=recall_at_k(x, y, ks, metric), map_at_r=map_at_r(x, y, metric), nmi=nmi(x, y, seed=nmi_seed),
        num_query=len(x), num_classes=len(counts), num_single=int((counts == 1).sum()),
    )


def class_level_reference(embeddings, labels, ks=RECALL_KS, metric: str = "cosine") -> dict:
    """Recall@K and MAP@R from a per-query loop with a full stable argsort of the same distances (the tests' reference)."""
    x, y = _prepare(embeddings, labels)
    dist = pairwise_distance(x, x, metric).numpy()
    recalls, aps = {k: [] for k in ks}, []
    for i in range(len(x)):
        d = dist[i]
        order = [j for j in np.argsort(d, kind="stable") if j != i]
        hits = [y[j] == y[i] for j in order]
        for k in ks:
            recalls[k].append(any(hits[:k]))
        r = int((y == y[i]).sum()) - 1
        if r > 0:
            aps.append(sum(np.mean(hits[: j + 1]) for j in range(r) if hits[j]) / r)
    return {**{f"recall@{k}": float(np.mean(v)) for k, v in recalls.items()}, "map@r": float(np.mean(aps))}
