"""k-reciprocal re-ranking computed from top-k neighbour lists (memory O(N k), not O(N^2)).

Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017. The neighbour graph covers queries and gallery together
(N = Q + G items), as in the paper's code; only each item's ``k1 + 1``
nearest neighbours are ever looked up (through a :class:`GalleryIndex`, exact
or approximate), so the encoding vectors V are sparse with about ``k1``
entries per row. The Jaccard distance between a query and every gallery item
is summed over shared entries only, through an inverted index of V's columns.

Our choices where the paper's code differs from the paper or has no
counterpart here: the original distance is the metric's own (cosine distance
1 - cos in [0, 2], or Euclidean), not squared Euclidean divided by each
column's maximum; the weights of V are ``exp(-d)``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from reid_htg.retrieval.index import GalleryIndex


def _reciprocal(knn: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean N x N matrix R[i, j]: j among i's k+1 nearest and i among j's."""
    n = len(knn)
    a = sp.csr_matrix((np.ones(n * (k + 1), bool), (np.repeat(np.arange(n), k + 1), knn[:, : k + 1].reshape(-1))), shape=(n, n))
    return a.multiply(a.T).tocsr()


def encode(features: np.ndarray, k1: int = 20, k2: int = 6, metric: str = "cosine", index_type: str = "flat", **index_params) -> tuple[sp.csr_matrix, GalleryIndex]:
    """The query-expanded k-reciprocal encodings V (N x N sparse, rows summing to 1) of all items."""
    index = GalleryIndex.build(features, None, metric=metric, index_type=index_type, **index_params)
    n = len(features)
    kk = min(k1 + 1, n)
    dist, knn = index.search_raw(features, kk)
    if (knn < 0).any():
        raise ValueError("the neighbour search returned fewer than k1 + 1 items; lower k1 or use an exact index")
    r_full = _reciprocal(knn, kk - 1)
    half = int(np.around(k1 / 2))
    r_half = _reciprocal(knn, min(half, kk - 1))
    rows, cols = [], []
    for i in range(n):
        base = r_full.indices[r_full.indptr[i] : r_full.indptr[i + 1]]
        expanded = set(base.tolist())
        for c in base:
            cand = r_half.indices[r_half.indptr[c] : r_half.indptr[c + 1]]
            if len(np.intersect1d(cand, base, assume_unique=True)) > 2 / 3 * len(cand):
                expanded.update(cand.tolist())
        members = np.fromiter(sorted(expanded), np.int64)
        rows.append(np.full(len(members), i))
        cols.append(members)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    # exact original distances of every (i, j) pair kept
    vec = np.asarray(index.vectors, np.float64)
    if metric == "cosine":
        d = 1.0 - np.einsum("ij,ij->i", vec[rows], vec[cols])
    else:
        d = np.linalg.norm(vec[rows] - vec[cols], axis=1)
    v = sp.csr_matrix((np.exp(-d), (rows, cols)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(1)).ravel()) @ v
    if k2 > 1:
        k2 = min(k2, kk)
        qe = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), knn[:, :k2].reshape(-1))), shape=(n, n))
        v = (qe @ v).tocsr()
    return v, index


def jaccard_block(v_rows: sp.csr_matrix, v_gallery_csc: sp.csc_matrix) -> np.ndarray:
    """(B, G) Jaccard distances 1 - sum(min) / sum(max) between encodings (rows sum to 1)."""
    b, g = v_rows.shape[0], v_gallery_csc.shape[0]
    coo = v_rows.tocoo()
    starts, ends = v_gallery_csc.indptr[coo.col], v_gallery_csc.indptr[coo.col + 1]
    counts = ends - starts
    total = int(counts.sum())
    sum_min = np.zeros(b * g)
    if total:
        offs = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        grow = v_gallery_csc.indices[offs]
        mins = np.minimum(np.repeat(coo.data, counts), v_gallery_csc.data[offs])
        sum_min = np.bincount(np.repeat(coo.row, counts) * g + grow, weights=mins, minlength=b * g)
    sum_min = sum_min.reshape(b, g)
    return 1.0 - sum_min / (2.0 - sum_min)


def reranked_distance_blocks(qf, gf, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, metric: str = "cosine", index_type: str = "flat", chunk_size: int = 256, **index_params):
    """Yield ``(start, block)``: re-ranked (B, G) query-to-gallery distances, chunk by chunk of queries.

    ``final = (1 - lambda) * jaccard + lambda * original``.
    """
    qf, gf = np.asarray(qf, np.float32), np.asarray(gf, np.float32)
    nq = len(qf)
    v, index = encode(np.concatenate([qf, gf]), k1, k2, metric, index_type, **index_params)
    vg = v[nq:].tocsc()
    vec = np.asarray(index.vectors, np.float64)
    qv, gv = vec[:nq], vec[nq:]
    for s in range(0, nq, chunk_size):
        q = qv[s : s + chunk_size]
        orig = 1.0 - q @ gv.T if metric == "cosine" else np.sqrt(np.maximum((q * q).sum(1)[:, None] + (gv * gv).sum(1)[None] - 2 * q @ gv.T, 0))
        yield s, (1 - lambda_value) * jaccard_block(v[s : s + len(q)], vg) + lambda_value * orig
