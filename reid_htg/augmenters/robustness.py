"""Robustness of a re-ID model to FGSM-attacked queries (rank-1/mAP as the attack's eps grows).

Each query image is moved by eps (in [0, 1] pixel units) in the sign of the
gradient of its mean cosine distance to its true matches in the gallery (a
white-box metric attack, Bai et al. 2019), clipped to valid pixels; the
gallery stays clean. True matches follow the Market-1501 protocol: same
identity, another camera, junk (-1) excluded.
"""
from __future__ import annotations

import numpy as np
import torch

from reid_htg.augmenters.fgsm import (
    fgsm,
    metric_attack_loss,
    normalized_bounds,
    pixel_step,
)
from reid_htg.data.dataset import ImageSet, sequential_batches
from reid_htg.data.transforms import normalize
from reid_htg.features import extract_features
from reid_htg.metrics import RankResult, evaluate_features
from reid_htg.models import ReIDNet
from reid_htg.utils.progress import progress as progress_bar


def attacked_query_features(model: ReIDNet, query: ImageSet, gallery_features: torch.Tensor, gallery_pids, gallery_camids,
                            eps: float, batch_size: int = 64, device=None, progress: bool = True) -> torch.Tensor:
    """(Q, D) features of the FGSM-attacked queries (eps = 0: the clean features)."""
    device = torch.device(device or "cpu")
    model.eval().to(device)
    g = torch.as_tensor(gallery_features, device=device).float()
    g_pids = torch.as_tensor(np.asarray(gallery_pids), device=device)
    g_cams = torch.as_tensor(np.asarray(gallery_camids), device=device)
    step, bounds = pixel_step(eps, device), normalized_bounds(device)
    out = []
    for idx in progress_bar(sequential_batches(len(query), batch_size), desc=f"FGSM eps={eps:g}", enabled=progress):
        x, pids, cams = query.batch(idx)
        x = normalize(x.to(device))
        pids, cams = pids.to(device), cams.to(device)
        positives = (pids[:, None] == g_pids[None]) & (cams[:, None] != g_cams[None]) & (g_pids[None] >= 0)
        if eps > 0:
            x = fgsm(x, lambda xx: metric_attack_loss(model.retrieval_feature(xx), g, positives), step, bounds)
        out.append(model.extract(x).cpu())
    return torch.cat(out)


def fgsm_robustness(model: ReIDNet, query: ImageSet, gallery: ImageSet, eps_values, batch_size: int = 64, device=None,
                    ap: str | None = None) -> list[tuple[float, RankResult]]:
    """[(eps, rank result)] with every query attacked at each eps and the gallery clean."""
    gf = extract_features(model, gallery, batch_size, torch.device(device or "cpu"), desc="gallery features")
    results = []
    for eps in eps_values:
        if eps < 0:
            raise ValueError(f"FGSM eps must be >= 0, got {eps}")
        qf = attacked_query_features(model, query, gf, gallery.labels.numpy(), gallery.camids.numpy(), eps, batch_size, device)
        kw = {"ap": ap} if ap else {}
        results.append((float(eps), evaluate_features(qf, gf, query.labels, gallery.labels, query.camids, gallery.camids, **kw)))
    return results
