#!/usr/bin/env python
"""HTG across regimes: the learned generator minus its static control against how saturated the real triplets were
when HTG started, one point per regime and dataset, all on one plot.

    python benchmarks/htg_regimes.py --runs-dir runs/regime --out docs/img/htg_regimes.png
    python benchmarks/htg_regimes.py --runs-dir runs/regime --recorded docs/experiments/htg_random_start.csv --out ...

A regime is a recipe's folder under RUNS_DIR (as benchmarks/paired.py writes
it: RUNS_DIR/<recipe>/<arm>_s<seed>/) holding runs of a learned-G arm and its
static-G control (``both_fh2`` and ``both_fh2_static`` by default) on the same
seeds. For each, the point is the paired difference learned minus static of
the headline metric (mAP on re-ID data, Recall@1 on class-level data; test
split) with its 95% interval (Student's t over seeds), placed at the real
triplets' batch-all active fraction of the last epoch before HTG started
(``tri_active_all`` of the last ``htg_on = 0`` row of metrics.csv, the mean
over seeds; the learned and static runs are the same network until then).

``--recorded`` adds points measured earlier whose run folders are not at hand
(a CSV with ``regime, dataset, metric, mean, low, high, active_at_start,
source``); they are drawn hollow and the table names their source.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np
import runner

LABELS = {  # recipe folder -> (regime, dataset) for the legend
    "cuhk03_ft": ("strong start (fine-tuned from Market-501/250)", "CUHK03-pair1"),
    "cub50_long": ("long budget, HTG late (3x epochs)", "CUB-50"),
    "cuhk03": ("random start, CPU recipe", "CUHK03-pair1"),
    "market": ("random start, CPU recipe", "Market-501/250"),
    "cub50": ("random start, CPU recipe", "CUB-50"),
    "small": ("random start, small setting", "CUHK03-pair1 (small)"),
}


def active_at_start(run_dir: str) -> float | None:
    """``tri_active_all`` of the last epoch before HTG started in a run (None if HTG never started or no log)."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    before = [r for r in rows if r.get("htg_on") in ("0", 0)]
    if not before or len(before) == len(rows):
        return None
    return float(before[-1]["tri_active_all"])


def regime_point(base: str, learned: str, static: str, seeds: list[int]) -> dict | None:
    """The paired learned - static difference under ``base`` and the active fraction at HTG's start."""
    diffs, actives, key = [], [], None
    for s in seeds:
        a, b = runner.result_file(runner.run_dir(base, learned, s), False), runner.result_file(runner.run_dir(base, static, s), False)
        if not (os.path.isfile(a) and os.path.isfile(b)):
            continue
        ma, mb = runner.read_metrics(a), runner.read_metrics(b)
        key = "mAP" if "mAP" in ma else "recall@1"
        diffs.append(ma[key] - mb[key])
        act = active_at_start(runner.run_dir(base, learned, s))
        if act is not None:
            actives.append(act)
    if not diffs:
        return None
    m, lo, hi = runner.paired_ci(diffs)
    return {"metric": key, "mean": m, "low": lo, "high": hi, "pairs": len(diffs),
            "active_at_start": float(np.mean(actives)) if actives else float("nan"), "per_seed": diffs}


def plot(points: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(1.0, color="tab:green", lw=0.8, ls="--", label="target: +1.0 (interval above 0)")
    markers = {"CUHK03-pair1": "o", "Market-501/250": "s", "CUB-50": "^", "CUHK03-pair1 (small)": "D"}
    colours = {}
    for p in points:
        colour = colours.setdefault(p["regime"], f"C{len(colours)}")
        x = p["active_at_start"]
        err = [[p["mean"] - p["low"]], [p["high"] - p["mean"]]] if np.isfinite(p["low"]) else None
        ax.errorbar([x], [p["mean"]], yerr=err, fmt=markers.get(p["dataset"], "o"), color=colour, capsize=4, ms=8,
                    mfc="none" if p.get("recorded") else colour,
                    label=f"{p['regime']}: {p['dataset']} ({p['metric']}, {p['pairs']} pairs{', recorded' if p.get('recorded') else ''})")
    ax.set_xlabel("real triplets' batch-all active fraction when HTG starts")
    ax.set_ylabel("learned G - static G (points; 95% interval)")
    ax.set_title("Does the adversary add anything? Learned vs static generator, paired seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default=os.path.join("runs", "regime"))
    ap.add_argument("--recipes", nargs="+", default=sorted(LABELS), help="recipe folders under --runs-dir to look in")
    ap.add_argument("--learned", default="both_fh2")
    ap.add_argument("--static", default="both_fh2_static")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    ap.add_argument("--recorded", help="a CSV of points measured earlier (regime, dataset, metric, mean, low, high, active_at_start, source)")
    ap.add_argument("--out", default="htg_regimes.png")
    args = ap.parse_args()
    points = []
    for recipe in args.recipes:
        p = regime_point(os.path.join(args.runs_dir, recipe), args.learned, args.static, args.seeds)
        if p:
            regime, dataset = LABELS.get(recipe, (recipe, recipe))
            points.append(dict(p, regime=regime, dataset=dataset, source=f"{args.runs_dir}/{recipe}"))
    if args.recorded:
        with open(args.recorded, newline="") as fh:
            for r in csv.DictReader(fh):
                points.append({"regime": r["regime"], "dataset": r["dataset"], "metric": r["metric"], "mean": float(r["mean"]),
                               "low": float(r["low"]), "high": float(r["high"]), "pairs": int(r["pairs"]),
                               "active_at_start": float(r["active_at_start"]), "source": r["source"], "recorded": True})
    if not points:
        raise SystemExit(f"error: no paired {args.learned} / {args.static} runs under {args.runs_dir} ({args.recipes}) and no --recorded file")
    plot(points, args.out)
    lines = ["| regime | dataset | metric | pairs | active at HTG start | learned - static [95% CI] | source |", "|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['regime']} | {p['dataset']} | {p['metric']} | {p['pairs']} | {p['active_at_start']:.3f} | "
                     f"{p['mean']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}] | {p['source']} |")
    print("\n".join(lines))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump(points, fh, indent=2)
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.json")


if __name__ == "__main__":
    main()
