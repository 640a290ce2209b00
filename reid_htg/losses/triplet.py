"""Triplet losses: batch-hard on P x K batches, and on explicit (anchor, positive, negative) triplets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from reid_htg.losses.miners import (
    active_fraction_all,
    mine_from_distances,
    row_distance,
    triplet_distances,
)


def triplet_hinge(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Per-triplet loss: ``relu(d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` when ``margin`` is None."""
    return F.softplus(d_ap - d_an) if margin is None else F.relu(d_ap - d_an + margin)


def triplet_stats(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float | None) -> dict[str, float]:
    """Fraction of active triplets (non-zero hinge; d_ap > d_an for soft margin) and mean gap d_an - d_ap."""
    gap = (d_an - d_ap).detach()
    active = gap < (margin if margin is not None else 0.0)
    return {"active": float(active.float().mean()), "gap": float(gap.mean())}


def batch_hard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float | None = 0.3,
    normalize: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-hard triplet loss: each anchor with its farthest positive and nearest negative.

    Args:
        embeddings: (B, D).
        labels: (B,) identities.
        margin: hinge margin, or None for the soft margin ``log(1 + exp(d_ap - d_an))``.
        normalize: L2-normalise the embeddings first.

    Returns:
        The mean loss over anchors that have both a positive and a negative,
        and statistics: ``active`` and ``gap`` of the batch-hard triplets,
        ``anchors``, and ``active_all``, the active fraction over every valid
        triplet of the batch (batch-all).

    Raises:
        ValueError: when no anchor has both (a batch without K >= 2 images of an
            identity, or with a single identity): never a silent zero.

    Reference:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person
        Re-Identification", arXiv 2017.
    """
    x = F.normalize(embeddings.float(), dim=1) if normalize else embeddings.float()
    d = triplet_distances(x, x)
    a, p, n = mine_from_distances(d, labels, "batch_hard")
    d_ap, d_an = d[a, p], d[a, n]
    stats = triplet_stats(d_ap, d_an, margin)
    stats["anchors"] = len(a)
    stats["active_all"] = active_fraction_all(d, labels, margin)
    return triplet_hinge(d_ap, d_an, margin).mean(), stats


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float | None = 0.3,
    normalize: bool = True,
    distance: str = "euclidean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Triplet loss on explicit triplets (rows of three (T, D) tensors), with the same statistics.

    ``distance``: ``euclidean`` or ``sqeuclidean`` (HTG's reading of the paper:
    squared Euclidean on L2-normalised features, with a margin of its own).
    """
    if len(anchor) == 0:
        raise ValueError("triplet_loss got no triplets")
    if normalize:
        anchor, positive, negative = (F.normalize(t.float(), dim=1) for t in (anchor, positive, negative))
    d_ap, d_an = row_distance(anchor, positive, distance), row_distance(anchor, negative, distance)
    return triplet_hinge(d_ap, d_an, margin).mean(), triplet_stats(d_ap, d_an, margin)
