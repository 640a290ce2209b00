"""Re-ID ranking metrics: CMC rank-k, mAP and mINP under the Market-1501 protocol.

Protocol, per query: gallery items of the query's identity *and* camera are
dropped, and so are junk items (identity -1); identity 0 (distractors) stays as
a negative. A query with no true match left is counted and skipped.

Ties: items at equal distance are ranked by gallery index (a stable sort). This
is the one convention that makes the result well defined; evaluators that call
an unstable ``argsort`` give tie-order-dependent numbers.

Two AP formulas are available by name (:data:`AP_FORMULAS`):

- ``noninterp``: the mean of the precision at each hit (torchreid, fast-reid);
  the default, because it is what most published re-ID code computes.
- ``official``: the Market-1501 evaluation code (Zheng et al., ICCV 2015), which
  integrates precision over recall with the trapezoid rule between hits.

The fast path never sorts a gallery row. Only the ranks of the true matches
matter, and the rank of a match is the number of negatives nearer than it. Each
row's distances are cut into ``num_bins`` equal bins; a bin that holds no
match compares the same way with every match, so a bin look-up and one
``bincount`` count its items exactly, and only the items that share a bin with
a match (a handful per match) are compared one by one. Binning is monotone, so
the result equals a full stable argsort, bit for bit, ties included.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from reid_htg.metrics.distance import METRICS, exact_rescale

AP_FORMULAS = ("noninterp", "official")
DEFAULT_AP = "noninterp"


@dataclass
class RankResult:
    """What :func:`evaluate_rank` returns. Metrics are fractions in [0, 1]."""

    cmc: np.ndarray  # (max_rank,) CMC curve: cmc[k-1] is rank-k accuracy
    mAP: float
    mINP: float
    ap_formula: str
    num_query: int
    num_gallery: int
    num_valid_query: int
    all_ap: np.ndarray = field(repr=False)  # (num_valid_query,) per-query AP
    all_inp: np.ndarray = field(repr=False)  # (num_valid_query,) per-query INP
    valid: np.ndarray = field(repr=False)  # (num_query,) bool, query had a true match

    def rank(self, k: int) -> float:
        """Rank-k accuracy (CMC at k)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank-{k} needs 1 <= k <= max_rank={len(self.cmc)}")
        return float(self.cmc[k - 1])

    def format(self, metrics: tuple[str, ...] = ()) -> str:
        """A small text table; ``metrics`` picks rows (``rank1``, ``rank5``, ``rank10``, ``mAP``, ``mINP``), all by default."""
        summary = self.as_dict()
        names = [m for m in ("rank1", "rank5", "rank10", "mAP", "mINP") if m in summary]
        unknown = sorted(set(metrics) - set(names))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {names}")
        rows = [(m.replace("rank", "rank-") if m.startswith("rank") else m, f"{100 * summary[m]:.2f}%") for m in (metrics or names)]
        rows += [
            ("AP formula", self.ap_formula),
            ("queries", f"{self.num_valid_query} valid of {self.num_query}"),
            ("gallery", str(self.num_gallery)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def as_dict(self) -> dict:
        """The summary as plain numbers (the ``tools/eval.py --json`` schema)."""
        out = {f"rank{k}": self.rank(k) for k in (1, 5, 10) if k <= len(self.cmc)}
        out.update(
            mAP=float(self.mAP),
            mINP=float(self.mINP),
            ap_formula=self.ap_formula,
            num_query=int(self.num_query),
            num_gallery=int(self.num_gallery),
            num_valid_query=int(self.num_valid_query),
        )
        return out


def _check_ap(ap: str) -> None:
    if ap not in AP_FORMULAS:
        raise ValueError(f"unknown AP formula {ap!r}; use one of {list(AP_FORMULAS)}")


def require_items(nq: int, ng: int) -> None:
    """A ValueError naming an empty query set or gallery (never an IndexError deep inside)."""
    if ng == 0:
        raise ValueError("the gallery is empty: nothing to rank the queries against")
    if nq == 0:
        raise ValueError("there are no queries to evaluate")


def as_int_array(x, name: str, n: int) -> np.ndarray:
    """Labels (array, list or tensor) as a flat int64 array of length ``n``; a ValueError naming ``name`` otherwise."""
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x).reshape(-1)
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries, expected {n}")
    return a.astype(np.int64)


def _ap_from_ranks(ranks: np.ndarray, num_match: np.ndarray, ap: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and INP from the 0-based ranks of the true matches.

    Args:
        ranks: (Q, M) int, row q holds the ranks of its matches in increasing
            order in the first ``num_match[q]`` entries (the rest is ignored).
        num_match: (Q,) int, at least 1.
        ap: formula name.
    """
    q, m = ranks.shape
    k = np.arange(m)[None, :]
    used = k < num_match[:, None]
    r = ranks.astype(np.float64)
    prec = (k + 1) / (r + 1)
    if ap == "noninterp":
        contrib = prec
    else:  # official Market-1501: trapezoid between the precision before and at each hit
        before = np.where(r > 0, k / np.maximum(r, 1), 1.0)
        contrib = (before + prec) / 2
    aps = np.where(used, contrib, 0.0).sum(1) / num_match
    last = ranks[np.arange(q), num_match - 1]
    inp = num_match / (last + 1.0)
    return aps, inp


def _finish(first_rank, ranks, num_match, valid, max_rank, ap, num_query, num_gallery) -> RankResult:
    nv = int(valid.sum())
    if nv == 0:
        raise ValueError(
            "no query has a true match in the gallery (same identity, other camera); "
            "check that query and gallery identities and cameras are right"
        )
    aps, inp = _ap_from_ranks(ranks, num_match, ap)
    hist = np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist) / nv
    return RankResult(
        cmc=cmc.astype(np.float64),
        mAP=float(aps.mean()),
        mINP=float(inp.mean()),
        ap_formula=ap,
        num_query=num_query,
        num_gallery=num_gallery,
        num_valid_query=nv,
        all_ap=aps,
        all_inp=inp,
        valid=valid,
    )


class RankAccumulator:
    """Ranks of the true matches, computed chunk of queries by chunk of queries.

    Holds the gallery labels and, per query, its same-identity gallery items;
    :meth:`add` takes a (B, G) block of distances for queries ``[start, start+B)``.
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids, num_bins: int):
        self.num_bins = int(num_bins)
        g_pids = np.asarray(g_pids)
        keep = g_pids != -1  # junk is dropped before ranking
        self.keep_cols = None if keep.all() else torch.from_numpy(np.flatnonzero(keep))
        gp, gc = g_pids[keep], np.asarray(g_camids)[keep]
        self.gp = torch.from_numpy(gp)
        # Same-identity gallery items of every query, found by sorting the gallery once.
        order = np.argsort(gp, kind="stable")
        sorted_gp = gp[order]
        start = np.searchsorted(sorted_gp, q_pids, "left")
        count = np.searchsorted(sorted_gp, q_pids, "right") - start
        count[q_pids == -1] = 0
        p = max(int(count.max(initial=0)), 1)
        k = np.arange(p)[None, :]
        present = k < count[:, None]
        idx = order[np.minimum(start[:, None] + k, max(len(order) - 1, 0))] if len(order) else np.zeros((len(q_pids), p), np.int64)
        idx = np.where(present, idx, 0)
        same_cam = present & (gc[idx] == np.asarray(q_camids)[:, None])
        self.same_idx = torch.from_numpy(idx)
        self.is_match = torch.from_numpy(present & ~same_cam)
        self.is_excluded = torch.from_numpy(same_cam)
        self.num_match = self.is_match.sum(1).numpy()
        self.q_pids = torch.from_numpy(np.asarray(q_pids))
        self.p = p
        self.ranks = np.zeros((len(q_pids), p), np.int64)
        self._local = threading.local()

    def add(self, dist: torch.Tensor, start: int) -> None:
        if self.keep_cols is not None:
            dist = dist.index_select(1, self.keep_cols)
        b, g = dist.shape
        sl = slice(start, start + b)
        idx, is_match, excluded = self.same_idx[sl], self.is_match[sl], self.is_excluded[sl]
        m = self.num_match[sl]
        rows = np.flatnonzero(m > 0)
        if len(rows) == 0 or g == 0:
            return
        p, t = self.p, self.num_bins
        # Sorted match distances; idx is ascending within a row, so a stable sort orders ties by index.
        md = dist.gather(1, idx).masked_fill_(~is_match, float("inf"))
        md, perm = torch.sort(md, dim=1, stable=True)
        midx = idx.gather(1, perm)

        lo, hi = (float(v) for v in torch.aminmax(dist))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("distances must be finite; found NaN or inf in the distance matrix")
        scale = t / (hi - lo) if hi > lo else 0.0
        fbuf, ibuf, bbuf = self._buffers(b, g)
        # fl(d - lo) >= 0 and every step is monotone, so bin(a) < bin(b) implies a <= b:
        # items in a bin without a match compare with all matches the same way.
        torch.sub(dist, lo, out=fbuf).mul_(scale)
        bins = ibuf.copy_(fbuf)  # truncation = floor, values in [0, t]
        width = t + 2
        row_off = torch.arange(b, dtype=torch.int32).mul_(width)
        bins += row_off[:, None]
        hist = torch.bincount(bins.view(-1), minlength=b * width).view(b, width)
        mbins = bins.gather(1, idx).sub_(row_off[:, None]).long().masked_fill_(~is_match, t + 1)
        per_bin = torch.zeros(b, width, dtype=torch.int64).scatter_add_(1, mbins, is_match.long())
        # numpy's cumsum is several times faster than torch's on int64 rows.
        below = torch.from_numpy(np.cumsum(per_bin.numpy(), 1)) - per_bin  # matches in strictly lower bins
        dump = p + 1
        has_match = per_bin > 0
        lut = below.masked_fill(has_match, dump)
        counts = torch.zeros(b, p + 2, dtype=torch.int64).scatter_add_(1, lut, hist)
        # Same identity, same camera: not negatives; take them out of their bucket.
        r_ex, c_ex = excluded.nonzero(as_tuple=True)
        ex_bins = (bins[r_ex, idx[r_ex, c_ex]] - row_off[r_ex]).long()
        counts.index_put_((r_ex, lut[r_ex, ex_bins]), torch.tensor(-1), accumulate=True)
        # Items sharing a bin with a match: compare them with the few matches of their
        # bin (value, then index) to find how many matches lie below each.
        torch.index_select(has_match.view(-1), 0, bins.view(-1), out=bbuf.view(-1))
        amb_r, amb_c = bbuf.nonzero(as_tuple=True)
        neg = self.gp[amb_c] != self.q_pids[sl][amb_r]
        amb_r, amb_c = amb_r[neg], amb_c[neg]
        if len(amb_r):
            d = dist[amb_r, amb_c]
            amb_bin = (bins[amb_r, amb_c] - row_off[amb_r]).long()
            first, n_in_bin = below[amb_r, amb_bin], per_bin[amb_r, amb_bin]
            n_above = first.clone()
            for j in range(int(n_in_bin.max())):
                k = (first + j).clamp_(max=p - 1)
                s, si = md[amb_r, k], midx[amb_r, k]
                n_above += (j < n_in_bin) & ((d > s) | ((d == s) & (amb_c > si)))
            counts += torch.bincount(amb_r * (p + 2) + n_above, minlength=b * (p + 2)).view(b, p + 2)
        neg_below = counts[:, :p].cumsum(1)  # [r, k]: negatives below match k
        ranks = neg_below.numpy() + np.arange(p)[None, :]
        self.ranks[start + rows] = ranks[rows]

    def _buffers(self, b: int, g: int):
        """Per-thread work buffers reused across blocks (fresh large allocations cost page faults)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or bufs[0].numel() < b * g:
            bufs = (torch.empty(b * g), torch.empty(b * g, dtype=torch.int32), torch.empty(b * g, dtype=torch.bool))
            self._local.bufs = bufs
        return tuple(buf[: b * g].view(b, g) for buf in bufs)

    def run(self, block, start: int, stop: int, chunk_size: int, workers: int | None = None) -> None:
        """Call ``self.add(block(s, e), s)`` over the query blocks of ``[start, stop)``.

        Two worker threads by default: torch releases the GIL, and the counting
        (``bincount``, ``nonzero``) runs on one core per call.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        spans = [(s, min(s + chunk_size, stop)) for s in range(start, stop, chunk_size)]
        workers = workers or min(2, max(1, torch.get_num_threads()))
        if workers == 1 or len(spans) == 1:
            for s, e in spans:
                self.add(block(s, e), s)
            return
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(lambda s=s, e=e: self.add(block(s, e), s)) for s, e in spans]:
                f.result()

    def result(self, max_rank: int, ap: str, num_gallery: int) -> RankResult:
        valid = self.num_match > 0
        ranks = self.ranks[valid]
        nm = self.num_match[valid]
        return _finish(ranks[:, 0], ranks, nm, valid, max_rank, ap, len(valid), num_gallery)


def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap: str = DEFAULT_AP,
    chunk_size: int = 64,
    num_bins: int = 2048,
) -> RankResult:
    """CMC, mAP and mINP from a query x gallery distance matrix.

    Args:
        distmat: (Q, G) distances (numpy array or tensor), smaller is nearer.
        q_pids: (Q,) query identities.
        g_pids: (G,) gallery identities; -1 is junk, 0 a distractor.
        q_camids: (Q,) query cameras.
        g_camids: (G,) gallery cameras.
        max_rank: length of the CMC curve (explicit, never inferred).
        ap: ``noninterp`` (default) or ``official``.
        chunk_size: queries per block; memory is O(chunk_size x G).
        num_bins: distance bins per block for the fast counting.

    Returns:
        A :class:`RankResult`.

    Reference:
        Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015
        (protocol, official AP); Ye et al., "Deep Learning for Person
        Re-identification: A Survey and Outlook", TPAMI 2021 (mINP).

    Examples:
        >>> d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
        >>> args = (np.array([1]), np.array([1, -1, 2, 1, 0, 1]), np.array([1]), np.array([1, 1, 2, 2, 3, 3]))
        >>> r = evaluate_rank(d, *args, max_rank=2)
        >>> r.mAP, r.cmc.tolist()
        (0.5, [0.0, 1.0])
        >>> round(evaluate_rank(d, *args, max_rank=2, ap="official").mAP, 6)
        0.333333
    """
    _check_ap(ap)
    dist = torch.as_tensor(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dist.shape)}")
    if not dist.is_floating_point():
        dist = dist.float()
    nq, ng = dist.shape
    require_items(nq, ng)
    q_pids, q_camids = as_int_array(q_pids, "q_pids", nq), as_int_array(q_camids, "q_camids", nq)
    g_pids, g_camids = as_int_array(g_pids, "g_pids", ng), as_int_array(g_camids, "g_camids", ng)
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, num_bins)
    dist = dist.cpu()
    acc.run(lambda s, e: dist[s:e], 0, nq, chunk_size)
    return acc.result(max_rank, ap, ng)


def evaluate_features(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric: str = "cosine",
    max_rank: int = 50,
    ap: str = DEFAULT_AP,
    block_size: int = 1024,
    chunk_size: int = 64,
    num_bins: int = 2048,
    dtype: torch.dtype = torch.float32,
) -> RankResult:
    """:func:`evaluate_rank` from features, one block of queries at a time.

    The full distance matrix is never held: memory is O(block_size x G), so a
    gallery of a million 512-d embeddings (2 GiB of features) fits easily.
    Only the order within a query's row matters, so the block holds an
    order-equivalent key rather than the distance itself: ``-q.g`` for cosine,
    ``|g|^2 - 2 q.g`` for Euclidean (the query's own ``|q|^2`` and the square
    root change no order).

    Args:
        qf: (Q, D) query features.
        gf: (G, D) gallery features.
        metric: ``cosine`` (default; features L2-normalised first) or ``euclidean``.
        block_size: queries per matrix product (large blocks keep BLAS efficient).
        chunk_size: queries per ranking step inside a block.
        dtype: arithmetic of the distances: float32 (fast) or float64 (two
            computations of the same distances, e.g. through an index, then
            agree to about 1e-16 instead of float32 rounding).
        Others as in :func:`evaluate_rank`.
    """
    _check_ap(ap)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {list(METRICS)}")
    qf, gf = torch.as_tensor(np.asarray(qf)).to(dtype), torch.as_tensor(np.asarray(gf)).to(dtype)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D) with one D; got {tuple(qf.shape)} and {tuple(gf.shape)}")
    nq, ng = len(qf), len(gf)
    require_items(nq, ng)
    q_pids, q_camids = as_int_array(q_pids, "q_pids", nq), as_int_array(q_camids, "q_camids", nq)
    g_pids, g_camids = as_int_array(g_pids, "g_pids", ng), as_int_array(g_camids, "g_camids", ng)
    if not (torch.isfinite(qf).all() and torch.isfinite(gf).all()):
        raise ValueError("features contain NaN or inf; check the model or the features file")
    qf, gf = exact_rescale(qf, gf)  # one power of two: the same ranks and ties, no overflow for huge features
    keep = g_pids != -1
    if not keep.all():  # junk never ranks: drop it before any distance is computed
        gf, g_pids, g_camids = gf[torch.from_numpy(keep)], g_pids[keep], g_camids[keep]
    if metric == "cosine":
        qf, gf = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    g_sq = (gf * gf).sum(1) if metric == "euclidean" else None
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, num_bins=num_bins)
    buf = torch.empty(min(block_size, max(nq, 1)), len(gf), dtype=dtype)
    for s in range(0, nq, block_size):
        q = qf[s : s + block_size]
        key = buf[: len(q)]
        if metric == "cosine":
            torch.mm(q, gf.T, out=key).neg_()
        else:
            torch.addmm(g_sq, q, gf.T, beta=1.0, alpha=-2.0, out=key)
        acc.run(lambda a, b: key[a - s : b - s], s, s + len(q), chunk_size)
    return acc.result(max_rank, ap, ng)


def evaluate_rank_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, ap: str = DEFAULT_AP) -> RankResult:
    """The plain per-query loop with a full stable argsort: the yardstick for :func:`evaluate_rank`.

    Slow on purpose: it is what tests and benchmarks compare against.
    """
    _check_ap(ap)
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    firsts, aps, inps, valid = [], [], [], []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        remove = (g_pids[order] == -1) | ((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        hits = (g_pids[order] == q_pids[q])[~remove]
        if not hits.any():
            valid.append(False)
            continue
        valid.append(True)
        pos = np.flatnonzero(hits)
        firsts.append(pos[0])
        inps.append(len(pos) / (pos[-1] + 1))
        if ap == "noninterp":
            aps.append(np.mean([(i + 1) / (p + 1) for i, p in enumerate(pos)]))
        else:  # the Market-1501 loop, position by position
            total, old_recall, old_precision, n_hit = 0.0, 0.0, 1.0, 0
            for j, h in enumerate(hits):
                n_hit += int(h)
                recall, precision = n_hit / len(pos), n_hit / (j + 1)
                total += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if n_hit == len(pos):
                    break
            aps.append(total)
    valid = np.array(valid, bool)
    if not valid.any():
        raise ValueError("no query has a true match in the gallery")
    first = np.array(firsts)
    cmc = np.array([(first < k).mean() for k in range(1, max_rank + 1)])
    return RankResult(
        cmc=cmc,
        mAP=float(np.mean(aps)),
        mINP=float(np.mean(inps)),
        ap_formula=ap,
        num_query=len(q_pids),
        num_gallery=len(g_pids),
        num_valid_query=int(valid.sum()),
        all_ap=np.array(aps),
        all_inp=np.array(inps),
        valid=valid,
    )
