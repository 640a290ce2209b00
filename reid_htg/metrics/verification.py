"""Open-set verification: "is this the same person?" as a distance threshold. ROC, TAR at a FAR, EER, calibration.

A pair is accepted as genuine when its distance is at most the threshold. Over
every threshold (each distinct distance), FAR is the fraction of impostor
pairs accepted and TAR the fraction of genuine pairs accepted; tied distances
are accepted or refused together, so the curve has one point per distinct
distance (scikit-learn's ``roc_curve(genuine, -distance, drop_intermediate=False)``
gives the same points). Pairs follow the evaluation protocols: re-ID, every
query against the gallery with the Market-1501 rule (gallery items of the
query's identity and camera dropped, junk -1 dropped, distractors 0 impostors);
class-level, every unordered pair of test items.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reid_htg.metrics.distance import pairwise_distance

FARS = (1e-1, 1e-2, 1e-3)


@dataclass
class VerificationResult:
    """ROC of a pair set and its summaries: ``tar_at_far`` and ``threshold_at_far`` per FAR in :data:`FARS`, ``eer``."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    num_genuine: int
    num_impostor: int
    tar_at: dict = field(default_factory=dict)
    threshold_at: dict = field(default_factory=dict)
    eer: float = float("nan")

    def as_dict(self) -> dict:
        return {"num_genuine": self.num_genuine, "num_impostor": self.num_impostor, "eer": self.eer,
                **{f"tar@far={f:g}": self.tar_at[f] for f in self.tar_at}, **{f"threshold@far={f:g}": self.threshold_at[f] for f in self.threshold_at}}

    def format(self) -> str:
        lines = [f"{'pairs':12s}{self.num_genuine:,} genuine, {self.num_impostor:,} impostor"]
        for f in self.tar_at:
            lines.append(f"TAR@FAR={f:<7g}{100 * self.tar_at[f]:6.2f}%   (distance threshold {self.threshold_at[f]:.4f})")
        lines.append(f"{'EER':12s}{100 * self.eer:6.2f}%")
        return "\n".join(lines)


def roc(distances, genuine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)`` over every distinct distance, starting at (0, 0) with threshold -inf.

    Args:
        distances: (N,) pair distances.
        genuine: (N,) bool, True for a pair of the same identity.

    Examples:
        >>> far, tar, thr = roc([0.1, 0.2, 0.2, 0.9], [True, True, False, False])
        >>> far.tolist(), tar.tolist(), thr.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [-inf, 0.1, 0.2, 0.9])
    """
    d = np.asarray(distances, np.float64).reshape(-1)
    g = np.asarray(genuine, bool).reshape(-1)
    if len(d) != len(g):
        raise ValueError(f"{len(d)} distances for {len(g)} labels")
    n_gen, n_imp = int(g.sum()), int((~g).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"verification needs genuine and impostor pairs; got {n_gen} genuine and {n_imp} impostor")
    if not np.isfinite(d).all():
        raise ValueError("distances must be finite")
    order = np.argsort(d, kind="stable")
    d, g = d[order], g[order]
    last = np.r_[np.flatnonzero(np.diff(d) > 0), len(d) - 1]  # the last pair of each group of tied distances
    tp, fp = np.cumsum(g)[last], np.cumsum(~g)[last]
    far = np.r_[0.0, fp / n_imp]
    tar = np.r_[0.0, tp / n_gen]
    return far, tar, np.r_[-np.inf, d[last]]


def summarise_roc(far, tar, thresholds, num_genuine: int, num_impostor: int, fars=FARS) -> VerificationResult:
    """TAR and threshold at each FAR (the largest threshold whose FAR is at most it), and the EER."""
    res = VerificationResult(far, tar, thresholds, num_genuine, num_impostor)
    for f in fars:
        i = int(np.flatnonzero(far <= f)[-1])
        res.tar_at[f], res.threshold_at[f] = float(tar[i]), float(thresholds[i])
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))  # where FAR and FRR cross (on the curve's points)
    res.eer = float((far[i] + frr[i]) / 2)
    return res


def verification_pairs(qf, gf=None, q_pids=None, g_pids=None, q_camids=None, g_camids=None, metric: str = "cosine"):
    """``(distances, genuine)`` of the protocol's pairs: re-ID (query x gallery) when ``gf`` is given, else class-level
    (every unordered pair of ``qf``'s rows, labels ``q_pids``)."""
    q = torch.as_tensor(np.asarray(qf), dtype=torch.float64)  # float64: thresholds in the features' own units, no overflow
    if gf is None:
        d = pairwise_distance(q, q, metric).numpy()
        y = np.asarray(q_pids)
        iu = np.triu_indices(len(y), k=1)
        return d[iu], (y[:, None] == y[None, :])[iu]
    g = torch.as_tensor(np.asarray(gf), dtype=torch.float64)
    d = pairwise_distance(q, g, metric).numpy()
    qp, gp, qc, gc = (np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids))
    same = qp[:, None] == gp[None, :]
    keep = ~(same & (qc[:, None] == gc[None, :])) & (gp[None, :] != -1)
    return d[keep], same[keep]


def evaluate_verification(qf, gf=None, q_pids=None, g_pids=None, q_camids=None, g_camids=None, metric: str = "cosine",
                          fars=FARS) -> VerificationResult:
    """ROC, TAR at each FAR, EER and the thresholds of a query/gallery (or, without ``gf``, a test) split."""
    d, genuine = verification_pairs(qf, gf, q_pids, g_pids, q_camids, g_camids, metric)
    far, tar, thr = roc(d, genuine)
    return summarise_roc(far, tar, thr, int(genuine.sum()), int((~genuine).sum()), fars)
