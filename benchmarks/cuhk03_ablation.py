#!/usr/bin/env python
"""CUHK03-pair1 ablation: the same recipe, budget and seeds with parts switched on and off.

    python benchmarks/cuhk03_ablation.py --data-root ../shared/data/cuhk03 [--arms baseline keypoint htg both] [--seeds 0 1 2]

Each arm is configs/cuhk03_cpu.yaml (or --config) plus its overrides:

- baseline: global feature, biasless softmax + batch-hard triplet
- keypoint: + keypoint blocks on blocks 3 and 4
- htg:      + HTG (adversarial hard triplets after the warm-up)
- both:     + keypoint blocks + HTG

Runs go to RUNS_DIR/<arm>_s<seed>/ (default runs/ablation); a run whose
eval.json exists is not run again, so an interrupted ablation continues where
it stopped. Prints, and writes as RUNS_DIR/ablation.md and .csv, rank-1, rank-5
and mAP (noninterp AP) as mean +- standard deviation over the seeds (training
speed is measured by benchmarks/train_throughput.py, not here: these runs may
share the machine). Protocol CUHK03-pair1: query = val camera A (451),
gallery = val camera B (487), 100 identities.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARMS = {
    "baseline": [],
    "keypoint": ["model.keypoint_blocks=[3,4]"],
    "htg": ["htg.enabled=true"],
    "both": ["model.keypoint_blocks=[3,4]", "htg.enabled=true"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "cuhk03_cpu.yaml"))
    ap.add_argument("--arms", nargs="+", default=["baseline", "keypoint"], choices=sorted(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs-dir", default=os.path.join("runs", "ablation"))
    ap.add_argument("--summary-only", action="store_true", help="only summarise the runs already finished")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    args = ap.parse_intermixed_args()
    if not os.path.isdir(args.data_root):
        raise SystemExit(f"error: data root {args.data_root!r} not found; pass --data-root pointing at the CUHK03 folder")
    for seed in args.seeds:  # seed-major order: an interrupted ablation still has comparable arms
        for arm in args.arms:
            out = os.path.join(args.runs_dir, f"{arm}_s{seed}")
            if os.path.isfile(os.path.join(out, "eval.json")) or args.summary_only:
                continue
            cmd = [sys.executable, os.path.join(ROOT, "tools", "train_reid.py"), "--config", args.config, "--data-root", args.data_root,
                   "--output-dir", out, f"seed={seed}", f"name={arm}_s{seed}", *ARMS[arm], *args.overrides]
            if os.path.isfile(os.path.join(out, "last.pt")):
                cmd.append("--resume")
            elif os.path.isdir(out):
                cmd.append("--overwrite")  # killed before its first checkpoint: nothing to keep
            print("running:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    rows = []
    for arm in args.arms:
        evals = []
        for seed in args.seeds:
            path = os.path.join(args.runs_dir, f"{arm}_s{seed}", "eval.json")
            if os.path.isfile(path):
                with open(path) as fh:
                    evals.append(json.load(fh))
        if not evals:
            continue
        row = {"arm": arm, "seeds": len(evals)}
        for key in ("rank1", "rank5", "mAP"):
            vals = 100 * np.array([e[key] for e in evals])
            row[key] = f"{vals.mean():.1f} +- {vals.std(ddof=1):.1f}" if len(vals) > 1 else f"{vals[0]:.1f} (one seed)"
        row["query/gallery"] = f"{evals[0]['num_query']}/{evals[0]['num_gallery']}"
        rows.append(row)
    if not rows:
        raise SystemExit("no finished run to summarise")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    table = "\n".join(lines)
    print(f"\nCUHK03-pair1, {os.path.basename(args.config)}, AP formula noninterp, mean +- std over seeds\n{table}")
    os.makedirs(args.runs_dir, exist_ok=True)
    with open(os.path.join(args.runs_dir, "ablation.md"), "w") as fh:
        fh.write(table + "\n")
    with open(os.path.join(args.runs_dir, "ablation.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
