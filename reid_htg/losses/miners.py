"""Triplet miners on P x K batches: which (anchor, positive, negative) rows a triplet loss sees.

One miner serves every user: the batch-hard triplet loss of the embedding
network and HTG's generator and hard-triplet term (``reid_htg.htg``). A miner
returns index tensors ``(a, p, n)`` into the batch; the caller gathers the
rows (or the entries of its distance matrix), so gradients flow through the
caller's own computation.

Strategies (``MINERS``):

- ``batch_hard``: each anchor with its farthest positive and nearest negative
  (Hermans et al. 2017); one triplet per anchor that has both.
- ``batch_all``: every valid triplet in the batch.
- ``semi_hard``: for every (anchor, positive) pair, the nearest negative that
  is still farther from the anchor than the positive (FaceNet's semi-hard
  negatives, Schroff et al. 2015); pairs with no such negative are dropped.
  These triplets are not yet violated, which leaves a generator room to make
  them harder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MINERS = ("batch_hard", "batch_all", "semi_hard")
DISTANCES = ("euclidean", "sqeuclidean")


def triplet_distances(x: torch.Tensor, y: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """(N, M) distances between the rows of ``x`` (N, D) and ``y`` (M, D).

    ``euclidean`` keeps a finite gradient at zero (clamped before the square
    root); ``sqeuclidean`` is the squared Euclidean distance.

    Examples:
        >>> triplet_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])).item()
        5.0
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid names: {list(DISTANCES)}")
    d2 = ((x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp(min=1e-12)
    return d2.sqrt() if distance == "euclidean" else d2


def row_distance(x: torch.Tensor, y: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """(T,) distances between matching rows of ``x`` and ``y`` (T, D)."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid names: {list(DISTANCES)}")
    d2 = (x - y).pow(2).sum(1).clamp(min=1e-12)
    return d2.sqrt() if distance == "euclidean" else d2


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) boolean masks of positives (same label, not the anchor itself) and negatives."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _no_triplet(labels: torch.Tensor) -> ValueError:
    return ValueError(
        f"batch of {len(labels)} has no anchor with both a positive and a negative; "
        "sample P >= 2 identities with K >= 2 images each (PKSampler)"
    )


def mine_from_distances(d: torch.Tensor, labels: torch.Tensor, strategy: str = "batch_hard") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mine triplets from a (B, B) distance matrix.

    Args:
        d: (B, B) distances (any monotone distance; only the order matters).
        labels: (B,) identities.
        strategy: one of :data:`MINERS`.

    Returns:
        ``(a, p, n)``: (T,) long index tensors.

    Raises:
        ValueError: on an unknown strategy, or when the batch has no anchor with
            both a positive and a negative (never a silent empty loss).

    Examples:
        >>> d = torch.tensor([[0., 1., 2.], [1., 0., 3.], [2., 3., 0.]])
        >>> [t.tolist() for t in mine_from_distances(d, torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [2, 2]]
    """
    if strategy not in MINERS:
        raise ValueError(f"unknown triplet miner {strategy!r}; valid names: {list(MINERS)}")
    d = d.detach()
    pos, neg = pair_masks(labels)
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        raise _no_triplet(labels)
    if strategy == "batch_hard":
        a = torch.nonzero(valid).squeeze(1)
        p = d.masked_fill(~pos, float("-inf")).argmax(1)[a]
        n = d.masked_fill(~neg, float("inf")).argmin(1)[a]
        return a, p, n
    a, p = torch.nonzero(pos & valid[:, None], as_tuple=True)  # every (anchor, positive) pair
    if strategy == "batch_all":
        n_mask = neg[a]  # (pairs, B)
        rows, n = torch.nonzero(n_mask, as_tuple=True)
        return a[rows], p[rows], n
    # semi_hard: nearest negative with d(a, n) > d(a, p)
    d_an = d[a].masked_fill(~neg[a], float("inf"))  # (pairs, B)
    farther = d_an > d[a, p][:, None]
    cand = d_an.masked_fill(~farther, float("inf"))
    n = cand.argmin(1)
    keep = torch.isfinite(cand.gather(1, n[:, None]).squeeze(1))
    return a[keep], p[keep], n[keep]


def mine_triplets(
    embeddings: torch.Tensor, labels: torch.Tensor, strategy: str = "batch_hard", normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mine ``(a, p, n)`` index triplets from (B, D) embeddings (Euclidean order, L2-normalised first when ``normalize``)."""
    with torch.no_grad():
        x = F.normalize(embeddings.float(), dim=1) if normalize else embeddings.float()
        return mine_from_distances(triplet_distances(x, x), labels, strategy)


def active_fraction_all(d: torch.Tensor, labels: torch.Tensor, margin: float | None) -> float:
    """Fraction of *all* valid triplets in a batch that are active: ``d(a, p) - d(a, n) + margin > 0`` (margin 0 for soft margin).

    This is what tells whether the embedding has met its margin: batch-hard
    triplets stay active long after most triplets are satisfied.
    """
    with torch.no_grad():
        pos, neg = pair_masks(labels)
        d = d.detach()
        viol = d[:, :, None] - d[:, None, :] + (margin or 0.0) > 0  # [a, p, n]
        valid = pos[:, :, None] & neg[:, None, :]
        total = int(valid.sum())
        return float((viol & valid).sum()) / total if total else float("nan")
