"""Triplet losses: batch-hard on P x K batches, and on explicit (anchor, positive, negative) triplets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances with a gradient that stays finite at zero."""
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return d2.clamp(min=1e-12).sqrt()


def triplet_margin(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float | None) -> torch.Tensor:
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
        and ``{"active", "gap", "anchors"}`` statistics.

    Raises:
        ValueError: when no anchor has both (a batch without K >= 2 images of an
            identity, or with a single identity): never a silent zero.

    Reference:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person
        Re-Identification", arXiv 2017.
    """
    if normalize:
        embeddings = F.normalize(embeddings.float(), dim=1)
    d = _distances(embeddings.float(), embeddings.float())
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        raise ValueError(
            f"batch of {len(labels)} has no anchor with both a positive and a negative; "
            "sample P >= 2 identities with K >= 2 images each (PKSampler)"
        )
    d_ap = d.masked_fill(~pos_mask, float("-inf")).amax(1)[valid]
    d_an = d.masked_fill(~neg_mask, float("inf")).amin(1)[valid]
    stats = triplet_stats(d_ap, d_an, margin)
    stats["anchors"] = int(valid.sum())
    return triplet_margin(d_ap, d_an, margin).mean(), stats


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float | None = 0.3, normalize: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """Triplet loss on explicit triplets (rows of three (T, D) tensors), with the same statistics."""
    if len(anchor) == 0:
        raise ValueError("triplet_loss got no triplets")
    if normalize:
        anchor, positive, negative = (F.normalize(t.float(), dim=1) for t in (anchor, positive, negative))
    d_ap = (anchor - positive).pow(2).sum(1).clamp(min=1e-12).sqrt()
    d_an = (anchor - negative).pow(2).sum(1).clamp(min=1e-12).sqrt()
    return triplet_margin(d_ap, d_an, margin).mean(), triplet_stats(d_ap, d_an, margin)


class BatchHardTripletLoss(nn.Module):
    """Module wrapper of :func:`batch_hard_triplet_loss`; the last batch's statistics are in ``.stats``."""

    def __init__(self, margin: float | None = 0.3, normalize: bool = True):
        super().__init__()
        self.margin, self.normalize = margin, normalize
        self.stats: dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, self.stats = batch_hard_triplet_loss(embeddings, labels, self.margin, self.normalize)
        return loss
