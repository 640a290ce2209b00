"""Serve a gallery index over HTTP: search by embeddings or images, durable adds and deletes (FastAPI + uvicorn).

    python tools/serve.py --index gallery_index --onnx model.onnx [--host 127.0.0.1] [--port 8000]
    python tools/serve.py --index gallery_index --checkpoint runs/NAME/last.pt --api-key SECRET

Writes are committed to SQLite (DATA_DIR/gallery.sqlite, WAL, synchronous)
before they are acknowledged, and folded into an index snapshot
(DATA_DIR/snapshot) every --fold-every writes; a restart loads the snapshot
and replays the log. DATA_DIR defaults to INDEX.service next to the index.
Endpoints: see reid_htg/serve/app.py (GET /health, POST /search, POST /items,
GET and DELETE /items/{id}). Binds to 127.0.0.1 unless --host says otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys

from reid_htg.cli import run_tool
from reid_htg.utils.extras import install_hint


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", help="an index folder of tools/build_index.py (the starting gallery; the faiss backend)")
    ap.add_argument("--backend", choices=("faiss", "milvus"), default="faiss",
                    help="faiss: FAISS + SQLite in --data-dir (one process); milvus: a Milvus collection at --uri (stateless: several processes)")
    ap.add_argument("--uri", help="the milvus backend: a Milvus Lite file (gallery.db) or a server (http://HOST:19530)")
    ap.add_argument("--milvus-flush", action="store_true", help="also flush every write before acknowledging it (milvus backend)")
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a checkpoint of tools/train_reid.py (embeds uploaded images)")
    model.add_argument("--onnx", help="an ONNX file of tools/export.py (embeds uploaded images, no PyTorch model code)")
    ap.add_argument("--data-dir", help="where the SQLite log and snapshots live (default: INDEX.service)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--accept-any-model", action="store_true",
                    help="serve image requests against a gallery that records no model fingerprint (by default only embeddings)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=os.environ.get("REID_API_KEY"), help="required in X-API-Key for writes (default: $REID_API_KEY)")
    ap.add_argument("--fold-every", type=int, default=1000, help="writes between index snapshots")
    ap.add_argument("--max-k", type=int, default=1000)
    ap.add_argument("--max-body-mb", type=float, default=32.0)
    ap.add_argument("--threshold", type=float, help="distance beyond which a query's best match is unknown (default: the index's "
                    "threshold.json of tools/eval.py --save-threshold, if any)")
    args = ap.parse_args(argv)
    try:
        import uvicorn

        from reid_htg.serve.app import create_app
        from reid_htg.serve.embedder import Embedder
        from reid_htg.serve.store import DurableGallery
    except ImportError as exc:
        raise SystemExit(f"error: the service needs the serve extra ({exc.name} is missing): {install_hint('serve')}") from None
    if args.api_key is not None and not args.api_key.strip():
        raise SystemExit("error: the API key (--api-key or REID_API_KEY) is empty, which would leave writes open; set a key, or unset both")
    if args.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} with no API key: anyone who reaches this address can add and delete gallery items; "
              "set --api-key (or REID_API_KEY)", file=sys.stderr)
    if args.backend == "milvus":
        if not args.uri:
            raise SystemExit("error: --backend milvus needs --uri (a Milvus Lite file, or http://HOST:19530)")
        from reid_htg.serve.milvus_store import MilvusGallery

        gallery, data_dir = MilvusGallery(args.uri, flush=args.milvus_flush), args.uri
    else:
        if not args.index:
            raise SystemExit("error: the faiss backend needs --index (an index folder of tools/build_index.py)")
        data_dir = args.data_dir or os.path.abspath(args.index).rstrip("/") + ".service"
        gallery = DurableGallery(data_dir, args.index, fold_every=args.fold_every)
    embedder = Embedder.load(args.onnx or args.checkpoint)
    if embedder.dim != gallery.index.dim:
        raise SystemExit(f"error: the model makes {embedder.dim}-d features but the gallery holds {gallery.index.dim}-d ones; "
                         "serve the model that built the index")
    from reid_htg.retrieval.files import check_threshold, read_threshold

    saved = read_threshold(args.index) if args.index else None
    threshold = check_threshold(args.threshold) if args.threshold is not None else (saved or {}).get("distance")
    app = create_app(gallery, embedder, accept_any_model=args.accept_any_model, api_key=args.api_key, max_k=args.max_k, max_body_bytes=int(args.max_body_mb * 2**20),
                     threshold=threshold)
    print(f"serving {len(gallery.index)} items ({gallery.index.index_type}, {gallery.index.dim}-d) from {data_dir} "
          f"({gallery.replayed} logged writes replayed) on http://{args.host}:{args.port}"
          + (f"; unknown beyond distance {threshold:.4f}" if threshold is not None else ""), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def entry() -> None:
    """The console script ``reid-serve`` (and ``tools/serve.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
