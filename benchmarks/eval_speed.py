#!/usr/bin/env python
"""Speed and memory of re-ID evaluation on a Market-1501-sized problem.

    python benchmarks/eval_speed.py [--repeats 3] [--million]

Market-sized: 3,368 queries x 15,913 gallery (750 identities, 6 cameras,
2,793 distractors), 2048-d features clustered by identity like a trained
model's. Prints, each measured in this run:

1. metrics from a precomputed distance matrix: the fast evaluator against the
   plain per-query loop with a full argsort (target: <= 0.4 s and >= 5x faster);
   also on uniform random distances, the worst case for the fast path;
2. metrics from features end to end against the distance matrix product alone
   (target: <= 1.25x);
3. with --million: peak memory of evaluating 1,000 queries against a gallery of
   a million 512-d embeddings (target: fits in 24 GiB).
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from reid_htg.metrics import evaluate_features, evaluate_rank, evaluate_rank_reference


def market_like(dim: int, seed: int = 0, noise: float = 0.07):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    nq, ng, nid, ndis = 3368, 15913, 750, 2793
    g_pids = np.concatenate([np.repeat(np.arange(1, nid + 1), (ng - ndis) // nid + 1)[: ng - ndis], np.zeros(ndis, np.int64)])
    q_pids = rng.integers(1, nid + 1, nq)
    q_cams, g_cams = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    centers = F.normalize(torch.randn(nid + 1, dim, generator=g), dim=1)
    cam_shift = 0.5 * F.normalize(torch.randn(6, dim, generator=g), dim=1)

    def feats(pids, cams):
        base = centers[torch.from_numpy(pids)].clone()
        dis = torch.from_numpy(pids == 0)
        base[dis] = F.normalize(torch.randn(int(dis.sum()), dim, generator=g), dim=1)
        return base + cam_shift[torch.from_numpy(cams)] * 0.3 + noise * torch.randn(len(pids), dim, generator=g)

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def best_of(fn, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the fast paths (best is kept)")
    ap.add_argument("--million", action="store_true", help="also run the 1M x 512 memory check (about a minute)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    qf, gf, qp, gp, qc, gc = market_like(2048)
    qn, gn = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    dist = (1 - qn @ gn.T).numpy()
    print(f"\n[1] metrics from a {dist.shape[0]} x {dist.shape[1]} distance matrix")
    evaluate_rank(dist, qp, gp, qc, gc)  # warm-up
    t_fast, fast = best_of(lambda: evaluate_rank(dist, qp, gp, qc, gc), args.repeats)
    t = time.perf_counter()
    ref = evaluate_rank_reference(dist, qp, gp, qc, gc)
    t_ref = time.perf_counter() - t
    assert abs(fast.mAP - ref.mAP) < 1e-9 and np.allclose(fast.cmc, ref.cmc), "fast and reference disagree"
    print(f"    mAP {fast.mAP:.4f}  rank-1 {fast.rank(1):.4f} (fast and reference agree)")
    print(f"    fast {t_fast:.3f} s   reference loop {t_ref:.3f} s   speed-up {t_ref / t_fast:.1f}x")
    print(f"    target <= 0.4 s: {'PASS' if t_fast <= 0.4 else 'MISS'};  target >= 5x: {'PASS' if t_ref / t_fast >= 5 else 'MISS'}")
    uniform = np.random.default_rng(1).random(dist.shape, dtype=np.float32)
    t_uni, _ = best_of(lambda: evaluate_rank(uniform, qp, gp, qc, gc), args.repeats)
    print(f"    uniform random distances (worst case for the fast path): {t_uni:.3f} s")

    print("\n[2] metrics from 2048-d features, end to end")
    t_mm, _ = best_of(lambda: qn @ gn.T, args.repeats)
    t_e2e, res = best_of(lambda: evaluate_features(qf, gf, qp, gp, qc, gc), args.repeats)
    assert abs(res.mAP - ref.mAP) < 1e-6
    print(f"    end to end {t_e2e:.3f} s   distance product alone {t_mm:.3f} s   ratio {t_e2e / t_mm:.3f}")
    print(f"    target <= 1.25x: {'PASS' if t_e2e / t_mm <= 1.25 else 'MISS'}")

    if args.million:
        print("\n[3] 1,000 queries against 1,000,000 x 512-d gallery")
        del dist, uniform, qf, gf, qn, gn
        gen = torch.Generator().manual_seed(2)
        gp_m = torch.randint(0, 20000, (1_000_000,), generator=gen).numpy()
        gc_m = torch.randint(0, 6, (1_000_000,), generator=gen).numpy()
        centers = torch.randn(20000, 512, generator=gen)
        gf_m = centers[torch.from_numpy(gp_m)] + 0.5 * torch.randn(1_000_000, 512, generator=gen)
        qp_m = gp_m[:1000].copy()
        qf_m = centers[torch.from_numpy(qp_m)] + 0.5 * torch.randn(1000, 512, generator=gen)
        qc_m = (gc_m[:1000] + 1) % 6
        t = time.perf_counter()
        r = evaluate_features(qf_m, gf_m, qp_m, gp_m, qc_m, gc_m)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"    {time.perf_counter() - t:.1f} s, mAP {r.mAP:.4f}, peak resident memory {peak:.2f} GiB (features alone: 1.9 GiB)")
        print(f"    target fits in 24 GiB: {'PASS' if peak < 24 else 'MISS'}")


if __name__ == "__main__":
    main()
