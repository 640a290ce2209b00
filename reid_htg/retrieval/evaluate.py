"""Re-ID evaluation through a gallery index instead of a dense distance matrix."""
from __future__ import annotations

import numpy as np
import torch

from reid_htg.metrics.rank import DEFAULT_AP, RankAccumulator, RankResult, as_int_array, require_items
from reid_htg.retrieval.index import GalleryIndex


def evaluate_with_index(
    qf, gf, q_pids, g_pids, q_camids, g_camids, index_type: str = "flat", metric: str = "cosine", k: int | None = None,
    max_rank: int = 50, ap: str = DEFAULT_AP, chunk_size: int = 64, **index_params,
) -> RankResult:
    """CMC / mAP / mINP with the gallery ranked by a :class:`GalleryIndex`.

    With ``k=None`` every gallery item is retrieved for every query: with the
    ``flat`` index this is exact search and gives the metrics of the
    distance-matrix path (:func:`reid_htg.metrics.evaluate_features` with
    ``dtype=torch.float64``): the items the index returns are scored again in
    float64 with the same arithmetic, so that float32 rounding in FAISS cannot
    swap near-ties. With a smaller ``k`` (or an approximate index),
    gallery items the index does not return count as infinitely far, ranked
    after all returned ones: an approximation whose memory is O(chunk x k).

    Args:
        qf, gf: (Q, D) and (G, D) features; other labels as in :func:`reid_htg.metrics.evaluate_rank`.
        index_type: flat, hnsw, ivf or ivfpq.
        metric: cosine or euclidean.
        k: neighbours retrieved per query (None: the whole gallery).
    """
    require_items(len(qf), len(gf))
    q = np.ascontiguousarray(np.asarray(qf, np.float32))
    q64, g64 = torch.as_tensor(np.asarray(qf)).double(), torch.as_tensor(np.asarray(gf)).double()
    if metric == "cosine":
        q64, g64 = torch.nn.functional.normalize(q64, dim=1), torch.nn.functional.normalize(g64, dim=1)
    g_sq = (g64 * g64).sum(1)
    g_pids = as_int_array(g_pids, "g_pids", len(gf))
    q_pids, q_camids = as_int_array(q_pids, "q_pids", len(q)), as_int_array(q_camids, "q_camids", len(q))
    g_camids = as_int_array(g_camids, "g_camids", len(gf))
    index = GalleryIndex.build(gf, None, metric=metric, index_type=index_type, **index_params)
    ng = len(gf)
    kk = ng if k is None else min(k, ng)
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, num_bins=2048)
    for s in range(0, len(q), chunk_size):
        _, rows = index.search_raw(q[s : s + chunk_size], kk)
        ok = torch.from_numpy(rows >= 0)
        r = torch.from_numpy(np.where(rows >= 0, rows, 0))
        qb = q64[s : s + len(rows)]
        if kk == ng:  # everything retrieved: one product, then the index's order
            ip = (qb @ g64.T).gather(1, r)
        else:
            ip = torch.einsum("qd,qkd->qk", qb, g64[r])
        key = -ip if metric == "cosine" else g_sq[r] - 2 * ip  # the order-equivalent keys of evaluate_features
        # Not retrieved: after every retrieved item (finite, as the fast path requires).
        far = float(key[ok].max()) + 1.0 if ok.any() else 0.0
        block = torch.full((len(rows), ng), far, dtype=torch.float64)
        block[torch.nonzero(ok, as_tuple=True)[0], r[ok]] = key[ok]
        acc.add(block, s)
    return acc.result(max_rank, ap, ng)


def evaluate_reranked(
    qf, gf, q_pids, g_pids, q_camids, g_camids, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
    metric: str = "cosine", index_type: str = "flat", max_rank: int = 50, ap: str = DEFAULT_AP, chunk_size: int = 256, **index_params,
) -> RankResult:
    """Metrics after k-reciprocal re-ranking (:mod:`reid_htg.retrieval.rerank`), neighbour lists from an index.

    Memory grows with (Q + G) x k1 for the encodings and chunk x G for one block
    of final distances, never with (Q + G)^2.
    """
    from reid_htg.retrieval.rerank import reranked_distance_blocks

    require_items(len(qf), len(gf))
    g_pids = as_int_array(g_pids, "g_pids", len(gf))
    q_pids, q_camids = as_int_array(q_pids, "q_pids", len(qf)), as_int_array(q_camids, "q_camids", len(qf))
    g_camids = as_int_array(g_camids, "g_camids", len(gf))
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, num_bins=2048)
    blocks = reranked_distance_blocks(qf, gf, k1, k2, lambda_value, metric, index_type, chunk_size, **index_params)
    for s, block in blocks:
        acc.add(torch.from_numpy(block), s)
    return acc.result(max_rank, ap, len(gf))
