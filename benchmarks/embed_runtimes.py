#!/usr/bin/env python
"""Embedding throughput on this CPU: OpenVINO, ONNX Runtime and PyTorch on one model, batch 1 and 64, as ratios in one run.

    python benchmarks/embed_runtimes.py [--checkpoint runs/NAME/last.pt] [--threads 2] [--repeats 5]

Without ``--checkpoint`` it uses a randomly initialised ResNet-18 at 64x32 (the CPU recipes' model; weights do not
change the arithmetic). The model is exported once to ONNX and to OpenVINO (each export checks parity with
PyTorch); the three embedders then run the same uint8 batches, alternating, and the best of ``--repeats`` timings
is kept for each. Prints images/s per runtime and batch size and each runtime's ratio to PyTorch. Needs the serve
and openvino extras.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from reid_htg.checkpoint import save_checkpoint
from reid_htg.models import ReIDNet
from reid_htg.serve.embedder import Embedder
from reid_htg.serve.export import export_onnx, export_openvino


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="reid_rt_")
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        margs = dict(backbone="resnet18", num_classes=10, keypoint_blocks=(), last_stride=2)
        ckpt = os.path.join(work, "m.pt")
        save_checkpoint({"model": ReIDNet(**margs).state_dict(), "model_args": margs, "config": {},
                         "data_args": dict(dataset="synthetic", root=".", args={}, height=64, width=32)}, ckpt)
    parity = {"onnx": export_onnx(ckpt, os.path.join(work, "m.onnx")), "openvino": export_openvino(ckpt, os.path.join(work, "m.xml"))}
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    embedders = {"pytorch": Embedder.load(ckpt), "onnxruntime": Embedder.load(os.path.join(work, "m.onnx")),
                 "openvino": Embedder.from_openvino(os.path.join(work, "m.xml"), threads=args.threads)}
    size = embedders["pytorch"].size
    rng = np.random.default_rng(0)
    print(f"{os.path.basename(ckpt)}: {size[0]}x{size[1]} input, {embedders['pytorch'].dim}-d; {args.threads} thread(s); "
          f"parity onnx {parity['onnx']['max_abs_diff']:.1e}, openvino {parity['openvino']['max_abs_diff']:.1e}")
    print(f"{'batch':>6} " + " ".join(f"{k + ' img/s':>18}" for k in embedders) + f" {'onnxruntime/pytorch':>20} {'openvino/pytorch':>17}")
    for b in args.batches:
        images = rng.integers(0, 256, (max(b, 64) if b > 1 else 32, *size, 3), dtype=np.uint8)
        best = {k: 0.0 for k in embedders}
        for k, e in embedders.items():  # warm up
            e.embed_arrays(images[:b], b)
        for _ in range(args.repeats):
            for k, e in embedders.items():
                t = time.perf_counter()
                e.embed_arrays(images, b)
                best[k] = max(best[k], len(images) / (time.perf_counter() - t))
        print(f"{b:>6} " + " ".join(f"{best[k]:>18.1f}" for k in embedders)
              + f" {best['onnxruntime'] / best['pytorch']:>20.2f} {best['openvino'] / best['pytorch']:>17.2f}")


if __name__ == "__main__":
    main()
