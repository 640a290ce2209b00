#!/usr/bin/env python
"""Training throughput: the full pipeline against a plain loop of the same model, as a ratio.

    python benchmarks/train_throughput.py [--backbone resnet18] [--height 64 --width 32] [--device cuda]
    python benchmarks/train_throughput.py --checkpoint runs/market_source/last.pt [--subnormal-share 0.6]

The full pipeline is tools/train_reid.py itself (run as a process) (cached loader, P x K sampler,
batch augmentation, model, softmax + triplet losses, optimiser, schedule) for
two epochs on the synthetic set; its images/s is the second epoch's, from
metrics.csv. The plain loop runs the same network, losses and optimiser on one
batch of random tensors already on the device. Target: the pipeline keeps at
least 80% of the plain loop's images/s (the input pipeline is not the
bottleneck).

With ``--checkpoint``, the step time of a late-epoch model against a fresh one
of the same architecture (its training step, optimiser state and input size,
random batches, CPU): the ratio with subnormal floats flushed (the default of
every tool) and computed exactly. Target: late / fresh <= 1.1 with flushing.
``--subnormal-share S`` first sets that share of every convolution's filters
(and their Adam moments) to subnormal values, as Adam with L2 decay leaves
dead filters, for a checkpoint that has none.
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


def make_subnormal(model, optimizer, share: float, seed: int = 0) -> int:
    """Make ``share`` of every convolution's filters dead the way Adam + L2 decay leaves them; returns how many values.

    A dead filter's weights, its BatchNorm's scale and shift and their Adam moments are all subnormal (|x| < 1.2e-38).
    """
    gen = torch.Generator().manual_seed(seed)
    modules = list(model.modules())
    n = 0

    def tiny_(t, rows):
        nonlocal n
        t[rows] = torch.rand(len(rows), *t.shape[1:], generator=gen) * 1e-39
        n += t[rows].numel()
        st = optimizer.state.get(t, {})
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if key in st:
                st[key][rows] = torch.rand(len(rows), *t.shape[1:], generator=gen) * 1e-39

    with torch.no_grad():
        for i, conv in enumerate(modules):
            if not isinstance(conv, torch.nn.Conv2d):
                continue
            rows = torch.randperm(conv.out_channels, generator=gen)[: int(round(share * conv.out_channels))]
            tiny_(conv.weight, rows)
            bn = next((m for m in modules[i + 1:] if isinstance(m, torch.nn.BatchNorm2d)), None)
            if bn is not None and bn.num_features == conv.out_channels and bn.affine:
                tiny_(bn.weight, rows)
                tiny_(bn.bias, rows)
    return n


def step_seconds(state: dict, fresh: bool, flush: bool, steps: int, subnormal_share: float = 0.0) -> float:
    """Median seconds of one training step of the checkpoint's model (``fresh``: newly initialised weights) on random batches."""
    from reid_htg.checkpoint import model_from_checkpoint
    from reid_htg.config import from_dict
    from reid_htg.device import flush_denormal
    from reid_htg.models import ReIDNet

    cfg = from_dict(TrainConfig, state["config"])
    torch.manual_seed(0)
    model = ReIDNet(**state["model_args"]) if fresh else model_from_checkpoint(state)
    opt, sched = build_optimization(cfg, model.parameters(), steps + 2)
    if not fresh and state.get("optimizer"):
        opt.load_state_dict(state["optimizer"])
    if subnormal_share and not fresh:
        make_subnormal(model, opt, subnormal_share)
    step = build_train_step(cfg, model.train(), opt, sched, None, torch.device("cpu"))
    d, b = state["data_args"], cfg.data.p * cfg.data.k
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(cfg.data.p).repeat_interleave(cfg.data.k) % state["model_args"]["num_classes"]
    flush_denormal(flush)
    times = []
    try:
        for i in range(steps + 1):
            x = torch.randn(b, 3, d["height"], d["width"], generator=gen)
            t = time.perf_counter()
            step(x, y, y)
            if i:  # the first step allocates
                times.append(time.perf_counter() - t)
    finally:
        flush_denormal(True)
    return sorted(times)[len(times) // 2]


def late_vs_fresh(args) -> None:
    from reid_htg.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    share = args.subnormal_share
    rows = []
    for flush in (True, False):
        fresh = step_seconds(state, True, flush, args.steps)
        late = step_seconds(state, False, flush, args.steps, share)
        rows.append((flush, late, fresh))
    what = f" with {share:.0%} of its filters made subnormal" if share else ""
    print(f"\n{args.checkpoint} (epoch {state.get('epoch', '?')}){what}, CPU, {torch.get_num_threads()} thread(s), median of {args.steps} steps")
    for flush, late, fresh in rows:
        print(f"subnormals {'flushed ' if flush else 'computed'}: late {late * 1e3:.0f} ms/step, fresh {fresh * 1e3:.0f} ms/step, ratio {late / fresh:.2f}")
    ratio = rows[0][1] / rows[0][2]
    print(f"target late / fresh <= 1.10 with flushing: {'PASS' if ratio <= 1.1 else 'MISS'}")


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--ids", type=int, default=64, help="synthetic training identities (sets the epoch length)")
    ap.add_argument("--work-dir", default=None, help="where the synthetic set and the run go (default: a temporary folder)")
    ap.add_argument("--checkpoint", help="time a late-epoch checkpoint's training step against a fresh model's instead")
    ap.add_argument("--subnormal-share", type=float, default=0.0, help="with --checkpoint: make this share of its filters subnormal first")
    ap.add_argument("--steps", type=int, default=10, help="with --checkpoint: steps timed per arm")
    args = ap.parse_args()
    if args.checkpoint:
        if not 0 <= args.subnormal_share <= 1 or args.steps < 1:
            raise SystemExit("error: --subnormal-share must be in [0, 1] and --steps >= 1")
        late_vs_fresh(args)
        return
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
