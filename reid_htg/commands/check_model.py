"""Check a trained model's health: dead convolution filters per stage, subnormal weights, silent channels.

    python tools/check_model.py --checkpoint runs/NAME/last.pt                  # from the weights alone
    python tools/check_model.py --checkpoint runs/NAME/last.pt --data-root DIR  # + silent channels on training images
    python tools/check_model.py --checkpoint runs/NAME/last.pt --json health.json

A dead filter is a convolution output channel whose weights are all below
1e-20 in magnitude (it contributes nothing and never recovers); a silent
channel is a conv-BN-ReLU channel that is zero for every position of 64
training images in eval mode (reid_htg/models/health.py). Silent channels are
measured on the checkpoint's own dataset (its recorded folder, or
``--data-root``); without readable images only the weights are checked. Exit 0
when every stage has at most ``--max-dead`` dead filters, 1 when one has more.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from reid_htg.checkpoint import load_checkpoint, model_from_checkpoint
from reid_htg.cli import run_tool
from reid_htg.data import DatasetError, build_dataset
from reid_htg.data.dataset import ImageSet
from reid_htg.data.transforms import normalize
from reid_htg.models.health import DEAD_THRESHOLD, STAGES, dead_filters, dead_filters_by_layer, silent_channels

SUBNORMAL = float(np.finfo(np.float32).tiny)  # 1.18e-38: below it (and above 0) a float32 is subnormal


def subnormal_counts(tensors) -> tuple[int, int, int]:
    """(subnormal, exactly zero, all) entries of float32 tensors."""
    sub = zero = total = 0
    for t in tensors:
        if not torch.is_floating_point(t):
            continue
        a = t.detach().abs()
        sub += int(((a > 0) & (a < SUBNORMAL)).sum())
        zero += int((a == 0).sum())
        total += a.numel()
    return sub, zero, total


def probe_images(state: dict, data_root: str | None, n: int = 64) -> tuple[torch.Tensor | None, str]:
    """``n`` training images of the checkpoint's dataset, normalised, or (None, why not)."""
    d = state["data_args"]
    root = data_root or d.get("root")
    if not root or not os.path.exists(root):  # never generate a synthetic set here
        return None, f"the dataset folder {root!r} is not here; pass --data-root"
    try:
        df = build_dataset(d["dataset"], root, **(d.get("args") or {}))
    except (DatasetError, OSError, TypeError) as exc:
        return None, f"no training images ({exc}); pass --data-root"
    train = df[df["split"] == "train"] if "split" in df else df
    if len(train) == 0:
        return None, f"{d['dataset']} at {root} has no training images"
    idx = np.linspace(0, len(train) - 1, min(n, len(train))).astype(int)
    paths = train["path"].to_numpy()[idx]
    images = ImageSet(paths, np.zeros(len(paths)), np.zeros(len(paths)), (d["height"], d["width"]), cache=False)
    x, _, _ = images.batch(range(len(paths)))
    return normalize(x), f"{len(paths)} training images of {d['dataset']} at {root}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint of tools/train_reid.py (RUN/last.pt)")
    ap.add_argument("--data-root", help="the dataset folder for silent channels (default: the one the checkpoint records)")
    ap.add_argument("--max-dead", type=float, default=0.05, help="exit 1 when a stage has a larger share of dead filters (default 0.05)")
    ap.add_argument("--top", type=int, default=5, help="list this many convolutions with the most dead filters")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    if not 0 <= args.max_dead <= 1:
        raise SystemExit(f"error: --max-dead {args.max_dead} must be a share in [0, 1]")
    if args.top < 0:
        raise SystemExit(f"error: --top {args.top} must be >= 0")
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state)
    dead = dead_filters(model)
    by_layer = sorted(dead_filters_by_layer(model), key=lambda r: -r[1] / r[2])
    w_sub, w_zero, w_all = subnormal_counts(model.parameters())
    opt_state = (state.get("optimizer") or {}).get("state", {})
    m_sub, m_zero, m_all = subnormal_counts(t for s in opt_state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    x, where = probe_images(state, args.data_root)
    silent = silent_channels(model, x) if x is not None else None

    print(f"{args.checkpoint}: {state['model_args']['backbone']}, epoch {state.get('epoch', '?')}")
    print(f"{'stage':<8} {'dead filters':>12}" + (f" {'silent channels':>16}" if silent else ""))
    for s in [*STAGES, "all"]:
        if s in dead:
            print(f"{s:<8} {dead[s]:>11.1%}" + (f" {silent[s]:>15.1%}" if silent and s in silent else ""))
    print(f"dead: max |w| < {DEAD_THRESHOLD:g} over a filter; silent: zero after conv-BN-ReLU on {where if silent else 'no images'}")
    if silent is None:
        print(f"silent channels not measured: {where}")
    for name, d, n in by_layer[: args.top]:
        if d:
            print(f"  {name}: {d}/{n} dead ({d / n:.0%})")
    print(f"weights: {w_sub:,} subnormal, {w_zero:,} exactly zero of {w_all:,}"
          + (f"; optimiser state: {m_sub:,} subnormal, {m_zero:,} zero of {m_all:,}" if m_all else ""))
    worst = max((v for k, v in dead.items() if k != "all"), default=0.0)
    report = {"checkpoint": args.checkpoint, "epoch": state.get("epoch"), "dead_filters": dead, "silent_channels": silent,
              "dead_by_layer": [{"name": n, "dead": d, "filters": c} for n, d, c in dead_filters_by_layer(model)],
              "subnormal_weights": w_sub, "zero_weights": w_zero, "weights": w_all,
              "subnormal_optimizer_state": m_sub, "optimizer_state": m_all, "max_dead": args.max_dead, "ok": worst <= args.max_dead}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    if worst > args.max_dead:
        print(f"a stage has {worst:.1%} dead filters (> {args.max_dead:.0%}): see docs/training.md, 'Dead filters'", file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    """The console script ``reid-check-model`` (and ``tools/check_model.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
