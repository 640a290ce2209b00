#!/usr/bin/env python
"""Load on the HTTP retrieval service, and ONNX Runtime against PyTorch, as ratios measured in one run.

    python benchmarks/serve_load.py [--n 100000] [--requests 4000] [--clients 16]
    python benchmarks/serve_load.py --backend milvus --n 1000000 --dim 256 --requests 1000   # Milvus Lite, HNSW

1. A gallery of --n clustered --dim embeddings (512) in an HNSW index, served by
   tools/serve.py on a free loopback port (a random ResNet-18 exported to ONNX
   is the server's model: the load uses embeddings, so its weights do not matter).
   ``--backend faiss``: a FAISS index folder; ``milvus``: a Milvus Lite gallery
   loaded by tools/build_index.py (HNSW, the same M and efConstruction).
2. --clients threads, each with its own HTTP connection, send single-query
   searches (k = 10) until --requests are done: requests/s, p50 and p99
   latency, errors, recall@10 of the answers against exact search; and the
   ratio to in-process search of the same queries, one at a time (on Milvus,
   in a process of its own before the service starts: Milvus Lite lets one
   process open a gallery).
3. The same with 10% of the requests adding one item (durable writes).
4. Embedding throughput at batch 64 on this machine: ONNX Runtime against PyTorch
   (the same weights), images/s and their ratio.

Targets on the 2-core machine (FAISS, 100k x 512): >= 500 searches/s, p99 <= 50 ms, zero errors.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from index_bench import clustered  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(port: int, queries: np.ndarray, requests: int, clients: int, write_fraction: float, seed: int = 0, key: str | None = None) -> dict:
    """Drive the server from ``clients`` threads, each with one keep-alive connection; latencies in ms and the error count.

    ``key``: the metadata column that holds a hit's gallery row (None: the gallery id is the row).
    The client is the standard library's ``http.client``, the lightest at hand:
    on a 2-core machine the load generator shares the cores with the server,
    and what it spends is not the service's. Every search
    answer is kept, to be checked against in-process search.
    """
    import http.client
    import json

    lat, errors, lock, answers = [], [0], threading.Lock(), {}
    counter = iter(range(requests))
    rng = np.random.default_rng(seed)
    writes = set(rng.choice(requests, int(write_fraction * requests), replace=False).tolist())
    bodies = [json.dumps({"embeddings": [q.tolist()], "k": 10}).encode() for q in queries]
    head = {"Content-Type": "application/json"}

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in counter:
            j = i % len(queries)
            t = time.perf_counter()
            try:
                if i in writes:
                    meta = {"pid": -1, **({key: -1} if key else {})}
                    c.request("POST", "/items", json.dumps({"embeddings": [queries[j].tolist()], "metadata": [meta]}).encode(), head)
                else:
                    c.request("POST", "/search", bodies[j], head)
                r = c.getresponse()
                body = r.read()
                ok = r.status == 200
            except Exception:  # noqa: BLE001 - every failure counts as an error
                ok = False
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            dt = (time.perf_counter() - t) * 1000
            with lock:
                lat.append(dt)
                errors[0] += not ok
                if ok and i not in writes:
                    answers[j] = body
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat)
    return {"rps": len(a) / wall, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "errors": errors[0], "n": len(a),
            "answers": {j: [h[key or "gallery_id"] for h in json.loads(b)["results"][0]] for j, b in answers.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--work-dir", help="default: a temporary folder")
    ap.add_argument("--backend", choices=("faiss", "milvus"), default="faiss")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    import pandas as pd
    import torch

    from reid_htg.checkpoint import save_checkpoint
    from reid_htg.models import ReIDNet
    from reid_htg.retrieval import GalleryIndex
    from reid_htg.serve.embedder import Embedder
    from reid_htg.serve.export import export_onnx

    work = args.work_dir or tempfile.mkdtemp(prefix="reid_serve_")
    model_args = dict(backbone="resnet18", num_classes=10, keypoint_blocks=(), last_stride=2, embed_dim=0 if args.dim == 512 else args.dim)
    save_checkpoint({"model": ReIDNet(**model_args).state_dict(), "config": {}, "model_args": model_args,
                     "data_args": {"dataset": "synthetic", "root": "", "args": {}, "height": 64, "width": 32}}, os.path.join(work, "m.pt"))
    export_onnx(os.path.join(work, "m.pt"), os.path.join(work, "m.onnx"))
    x = clustered(args.n, args.dim)
    queries = clustered(2000, args.dim, seed=1)
    exact = []  # each query's 10 nearest gallery rows, 100 queries at a time (2000 x 1M distances would be 8 GB)
    for s in range(0, len(queries), 100):
        sims = queries[s:s + 100] @ x.T
        exact += [set(r.tolist()) for r in np.argpartition(-sims, 10, axis=1)[:, :10]]
    t = time.perf_counter()
    if args.backend == "faiss":
        index = GalleryIndex.build(x, pd.DataFrame({"pid": np.arange(args.n) // 20}), index_type="hnsw")
        index.save(os.path.join(work, "index"))
        print(f"HNSW index over {args.n} x {args.dim} built in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        for q in queries[:1000]:
            index.search_raw(q[None], 10)
        inproc = 1000 / (time.perf_counter() - t)
        expected = [index.meta["gallery_id"].to_numpy()[r].tolist() for r in index.search_raw(queries, 10)[1]]
        gallery_args, row_of = ["--index", os.path.join(work, "index")], None
        shutil.rmtree(os.path.join(work, "index.service"), ignore_errors=True)
    else:
        uri = os.path.join(work, "gallery.db")
        np.savez(os.path.join(work, "g.npz"), embeddings=x, pid=np.arange(args.n) // 20, row=np.arange(args.n))
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_index.py"), "--embeddings", os.path.join(work, "g.npz"), "--backend", "milvus",
                        "--uri", uri, "--index", "hnsw"], check=True)
        print(f"Milvus Lite HNSW gallery over {args.n} x {args.dim} loaded in {time.perf_counter() - t:.1f}s", flush=True)
        np.save(os.path.join(work, "q.npy"), queries[:1000])
        probe = ("import sys, time, numpy as np; from reid_htg.serve.milvus_store import MilvusGallery; g = MilvusGallery(sys.argv[1]); "
                 "q = np.load(sys.argv[2]); g.index.search_records(q[:1], 10); t = time.perf_counter(); "
                 "[g.index.search_records(v[None], 10) for v in q]; print(len(q) / (time.perf_counter() - t))")
        res = subprocess.run([sys.executable, "-c", probe, uri, os.path.join(work, "q.npy")], capture_output=True, text=True, check=True)
        inproc = float(res.stdout.splitlines()[0])
        expected, gallery_args, row_of = None, ["--backend", "milvus", "--uri", uri], "row"

    port = free_port()
    shutil.rmtree(os.path.join(work, "index.service"), ignore_errors=True)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "serve.py"), *gallery_args, "--onnx",
                             os.path.join(work, "m.onnx"), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"error: the server did not start: {proc.stdout.read()[-2000:]}") from None
                time.sleep(0.5)
        search = load(port, queries, args.requests, args.clients, 0.0, key=row_of)
        mixed = load(port, queries, args.requests, args.clients, 0.1, seed=1, key=row_of)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    imgs = np.random.default_rng(0).integers(0, 256, (64, 64, 32, 3), dtype=np.uint8)
    rates = {}
    for kind in ("checkpoint", "onnx"):
        emb = Embedder.load(os.path.join(work, "m.pt" if kind == "checkpoint" else "m.onnx"))
        emb.embed_arrays(imgs)  # warm-up
        t = time.perf_counter()
        for _ in range(5):
            emb.embed_arrays(imgs, batch_size=64)
        rates[kind] = 5 * 64 / (time.perf_counter() - t)

    print(f"\n{args.n} x {args.dim} HNSW gallery ({args.backend}), {args.clients} clients, {args.requests} requests each phase, k=10, "
          f"CPU {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print("| phase | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, r in (("search", search), ("90% search + 10% add", mixed)):
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    rec = np.mean([len(set(ids) & exact[j]) / 10 for j, ids in search["answers"].items()])
    print(f"recall@10 of the service's answers against exact search: {rec:.3f} ({len(search['answers'])} queries)")
    wrong = sum(ids != expected[j] for j, ids in search["answers"].items()) if expected is not None else 0
    if expected is not None:
        print(f"search answers that differ from in-process search of the same query: {wrong} of {len(search['answers'])}")
    print(f"in-process search, one query at a time: {inproc:.0f} q/s; service / in-process: {search['rps'] / inproc:.2f}")
    print(f"embedding at batch 64 (ResNet-18, 64x32): PyTorch {rates['checkpoint']:.0f} img/s, ONNX Runtime {rates['onnx']:.0f} img/s, "
          f"ratio {rates['onnx'] / rates['checkpoint']:.2f}")
    ok = search["rps"] >= 500 and search["p99"] <= 50 and search["errors"] == 0 and mixed["errors"] == 0 and not wrong
    if args.backend == "faiss" and args.n == 100_000 and args.dim == 512:
        print(f"targets (>= 500 searches/s, p99 <= 50 ms, zero errors): {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
