#!/usr/bin/env python
"""Gallery backends side by side: FAISS (flat, HNSW) against Milvus Lite, on one synthetic gallery, ratios in one run.

    python benchmarks/backends.py --n 1000000 --dim 256            # the scale the backends are meant for
    python benchmarks/backends.py --n 100000 --dim 256 --queries 200

For each backend: build time (Milvus: inserting every vector and flushing), resident memory added by the build,
recall@10 against exact search, single-query searches/s (one thread of queries, one after another), and
filtered search at 10% and 0.1% selectivity (searches/s, and recall@10 against brute force over the passing
rows). Clustered random vectors (1,000 centres) with a ``camid`` column (0-9) and a ``bucket`` column (0-999)
for the filters. Needs the milvus extra. Through the HTTP service the same backends are measured by
benchmarks/serve_load.py.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import pandas as pd

from reid_htg.retrieval import GalleryIndex


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exact_top(x: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[set]:
    rows = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
    out = []
    for s in range(0, len(q), 64):
        sims = q[s:s + 64] @ x[rows].T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out += [set(rows[t].tolist()) for t in top]
    return out


def recall(found: list[list[int]], truth: list[set]) -> float:
    hits = [len(set(f) & t) / max(len(t), 1) for f, t in zip(found, truth)]
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backends", nargs="+", default=["flat", "hnsw", "milvus"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, args.dim)).astype(np.float32)
    x = centres[rng.integers(0, 1000, args.n)] + 0.5 * rng.standard_normal((args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = pd.DataFrame({"row": np.arange(args.n), "camid": rng.integers(0, 10, args.n), "bucket": rng.integers(0, 1000, args.n)})
    q = x[rng.integers(0, args.n, args.queries)] + 0.1 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    filters = {"10%": {"camid": 3}, "0.1%": {"bucket": 7}}
    keeps = {"10%": meta["camid"].to_numpy() == 3, "0.1%": meta["bucket"].to_numpy() == 7}
    truth = exact_top(x, q, args.k)
    ftruth = {name: exact_top(x, q, args.k, keep) for name, keep in keeps.items()}
    print(f"gallery {args.n:,} x {args.dim} (cosine), {args.queries} queries, k={args.k}")
    print(f"{'backend':>8} {'build s':>8} {'+MiB':>7} {'recall@10':>9} {'q/s':>8} {'q/s 10%':>8} {'recall 10%':>10} {'q/s 0.1%':>9} {'recall 0.1%':>11}")
    rows = {}
    for name in args.backends:
        before, t = rss_mib(), time.perf_counter()
        if name == "milvus":
            from reid_htg.serve.milvus_store import MilvusGallery

            gallery = MilvusGallery.create(os.path.join(tempfile.mkdtemp(prefix="reid_milvus_"), "g.db"), x, meta)
            search = gallery.index.search_records
        else:
            index = GalleryIndex.build(x, meta, index_type=name)
            search = index.search_records
        build, mem = time.perf_counter() - t, rss_mib() - before

        def timed(where):
            found, t0 = [], time.perf_counter()
            for qi in q:
                found.append([h["row"] for h in search(qi[None], args.k, where=where)[0]])  # the row, whatever ids a backend gives
            return found, len(q) / (time.perf_counter() - t0)

        found, qps = timed(None)
        cells = [f"{name:>8}", f"{build:>8.1f}", f"{mem:>7.0f}", f"{recall(found, truth):>9.3f}", f"{qps:>8.0f}"]
        for fname, where in filters.items():
            f_found, f_qps = timed(where)
            cells += [f"{f_qps:>8.0f}" if fname == "10%" else f"{f_qps:>9.0f}", f"{recall(f_found, ftruth[fname]):>10.3f}" if fname == "10%"
                      else f"{recall(f_found, ftruth[fname]):>11.3f}"]
        rows[name] = qps
        print(" ".join(cells), flush=True)
        if name == "milvus":
            gallery.close()
    if "milvus" in rows:
        for name in rows:
            if name != "milvus":
                print(f"milvus / {name} single-query searches/s: {rows['milvus'] / rows[name]:.2f}")


if __name__ == "__main__":
    main()
