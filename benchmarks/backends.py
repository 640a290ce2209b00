#!/usr/bin/env python
"""Gallery backends side by side: FAISS (flat, HNSW) against Milvus Lite, on one synthetic gallery, ratios in one run.

    python benchmarks/backends.py --n 1000000 --dim 256            # the scale the backends are meant for
    python benchmarks/backends.py --n 100000 --dim 256 --queries 200

Backends: FAISS flat and HNSW in process, Milvus Lite with a FLAT or an HNSW index (M 32, efConstruction 80
on both); HNSW at each --ef. For each: build time (Milvus: inserting every vector, flushing, indexing), resident
memory added by the build (this process and its children: Milvus Lite's server is one),
recall@10 against exact search, single-query searches/s (one thread of queries, one after another), and
filtered search at 10% and 0.1% selectivity (searches/s, and recall@10 against brute force over the passing
rows). Clustered random vectors (1,000 centres) with a ``camid`` column (0-9) and a ``bucket`` column (0-999)
for the filters. Needs the milvus extra. Through the HTTP service the same backends are measured by
benchmarks/serve_load.py.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

from reid_htg.retrieval import GalleryIndex


def rss_mib() -> float:
    """Resident memory of this process and its children (Milvus Lite runs its server as a child process), MiB, now."""
    pids, me = [os.getpid()], str(os.getpid())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[1] == me:
                        pids.append(int(entry))
            except (OSError, IndexError):
                continue
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def exact_top(x: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[set]:
    rows = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
    out = []
    for s in range(0, len(q), 64):
        sims = q[s:s + 64] @ x[rows].T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out += [set(rows[t].tolist()) for t in top]
    return out


def rate(v: float, width: int) -> str:
    """Searches/s with two decimals below 10 (Milvus Lite at 1M answers under one a second), whole numbers above."""
    return f"{v:>{width}.2f}" if v < 10 else f"{v:>{width}.0f}"


def recall(found: list[list[int]], truth: list[set]) -> float:
    hits = [len(set(f) & t) / max(len(t), 1) for f, t in zip(found, truth)]
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backends", nargs="+", default=["flat", "hnsw", "milvus-flat", "milvus-hnsw"],
                    choices=["flat", "hnsw", "milvus-flat", "milvus-hnsw"])
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 256], help="HNSW ef_search values to measure (one build)")
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
    print(f"gallery {args.n:,} x {args.dim} (cosine), {args.queries} queries, k={args.k}, one thread each", flush=True)
    print(f"{'backend':>18} {'build s':>8} {'+MiB':>7} {'recall@10':>9} {'q/s':>8} {'q/s 10%':>8} {'recall 10%':>10} {'q/s 0.1%':>9} {'recall 0.1%':>11}")
    rows = {}
    for name in args.backends:
        kind = name.split("-")[-1]  # flat / hnsw
        before, t = rss_mib(), time.perf_counter()
        if name.startswith("milvus"):
            from reid_htg.serve.milvus_store import MilvusGallery

            gallery = MilvusGallery.create(os.path.join(tempfile.mkdtemp(prefix="reid_milvus_"), "g.db"), x, meta, index_type=kind)
            index, settable = gallery.index, gallery.index.vector_index["params"]
        else:
            index = GalleryIndex.build(x, meta, index_type=kind)
            settable = index.params
        build, mem = time.perf_counter() - t, rss_mib() - before
        search = index.search_records

        def timed(where):
            found, t0 = [], time.perf_counter()
            for qi in q:
                found.append([h["row"] for h in search(qi[None], args.k, where=where)[0]])  # the row, whatever ids a backend gives
            return found, len(q) / (time.perf_counter() - t0)

        for ef in args.ef if kind == "hnsw" else [None]:
            label = name if ef is None else f"{name} ef={ef}"
            if ef is not None:
                settable["ef_search"] = ef
            found, qps = timed(None)
            cells = [f"{label:>18}", f"{build:>8.1f}", f"{mem:>7.0f}", f"{recall(found, truth):>9.3f}", rate(qps, 8)]
            for fname, where in filters.items():
                f_found, f_qps = timed(where)
                cells += [rate(f_qps, 8 if fname == "10%" else 9), f"{recall(f_found, ftruth[fname]):>10.3f}" if fname == "10%"
                          else f"{recall(f_found, ftruth[fname]):>11.3f}"]
            rows[label] = qps
            print(" ".join(cells), flush=True)
        if name.startswith("milvus"):
            gallery.close()
    print()
    for a in [r for r in rows if r.startswith("milvus")]:  # like against like: Milvus Lite's FLAT / FAISS flat, HNSW / HNSW at one ef
        b = a.removeprefix("milvus-")
        if b in rows:
            print(f"{a} / {b} (FAISS) single-query searches/s: {rows[a] / rows[b]:.3f}")
    print("service throughput (16 clients) on either backend: benchmarks/serve_load.py --backend faiss|milvus")


if __name__ == "__main__":
    main()
