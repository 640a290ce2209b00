"""Distances between embedding sets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("cosine", "euclidean")


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Distance matrix between the rows of ``x`` and ``y``.

    Args:
        x: (N, D) float tensor.
        y: (M, D) float tensor.
        metric: ``cosine`` (1 - cosine similarity, on L2-normalised rows) or
            ``euclidean`` (plain L2 distance, not squared).

    Returns:
        (N, M) float tensor.

    >>> d = pairwise_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    >>> d.tolist()
    [[1.0, 0.0]]
    """
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    if metric == "euclidean":
        xx = (x * x).sum(1, keepdim=True)
        yy = (y * y).sum(1)
        d2 = torch.addmm(xx + yy, x, y.T, beta=1.0, alpha=-2.0)
        return d2.clamp_(min=0).sqrt_()
    raise ValueError(f"unknown metric {metric!r}; use one of {list(METRICS)}")
