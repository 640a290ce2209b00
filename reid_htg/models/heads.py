"""Identity classifier heads: biasless linear (optionally cosine) logits, behind a BNNeck."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNNeck(nn.BatchNorm1d):
    """BatchNorm before the classifier, with a frozen zero bias (Luo et al., "Bag of Tricks", CVPRW 2019)."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.bias.requires_grad_(False)
        nn.init.constant_(self.weight, 1.0)
        nn.init.constant_(self.bias, 0.0)


class BiaslessClassifier(nn.Module):
    """Identity logits W f with no bias: decision boundaries pass through the origin.

    After L2 normalisation the classes occupy cones around the origin, which
    fits distance-based losses (HTG's "biasless softmax"). With ``cosine=True``
    the logits are ``scale * cos(W_k, f)`` instead.

    Args:
        dim: feature size.
        num_classes: K.
        cosine: cosine logits.
        scale: logit scale for cosine logits.
    """

    def __init__(self, dim: int, num_classes: int, cosine: bool = False, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.001)
        self.cosine, self.scale = cosine, scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return self.scale * F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1))
        return F.linear(f, self.weight)
