#!/usr/bin/env python
"""Training throughput: the full pipeline against a plain loop of the same model, as a ratio.

    python benchmarks/train_throughput.py [--backbone resnet18] [--height 64 --width 32] [--device cuda]

The full pipeline is tools/train_reid.py itself (run as a process) (cached loader, P x K sampler,
batch augmentation, model, softmax + triplet losses, optimiser, schedule) for
two epochs on the synthetic set; its images/s is the second epoch's, from
metrics.csv. The plain loop runs the same network, losses and optimiser on one
batch of random tensors already on the device. Target: the pipeline keeps at
least 80% of the plain loop's images/s (the input pipeline is not the
bottleneck).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import torch

from reid_htg.builders import build_htg, build_model, build_optimization, build_train_step
from reid_htg.config import TrainConfig, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_overrides(args) -> list[str]:
    """The model and batch options as tools/train_reid.py overrides (the pipeline and the plain loop share them)."""
    return [
        f"data.height={args.height}", f"data.width={args.width}", f"data.p={args.p}", f"data.k={args.k}",
        f"model.backbone={args.backbone}", f"model.keypoint_blocks={list(args.keypoint_blocks)}", f"model.last_stride={args.last_stride}",
    ]


def plain_loop(args, device, num_classes: int, iters: int, htg: bool = False) -> float:
    """Images/s of the bare training step on one random batch; with ``htg``, HTG's D, G and hard-triplet terms too.

    The step is tools/train_reid.py's own (reid_htg.training.TrainStep from the same builders: loss weights, label
    smoothing, HTG's three steps), so the ratio compares the same work with and without the input pipeline.
    """
    cfg = load_config(TrainConfig, None, config_overrides(args) + [f"htg.enabled={htg}"])
    model = build_model(cfg, num_classes).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = build_optimization(cfg, model.parameters(), iters + 3)
    gen_adv = build_htg(cfg, model.dim, num_classes)
    gen_adv = gen_adv.to(device) if gen_adv is not None else None
    step = build_train_step(cfg, model.train(), opt, sched, gen_adv, device)
    b = args.p * args.k
    x = torch.randn(b, 3, args.height, args.width, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(args.p, device=device).repeat_interleave(args.k) % num_classes
    for i in range(iters + 3):
        if i == 3:
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
        step(x, y, y, htg_on=gen_adv is not None)
    if cuda:
        torch.cuda.synchronize()
    return iters * b / (time.perf_counter() - t)


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of the model and batch options shared by the training benchmarks."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--p", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--keypoint-blocks", type=int, nargs="*", default=[])
    ap.add_argument("--last-stride", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--ids", type=int, default=64, help="synthetic training identities (sets the epoch length)")
    ap.add_argument("--work-dir", default=None, help="where the synthetic set and the run go (default: a temporary folder)")
    args = ap.parse_args()
    device = torch.device(args.device)
    work = args.work_dir or tempfile.mkdtemp(prefix="reid_tp_")
    name = "throughput"
    overrides = [
        f"name={name}", "epochs=2", *config_overrides(args), "log_every=1000",
        f"data.args={{num_train_ids: {args.ids}, num_test_ids: 4, images_per_cam: 4, num_cams: 3, size: [{args.height}, {args.width}]}}",
    ]
    out_dir = os.path.join(work, "run")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_reid.py"), "--data-root", os.path.join(work, "syn"),
                    "--output-dir", out_dir, "--device", args.device, *overrides], check=True)
    with open(os.path.join(out_dir, "metrics.csv")) as fh:
        rows = list(csv.DictReader(fh))
    pipeline = float(rows[-1]["img_per_s"])
    iters = max(10, int(args.ids * 3 * 4 / (args.p * args.k)))
    plain = plain_loop(args, device, args.ids, iters)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.backbone} {args.height}x{args.width}, batch {args.p}x{args.k}, keypoint blocks {args.keypoint_blocks}, on {dev}")
    print(f"full pipeline {pipeline:.1f} img/s   plain loop {plain:.1f} img/s   ratio {pipeline / plain:.3f}")
    print(f"target >= 0.80: {'PASS' if pipeline / plain >= 0.8 else 'MISS'}")


if __name__ == "__main__":
    main()
