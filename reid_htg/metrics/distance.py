"""Distances between embedding sets."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("cosine", "euclidean")


def exact_rescale(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``xs`` times one power of two that brings their largest magnitude into [0.5, 1].

    Multiplying by a power of two rounds nothing (short of subnormals), so every
    distance ranking and every tie is that of the input, while squared norms of
    features as large as 1e20 (or as small as 1e-20) neither overflow nor
    underflow in float32.
    """
    tops = [float(x.abs().amax()) for x in xs if x.numel()]
    top = max(tops, default=0.0)
    if top == 0 or 0.5 <= top <= 1.0:
        return xs
    shift = torch.tensor(-int(np.ceil(np.log2(top))))
    return tuple(torch.ldexp(x, shift).to(x.dtype) for x in xs)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Distance matrix between the rows of ``x`` and ``y``.

    Args:
        x: (N, D) float tensor.
        y: (M, D) float tensor.
        metric: ``cosine`` (1 - cosine similarity, on L2-normalised rows) or
            ``euclidean`` (plain L2 distance, not squared).

    Returns:
        (N, M) float tensor.

    Examples:
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
