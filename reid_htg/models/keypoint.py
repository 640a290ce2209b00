"""Keypoint blocks: density-weighted local features from a backbone block (HTG's embedding network)."""
from __future__ import annotations

import torch
from torch import nn


class KeypointBlock(nn.Module):
    """Map a feature map X (B, C, H, W) to C keypoint densities and pool X with them.

    A side branch with the structure of a residual bottleneck block (1x1, 3x3,
    1x1 convolutions with BatchNorm, plus the identity) turns X into a keypoint
    map K of the same shape. A softmax over the H x W positions of each channel
    turns channel c of K into a density P_c ("where is keypoint type c"), and
    the local feature is f[c] = sum_ij P_c(i, j) X[c, i, j].

    Our reading of the paper: the density of channel c pools channel c of X
    (one keypoint type per channel), and the branch ends without a ReLU so that
    K can be negative (a softmax needs no positive input).

    Args:
        channels: C.
        reduction: bottleneck width is C // reduction.
        temperature: softmax temperature (1 = plain softmax).

    Reference:
        Zhao et al., "An Adversarial Approach to Hard Triplet Generation", ECCV 2018.
    """

    def __init__(self, channels: int, reduction: int = 4, temperature: float = 1.0):
        super().__init__()
        mid = max(channels // reduction, 8)
        self.branch = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.temperature = temperature

    def densities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) keypoint densities, each channel summing to 1 over positions."""
        k = x + self.branch(x)
        b, c, h, w = k.shape
        return torch.softmax(k.float().view(b, c, h * w) / self.temperature, dim=2).view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) density-weighted local feature."""
        p = self.densities(x)
        return (p * x.float()).sum(dim=(2, 3)).to(x.dtype)
