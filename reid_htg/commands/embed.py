"""Embed images with a trained checkpoint, or its ONNX export, into an embeddings file.

    python tools/embed.py --checkpoint runs/NAME/last.pt --images DIR --out gallery.npz
    python tools/embed.py --checkpoint runs/NAME/last.pt --dataset cuhk03 --data-root PATH --split gallery --out gallery.npz
    python tools/embed.py --onnx model.onnx --images DIR --out gallery.npz     # onnxruntime, no PyTorch model code
    torchrun --nproc_per_node 4 tools/embed.py --checkpoint CKPT --images DIR --out gallery.npz   # one shard per process, merged

The .npz holds `embeddings` (N x D float32), one array per metadata column
(`path`, and `pid`, `camid`, `split` for a dataset) and `fingerprint`, the
hash of the model's weights that the index checks queries against. A
dataset's query and gallery files evaluate as they are:
`tools/eval.py --query q.npz --gallery g.npz`.
"""
from __future__ import annotations

import argparse
import math
import os
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
        fp = embedder.fingerprint

        def embed(paths):
            return embedder.embed_paths(list(paths), args.batch_size)
    else:
        from reid_htg.checkpoint import load_checkpoint
        from reid_htg.features import embed_images
        from reid_htg.utils.hashing import model_fingerprint

        state = load_checkpoint(args.checkpoint)
        fp = model_fingerprint(state["model"])

        def embed(paths):
            return embed_images(state, paths, args.batch_size, args.device)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        return embed_sharded(embed, columns, fp, args, rank, world)
    emb = embed(columns["path"])
    save_npz(args.out, embeddings=emb, fingerprint=np.array(fp), **columns)
    print(f"{len(emb)} embeddings of dimension {emb.shape[1]} from model {fp} -> {args.out}")
    return 0


def save_npz(out: str, /, **arrays) -> None:
    """``np.savez`` to a temporary file, then renamed: an interrupted write never leaves a truncated file under the name."""
    tmp = f"{out[:-4]}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def embed_sharded(embed, columns: dict, fp: str, args, rank: int, world: int) -> int:
    """Under ``torchrun``: each process embeds one contiguous shard (whole batches), writes OUT.shard-R-of-W.npz, and
    process 0 merges the shards in order into OUT. A shard already on disk for the same images and model is kept, so
    an interrupted run resumes with the shards it has."""
    import hashlib

    import torch.distributed as dist

    dist.init_process_group("gloo")
    n, b = len(columns["path"]), args.batch_size
    batches = math.ceil(n / b)
    per = math.ceil(batches / world) * b  # images per process: shard edges fall on batch edges, so the batches are a one-process run's
    lo, hi = min(rank * per, n), min((rank + 1) * per, n)
    key = hashlib.sha256(("\n".join(map(str, columns["path"])) + fp + str(b)).encode()).hexdigest()[:16]
    shard = f"{args.out[:-4]}.shard-{rank}-of-{world}.npz"
    have = None
    if os.path.isfile(shard):
        with np.load(shard) as f:
            if str(f["key"]) == key and int(f["lo"]) == lo and int(f["hi"]) == hi:
                have = f["embeddings"]
    if have is None:
        have = embed(columns["path"][lo:hi]) if hi > lo else np.zeros((0, 0), np.float32)
        save_npz(shard, embeddings=have, key=np.array(key), lo=np.array(lo), hi=np.array(hi))
        print(f"rank {rank}: {hi - lo} embeddings -> {shard}", flush=True)
    else:
        print(f"rank {rank}: {shard} already holds images {lo}-{hi} of this model: kept", flush=True)
    dist.barrier()
    if rank == 0:
        parts = []
        for r in range(world):
            with np.load(f"{args.out[:-4]}.shard-{r}-of-{world}.npz") as f:
                if f["embeddings"].size:
                    parts.append(f["embeddings"])
        emb = np.concatenate(parts)
        save_npz(args.out, embeddings=emb, fingerprint=np.array(fp), **columns)
        for r in range(world):
            os.remove(f"{args.out[:-4]}.shard-{r}-of-{world}.npz")
        print(f"{len(emb)} embeddings of dimension {emb.shape[1]} from model {fp}, {world} shards merged -> {args.out}")
    dist.barrier()
    dist.destroy_process_group()
    return 0


def entry() -> None:
    """The console script ``reid-embed`` (and ``tools/embed.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
