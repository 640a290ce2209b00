"""Build a gallery index folder from an embeddings file.

    python tools/build_index.py --embeddings gallery.npz --out gallery_index [--index auto|flat|hnsw|ivf|ivfpq] [--metric cosine|euclidean] [nprobe=32 ...]
    python tools/build_index.py --embeddings gallery.npz --backend milvus --uri gallery.db [--index auto|flat|hnsw|ivf]  # a Milvus gallery

`auto` picks flat up to 100k vectors, HNSW up to 2M, IVF-PQ (with exact
re-ranking) beyond (on Milvus, a Lite file or http://HOST:19530: flat up to
100k, HNSW beyond; no IVF-PQ). Extra key=value pairs set index parameters (hnsw_m,
ef_search, ef_construction, nlist, nprobe, pq_m, rerank).
"""
from __future__ import annotations

import argparse
import sys
import time

from reid_htg.cli import run_tool
from reid_htg.config import parse_value
from reid_htg.metrics.distance import METRICS
from reid_htg.retrieval import INDEX_TYPES, GalleryIndex, GalleryIndexError
from reid_htg.retrieval.files import EmbeddingsFileError, load_embeddings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--out", help="index folder to write (the faiss backend)")
    ap.add_argument("--backend", choices=("faiss", "milvus"), default="faiss")
    ap.add_argument("--uri", help="the milvus backend: a Milvus Lite file (gallery.db) or a server (http://HOST:19530)")
    ap.add_argument("--index", default="auto", choices=("auto", *INDEX_TYPES))
    ap.add_argument("--metric", default="cosine", choices=METRICS)
    ap.add_argument("params", nargs="*", help="index parameters as key=value")
    args = ap.parse_args(argv)
    try:
        emb, meta, fp = load_embeddings(args.embeddings)
    except EmbeddingsFileError as exc:
        raise SystemExit(f"error: {exc}") from None
    params = {}
    for item in args.params:
        key, _, value = item.partition("=")
        params[key] = parse_value(value)  # numbers as the config files read them (1e-4 too)
    if args.backend == "milvus":
        if not args.uri or args.out:
            raise SystemExit("error: --backend milvus takes --uri (a Milvus Lite file or http://HOST:19530), not --out")
        from reid_htg.serve.milvus_store import MilvusGallery

        t = time.perf_counter()
        try:
            gallery = MilvusGallery.create(args.uri, emb, meta, metric=args.metric, fingerprint=fp, index_type=args.index, **params)
        except GalleryIndexError as exc:
            raise SystemExit(f"error: {exc}") from None
        vi = gallery.index.vector_index
        print(f"milvus gallery ({vi['type']}, {args.metric}) of {len(gallery.index)} x {gallery.index.dim} from model {fp} -> {args.uri} "
              f"in {time.perf_counter() - t:.1f}s")
        gallery.close()
        return 0
    if not args.out:
        raise SystemExit("error: --out (the index folder to write) is needed with the faiss backend")
    t = time.perf_counter()
    try:
        index = GalleryIndex.build(emb, meta, metric=args.metric, index_type=args.index, fingerprint=fp, **params)
        index.save(args.out)
    except GalleryIndexError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{index.index_type} index ({args.metric}) of {len(index)} x {index.dim} from model {fp} -> {args.out} "
          f"in {time.perf_counter() - t:.1f}s")
    return 0


def entry() -> None:
    """The console script ``reid-index`` (and ``tools/build_index.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
