#!/usr/bin/env python
"""Cost of HTG per training step against the basic model, as a ratio measured in one run.

    python benchmarks/htg_cost.py [--backbone resnet18 --height 64 --width 32] [--device cuda] [--repeats 3]

Both loops run the same network, losses and optimiser on one random batch on
the device, built by reid_htg.builders from the default config; the HTG loop
adds one D step, one G step and the hard-triplet term each iteration (the
adversarial phase after warm-up), with the config's HTG defaults. The loops alternate and
the best of ``--repeats`` is kept for each. Target: at most 15% more time per step.
"""
from __future__ import annotations

import torch
from train_throughput import bench_parser, plain_loop


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--classes", type=int, default=743, help="training identities (sizes D's output)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    base, htg = 0.0, 0.0
    for _ in range(args.repeats):
        base = max(base, plain_loop(args, device, args.classes, args.iters))
        htg = max(htg, plain_loop(args, device, args.classes, args.iters, htg=True))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    b = args.p * args.k
    print(f"{args.backbone} {args.height}x{args.width}, batch {b}, {args.classes} identities, on {dev}")
    print(f"basic step {1000 * b / base:.1f} ms   HTG step {1000 * b / htg:.1f} ms   ratio {base / htg:.3f}")
    print(f"target <= 1.15: {'PASS' if base / htg <= 1.15 else 'MISS'}")


if __name__ == "__main__":
    main()
