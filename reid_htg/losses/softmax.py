"""Identity cross-entropy for the biasless softmax head, with label smoothing or soft targets (LSRO)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against identity labels (B,) or target distributions (B, K).

    Args:
        logits: (B, K).
        target: (B,) int labels in [0, K), or (B, K) probabilities (e.g. LSRO's uniform rows).
        label_smoothing: epsilon of label smoothing (Szegedy et al., CVPR 2016), applied to hard labels.

    Raises:
        ValueError: on an empty batch or labels outside [0, K).
    """
    if logits.shape[0] == 0:
        raise ValueError("identity_cross_entropy got an empty batch")
    if target.dtype.is_floating_point:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
    k = logits.shape[1]
    if int(target.min()) < 0 or int(target.max()) >= k:
        raise ValueError(f"identity labels must lie in [0, {k}); got range [{int(target.min())}, {int(target.max())}]")
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
