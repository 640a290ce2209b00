"""Losses and the triplet miner: batch-hard and explicit triplet losses, identity cross-entropy, miners."""
from reid_htg.losses.miners import MINERS, mine_from_distances, mine_triplets
from reid_htg.losses.softmax import identity_cross_entropy
from reid_htg.losses.triplet import (
    batch_hard_triplet_loss,
    triplet_hinge,
    triplet_loss,
    triplet_stats,
)

__all__ = [
    "MINERS",
    "batch_hard_triplet_loss",
    "identity_cross_entropy",
    "mine_from_distances",
    "mine_triplets",
    "triplet_loss",
    "triplet_hinge",
    "triplet_stats",
]
