"""Embed images with a trained checkpoint, or its ONNX export, into an embeddings file.

    python tools/embed.py --checkpoint runs/NAME/last.pt --images DIR --out gallery.npz
    python tools/embed.py --checkpoint runs/NAME/last.pt --dataset cuhk03 --data-root PATH --split gallery --out gallery.npz
    python tools/embed.py --onnx model.onnx --images DIR --out gallery.npz     # onnxruntime, no PyTorch model code

The .npz holds `embeddings` (N x D float32), one array per metadata column
(`path`, and `pid`, `camid`, `split` for a dataset) and `fingerprint`, the
hash of the model's weights that the index checks queries against. A
dataset's query and gallery files evaluate as they are:
`tools/eval.py --query q.npz --gallery g.npz`.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from reid_htg.cli import positive_int, run_tool
from reid_htg.data import SPLITS, build_dataset, split_of
from reid_htg.data.readers import list_images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a checkpoint of tools/train_reid.py")
    model.add_argument("--onnx", help="a model exported by tools/export.py (needs the serve extra)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (searched recursively)")
    src.add_argument("--dataset", help="a dataset name (with --data-root and --split)")
    ap.add_argument("--data-root")
    ap.add_argument("--split", choices=SPLITS, default="gallery")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--batch-size", type=positive_int, default=128)
    ap.add_argument("--device")
    args = ap.parse_args(argv)
    if not args.out.endswith(".npz"):
        raise SystemExit(f"error: --out {args.out!r} must end in .npz (numpy would add the suffix and the tools would not find the file)")
    try:
        if args.images:
            columns = {"path": np.array(list_images(args.images))}
        else:
            if not args.data_root:
                raise SystemExit("error: --dataset needs --data-root")
            part = split_of(build_dataset(args.dataset, args.data_root), args.split)
            if len(part) == 0:
                raise SystemExit(f"error: {args.dataset} has no {args.split} images")
            columns = {c: part[c].to_numpy() for c in ("path", "pid", "camid", "split")}
            columns["path"] = columns["path"].astype(str)
            columns["split"] = columns["split"].astype(str)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.onnx:
        from reid_htg.serve.embedder import Embedder

        embedder = Embedder.from_onnx(args.onnx)
        emb, fp = embedder.embed_paths(list(columns["path"]), args.batch_size), embedder.fingerprint
    else:
        from reid_htg.checkpoint import load_checkpoint
        from reid_htg.features import embed_images
        from reid_htg.utils.hashing import model_fingerprint

        state = load_checkpoint(args.checkpoint)
        emb, fp = embed_images(state, columns["path"], args.batch_size, args.device), model_fingerprint(state["model"])
    np.savez(args.out, embeddings=emb, fingerprint=np.array(fp), **columns)
    print(f"{len(emb)} embeddings of dimension {emb.shape[1]} from model {fp} -> {args.out}")
    return 0


def entry() -> None:
    """The console script ``reid-embed`` (and ``tools/embed.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
