"""Losses: batch-hard and explicit triplet losses, identity cross-entropy."""
from reid_htg.losses.softmax import IdentityLoss, identity_cross_entropy
from reid_htg.losses.triplet import BatchHardTripletLoss, batch_hard_triplet_loss, triplet_loss, triplet_margin, triplet_stats

LOSSES = {"triplet": BatchHardTripletLoss, "softmax": IdentityLoss}


def build_loss(name: str, **kwargs):
    """A loss module by name; the error lists the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)


__all__ = [
    "BatchHardTripletLoss",
    "IdentityLoss",
    "LOSSES",
    "batch_hard_triplet_loss",
    "build_loss",
    "identity_cross_entropy",
    "triplet_loss",
    "triplet_margin",
    "triplet_stats",
]
