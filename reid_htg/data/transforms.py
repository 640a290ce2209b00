"""Batch augmentation on the training device: flip, pad-and-crop, random erasing, normalisation.

Working on whole uint8 batches where the model runs (GPU or CPU) keeps the
input pipeline out of the way: no per-image Python, no PIL at training time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


def augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    flip: bool = True,
    pad: int = 4,
    erasing: float = 0.5,
    erasing_area: tuple[float, float] = (0.02, 0.4),
    erasing_ratio: float = 0.3,
) -> torch.Tensor:
    """Augment a uint8 batch and return it normalised.

    Args:
        x: (B, 3, H, W) uint8.
        generator: a generator on ``x``'s device, for reproducible draws.
        flip: random horizontal flip with probability 1/2.
        pad: zero-pad by this many pixels and crop back at a random offset.
        erasing: probability of random erasing (Zhong et al., AAAI 2020), filled with zeros after normalisation.
        erasing_area: range of the erased fraction of the image.
        erasing_ratio: aspect ratios drawn log-uniformly in [r, 1/r].
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=dev)

    out = normalize(x)
    if flip:
        mask = (rand(b) < 0.5).view(b, 1, 1, 1)
        out = torch.where(mask, out.flip(3), out)
    if pad > 0:
        padded = F.pad(out, (pad, pad, pad, pad))
        oy = (rand(b) * (2 * pad + 1)).long()
        ox = (rand(b) * (2 * pad + 1)).long()
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        out = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(3, device=dev)[None, :, None, None], rows, cols]
    if erasing > 0:
        area = (erasing_area[0] + rand(b) * (erasing_area[1] - erasing_area[0])) * h * w
        log_r = math.log(erasing_ratio)
        ratio = torch.exp(log_r + rand(b) * (-2 * log_r))
        eh = torch.sqrt(area * ratio).clamp(max=h).long()
        ew = torch.sqrt(area / ratio).clamp(max=w).long()
        y0 = (rand(b) * (h - eh + 1).float()).long()
        x0 = (rand(b) * (w - ew + 1).float()).long()
        yy = torch.arange(h, device=dev)[None, :, None]
        xx = torch.arange(w, device=dev)[None, None, :]
        inside = (yy >= y0[:, None, None]) & (yy < (y0 + eh)[:, None, None]) & (xx >= x0[:, None, None]) & (xx < (x0 + ew)[:, None, None])
        on = (rand(b) < erasing)[:, None, None]
        out = out.masked_fill((inside & on)[:, None], 0.0)
    return out
