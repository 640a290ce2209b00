"""FGSM (Goodfellow et al., ICLR 2015): x' = x + eps * sign(grad_x loss), for adversarial training and robustness tests.

``eps`` is in pixel units of images scaled to [0, 1] (8/255 ~ 0.031). Our
networks see ImageNet-normalised inputs, so on normalised tensors the step is
``eps / std`` per channel (:func:`pixel_step`); the result is clipped back to
the valid pixel range unless ``clip=False``.

For retrieval, where a query's identity is not one of the classifier's, the
robustness test attacks the metric (as in Bai et al., "Metric attack", 2019):
each query is moved to increase its mean distance to its true matches in the
gallery (:func:`metric_attack_loss`).
"""
from __future__ import annotations

from typing import Callable

import torch

from reid_htg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def pixel_step(eps: float, device=None) -> torch.Tensor:
    """(1, 3, 1, 1) step on ImageNet-normalised inputs that moves each pixel by ``eps`` in [0, 1] units."""
    return eps / torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)


def normalized_bounds(device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest normalised values (pixels 0 and 1), (1, 3, 1, 1) each."""
    m = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return -m / s, (1 - m) / s


def fgsm(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], eps, bounds=None) -> torch.Tensor:
    """One signed-gradient step that increases ``loss_fn``.

    Args:
        x: input batch (any shape); not modified.
        loss_fn: maps the input batch to a scalar loss.
        eps: step size, a float or a tensor broadcastable to ``x`` (e.g. :func:`pixel_step`).
        bounds: optional (low, high) to clip the result to, broadcastable to ``x``.

    Returns:
        The adversarial batch, detached. Where the gradient is exactly zero the input is unchanged.
    """
    if not (torch.is_tensor(eps) or eps >= 0):
        raise ValueError(f"FGSM eps must be >= 0, got {eps}")
    xa = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(xa)
        if loss.ndim != 0:
            raise ValueError(f"FGSM needs a scalar loss, got shape {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss, xa)
    out = x.detach() + eps * grad.sign()
    if bounds is not None:
        out = torch.maximum(torch.minimum(out, bounds[1]), bounds[0])
    return out


def metric_attack_loss(query_emb: torch.Tensor, gallery_emb: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Sum over queries of the mean cosine distance to their true matches.

    Args:
        query_emb: (Q, D) embeddings of the (attacked) queries.
        gallery_emb: (G, D) gallery embeddings (constants).
        positives: (Q, G) bool, the gallery items each query should find; rows without any contribute 0.
    """
    q = torch.nn.functional.normalize(query_emb.float(), dim=1)
    g = torch.nn.functional.normalize(gallery_emb.float(), dim=1)
    dist = 1 - q @ g.T
    pos = positives.float()
    return ((dist * pos).sum(1) / pos.sum(1).clamp(min=1)).sum()
