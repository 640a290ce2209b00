#!/usr/bin/env python
"""Arms x seeds x datasets with paired seeds: run what is missing, then print each arm against a reference arm.

    python benchmarks/paired.py --dataset small --arms basic htg htg_semi --seeds 0 1 2 3 4 5 6 7 --val
    python benchmarks/paired.py --dataset cuhk03 --arms keypoint both_gl --reference keypoint --seeds 0 1 2
    python benchmarks/paired.py --dataset market --arms keypoint both_gl --reference keypoint --seeds 0 1 2
    python benchmarks/paired.py --dataset small --arms basic htg --seeds 0 1 --summary-only
    python benchmarks/paired.py --dataset small --arm mine="htg.enabled=true htg.lr=1e-3" --arms basic mine

Every run is ``tools/train_reid.py`` with the dataset's config, ``seed=S``
and the arm's overrides, written to RUNS_DIR/<dataset>/<arm>_s<seed>/
(default RUNS_DIR: runs/paired); a finished run (its result file exists) is
skipped and an interrupted one resumed, so the script continues where it
stopped. Runs go seed by seed (all arms of seed 0, then seed 1 ...), so an
interrupted benchmark still has complete pairs; run two copies with disjoint
``--seeds`` to use two cores, then once more with every seed to summarise.

``--val`` is for choosing settings: each run holds out ``--val-ids``
training identities (``data.val_ids``, the same ones for every run), never
evaluates the test split, and the table reads the validation split. Without
it the table reads the test split (``eval.json``): evaluate each test split
once per decision, with the settings chosen on validation.

The table gives, per arm, the mean +- sd over seeds of rank-1 and mAP
(Recall@1 and MAP@R on class-level data) and, for every arm but the reference,
the paired difference to the reference (same seeds): its mean and 95%
confidence interval (Student's t over the per-seed differences). Written as
RUNS_DIR/<dataset>/paired[_val].md and .csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")

DATASETS = {  # name -> (config, default data root, protocol)
    "small": ("augmenters_small.yaml", os.path.join(SHARED, "cuhk03"), "CUHK03-pair1, small setting (ResNet-10-T, 32x16, 3 epochs)"),
    "cuhk03": ("cuhk03_cpu.yaml", os.path.join(SHARED, "cuhk03"), "CUHK03-pair1, CPU recipe (ResNet-18, 64x32, 8 epochs)"),
    "market": ("market_cpu.yaml", os.path.join(SHARED, "market1501"), "Market-501/250, CPU recipe (ResNet-18, 64x32)"),
    "cub50": ("cub50_cpu.yaml", os.path.join(SHARED, "cub50", "images"), "CUB-50, CPU recipe (ResNet-18, 64x64, 20 epochs)"),
}
HTG = ["htg.enabled=true"]  # every arm below names each HTG key a default ever changed, so no arm changes with the defaults
OLD = HTG + ["htg.g_label=1.0", "htg.lr=0.0002", "htg.f_hard=0.5"]  # G's balance, its learning rate and F's hard weight before session 4
BH_REV = OLD + ["htg.mining=batch_hard", "htg.g_target=reversed"]  # the first implementation's choices
SEMI_HARD = OLD + ["htg.mining=semi_hard", "htg.g_target=hard"]  # session 3's choice
CHOSEN = HTG + ["htg.mining=semi_hard", "htg.g_target=hard", "htg.g_label=0.1", "htg.lr=0.001", "htg.f_hard=0.5"]  # session 4's choice
ARMS = {  # name -> overrides; every HTG arm names its variant, so no arm changes when a default does
    "basic": [],
    "keypoint": ["model.keypoint_blocks=[3,4]"],
    "htg": BH_REV,
    "htg_hard": OLD + ["htg.mining=batch_hard", "htg.g_target=hard"],
    "htg_semi": OLD + ["htg.mining=semi_hard", "htg.g_target=reversed"],
    "htg_semi_hard": SEMI_HARD,
    "htg_sq": BH_REV + ["htg.distance=sqeuclidean", "htg.margin=0.2"],
    "htg_sgd": BH_REV + ["htg.optimizer=sgd", "htg.lr=0.01"],
    # controls: G never steps (G = identity), so F's hard term is one more triplet loss on the same triplets
    "htg_static": BH_REV + ["htg.g_steps=0"],
    "htg_semi_static": SEMI_HARD + ["htg.g_steps=0"],
    # G's balance: label preservation (D's and the classifier's cross-entropy) weighted down so the triplet target leads
    "htg_gl01": SEMI_HARD + ["htg.g_label=0.1"],
    "htg_gl01_lr": CHOSEN,
    "htg_rev_gl01": SEMI_HARD + ["htg.g_target=reversed", "htg.g_label=0.1"],
    # session 5: how much G may move (g_close) and how much the embedding network learns from G's triplets (f_hard)
    "htg_gl01_lr_close": CHOSEN + ["htg.g_close=1.0"],
    "htg_gl01_lr_fh1": CHOSEN + ["htg.f_hard=1.0"],
    "htg_gl01_lr_fh1_static": CHOSEN + ["htg.f_hard=1.0", "htg.g_steps=0"],
    "htg_gl01_lr_fh2": CHOSEN + ["htg.f_hard=2.0"],  # session 5's choice, the config defaults
    "htg_gl01_lr_fh2_static": CHOSEN + ["htg.f_hard=2.0", "htg.g_steps=0"],
    "both": ["model.keypoint_blocks=[3,4]", *SEMI_HARD],  # session 3's choice, kept for its table
    "both_gl": ["model.keypoint_blocks=[3,4]", *CHOSEN],  # keypoint blocks + session 4's choice
    "both_gl_static": ["model.keypoint_blocks=[3,4]", *CHOSEN, "htg.g_steps=0"],  # its control: G stays the identity
    "both_fh2": ["model.keypoint_blocks=[3,4]", *CHOSEN, "htg.f_hard=2.0"],  # keypoint blocks + session 5's choice
    "both_fh2_static": ["model.keypoint_blocks=[3,4]", *CHOSEN, "htg.f_hard=2.0", "htg.g_steps=0"],  # its control
}


def paired_ci(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its Student-t confidence interval ``(mean, low, high)`` (nan bounds for one pair).

    >>> [round(v, 3) for v in paired_ci([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
    """
    d = np.asarray(diffs, float)
    m = float(d.mean())
    if len(d) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return m, m - half, m + half


def result_file(run_dir: str, val: bool) -> str:
    return os.path.join(run_dir, "val.json" if val else "eval.json")


def read_metrics(path: str) -> dict[str, float]:
    """The two headline metrics of a result file, in %: rank-1 / mAP (re-ID) or Recall@1 / MAP@R (class-level)."""
    with open(path) as fh:
        r = json.load(fh)
    if "rank1" in r:
        return {"rank1": 100 * r["rank1"], "mAP": 100 * r["mAP"]}
    return {"recall@1": 100 * r["recall@1"], "map@r": 100 * r["map@r"]}


def run(dataset: str, arm: str, overrides: list[str], seed: int, args) -> None:
    cfg, default_root, _ = DATASETS[dataset]
    out = os.path.join(args.runs_dir, dataset, f"{arm}_s{seed}")
    if os.path.isfile(result_file(out, args.val)):
        return
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_reid.py"), "--config", os.path.join(ROOT, "configs", cfg),
           "--data-root", args.data_root or default_root, "--output-dir", out, f"seed={seed}", f"name={arm}_s{seed}", *overrides]
    if args.val:
        cmd += [f"data.val_ids={args.val_ids}", "eval_test=false"]
    cmd += args.overrides
    if os.path.isfile(os.path.join(out, "last.pt")):
        cmd.append("--resume")
    elif os.path.isdir(out):
        cmd.append("--overwrite")  # killed before its first checkpoint: nothing to keep
    print("running:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


DIAGNOSTICS = ["g_shift", "d_auc", "d_id_acc", "gap_change", "emb_norm"]  # HTG's per-epoch columns of metrics.csv


def diagnostics(base: str, arms: list[str], seeds: list[int]) -> str:
    """HTG's diagnostics at each run's last epoch, min to max over seeds per arm (``""`` when no run has them)."""
    rows = []
    for arm in arms:
        last = []
        for seed in seeds:
            path = os.path.join(base, f"{arm}_s{seed}", "metrics.csv")
            if os.path.isfile(path):
                with open(path, newline="") as fh:
                    table = list(csv.DictReader(fh))
                if table and table[-1].get("g_shift"):
                    last.append({k: float(table[-1][k]) for k in DIAGNOSTICS if table[-1].get(k)})
        if last:
            cells = []
            for k in DIAGNOSTICS:
                v = [r[k] for r in last if k in r]
                cells.append(f"{min(v):.3g} to {max(v):.3g}" if v else "")
            rows.append(f"| {arm} | {len(last)} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = "HTG diagnostics at the last epoch, min to max over seeds (g_shift = |G(f) - f| / |f|; d_auc: D's real-vs-generated AUC; " \
           "d_id_acc: D's identity accuracy on real features; gap_change: generated minus real triplet gap; emb_norm: mean |f|)"
    cols = ["arm", "runs", *DIAGNOSTICS]
    return "\n".join([head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *rows])


def summarise(dataset: str, arms: list[str], args) -> str:
    base = os.path.join(args.runs_dir, dataset)
    results = {}
    for arm in arms:
        for seed in args.seeds:
            path = result_file(os.path.join(base, f"{arm}_s{seed}"), args.val)
            if os.path.isfile(path):
                results[arm, seed] = read_metrics(path)
    if not results:
        raise SystemExit(f"no finished run under {base} to summarise")
    keys = list(next(iter(results.values())))
    rows = []
    for arm in arms:
        seeds = [s for s in args.seeds if (arm, s) in results]
        if not seeds:
            continue
        row = {"arm": arm, "seeds": len(seeds)}
        for k in keys:
            v = np.array([results[arm, s][k] for s in seeds])
            row[k] = f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        if arm != args.reference:
            pairs = [s for s in seeds if (args.reference, s) in results]
            row["pairs"] = len(pairs)
            for k in keys:
                if pairs:
                    m, lo, hi = paired_ci([results[arm, s][k] - results[args.reference, s][k] for s in pairs])
                    row[f"d_{k} [95% CI]"] = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        rows.append(row)
    cols = ["arm", "seeds", *keys, "pairs", *[f"d_{k} [95% CI]" for k in keys]]
    split = f"validation split ({args.val_ids} held-out training identities)" if args.val else "test split"
    title = f"{DATASETS[dataset][2]}; {split}; mean +- sd over seeds; d_: paired difference to {args.reference}"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    table = f"{title}\n\n" + "\n".join(lines)
    diag = diagnostics(base, arms, args.seeds)
    if diag:
        table += "\n\n" + diag
    name = "paired_val" if args.val else "paired"
    with open(os.path.join(base, f"{name}.md"), "w") as fh:
        fh.write(table + "\n")
    with open(os.path.join(base, f"{name}.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=["small"], choices=sorted(DATASETS))
    ap.add_argument("--data-root", help="dataset folder (default: ../shared/data/<dataset>); only with one --dataset")
    ap.add_argument("--arms", nargs="+", default=["basic", "htg"])
    ap.add_argument("--arm", action="append", default=[], metavar='NAME="K=V K=V"', help="define an arm by its overrides")
    ap.add_argument("--reference", default=None, help="the arm the others are paired against (default: the first arm)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--val", action="store_true", help="model selection: hold out training identities, never touch the test split")
    ap.add_argument("--val-ids", type=int, default=100, help="training identities held out with --val")
    ap.add_argument("--runs-dir", default=os.path.join("runs", "paired"))
    ap.add_argument("--summary-only", action="store_true", help="only summarise the runs already finished")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_intermixed_args()
    arms = dict(ARMS)
    for spec in args.arm:
        name, _, ov = spec.partition("=")
        if not name or not ov:
            raise SystemExit(f'error: --arm {spec!r} is not NAME="key=value key=value"')
        arms[name] = shlex.split(ov)
    unknown = [a for a in args.arms if a not in arms]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {unknown}; known: {sorted(arms)} (or define one with --arm)")
    args.reference = args.reference or args.arms[0]
    if args.data_root and len(args.dataset) > 1:
        raise SystemExit("error: --data-root applies to one --dataset at a time")
    for dataset in args.dataset:
        root = args.data_root or DATASETS[dataset][1]
        if not args.summary_only and not os.path.isdir(root):
            raise SystemExit(f"error: data root {root!r} for {dataset} not found; pass --data-root")
        if not args.summary_only:
            for seed in args.seeds:
                for arm in args.arms:
                    run(dataset, arm, arms[arm], seed, args)
        print("\n" + summarise(dataset, args.arms, args), flush=True)


if __name__ == "__main__":
    main()
