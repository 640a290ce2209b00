#!/usr/bin/env python
"""Evaluate re-ID features or a trained model: CMC rank-k, mAP, mINP (Market-1501 protocol).

    python tools/eval.py --rank1 --mAP                              # the most recent run under runs/
    python tools/eval.py --checkpoint runs/x/last.pt [--dataset cuhk03 --data-root PATH]
    python tools/eval.py --features feats.npz [--ap official] [--metric euclidean] [--json out.json]
    python tools/eval.py --checkpoint runs/x/last.pt --fgsm 0 0.01 0.03   # rank-1/mAP with FGSM-attacked queries

A features file is an .npz with arrays qf, gf, q_pids, g_pids, q_camids, g_camids.
Distances are cosine on L2-normalised features unless --metric euclidean.
The AP formula defaults to noninterp (torchreid / fast-reid); --ap official is
the Market-1501 evaluation code's trapezoid formula.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from reid_htg.metrics import AP_FORMULAS, evaluate_features
from reid_htg.metrics.rank import DEFAULT_AP
from reid_htg.retrieval import INDEX_TYPES
from reid_htg.retrieval.evaluate import evaluate_reranked, evaluate_with_index

FEATURE_KEYS = ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")


def load_features(path: str) -> dict:
    """The six arrays of a features file, with an error naming what is missing."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read features file {path!r}: {exc}") from None
    missing = [k for k in FEATURE_KEYS if k not in data.files]
    if missing:
        raise SystemExit(f"error: {path} lacks array(s) {missing}; a features file needs {list(FEATURE_KEYS)}")
    return {k: data[k] for k in FEATURE_KEYS}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("what to evaluate (default: the most recent run under runs/)")
    src.add_argument("--features", help="an .npz with qf, gf, q_pids, g_pids, q_camids, g_camids")
    src.add_argument("--checkpoint", help="a checkpoint written by tools/train_reid.py")
    src.add_argument("--runs-dir", default="runs", help="where to look for the most recent run (default: runs)")
    src.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained for)")
    src.add_argument("--data-root", help="dataset folder (default: the one the checkpoint was trained on)")
    src.add_argument("--batch-size", type=int, default=128, help="images per forward pass when extracting features")
    src.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    m = ap.add_argument_group("metrics")
    for name in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        m.add_argument(f"--{name}", action="store_true", help=f"show {name} (all metrics are shown when none is picked)")
    m.add_argument("--ap", choices=AP_FORMULAS, default=DEFAULT_AP, help=f"AP formula (default: {DEFAULT_AP})")
    m.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine", help="distance (default: cosine)")
    m.add_argument("--max-rank", type=int, default=50, help="length of the CMC curve (default: 50)")
    m.add_argument("--precision", choices=("float64", "float32"), default="float64",
                   help="distance arithmetic (default float64: the index path and the matrix path then agree exactly)")
    m.add_argument("--index", choices=INDEX_TYPES, help="rank the gallery with a FAISS index of this type instead of a distance matrix")
    m.add_argument("--index-k", type=int, help="neighbours retrieved per query with --index (default: the whole gallery)")
    m.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017) from top-k1 neighbour lists")
    m.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    m.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    m.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, help="re-ranking weight of the original distance (default 0.3)")
    r = ap.add_argument_group("robustness")
    r.add_argument("--fgsm", type=float, nargs="+", metavar="EPS",
                   help="attack every query with FGSM at each eps (pixel units in [0, 1], e.g. 0.01 0.03) and report rank-1/mAP; needs a checkpoint")
    ap.add_argument("--json", help="write the metrics as JSON to this file (fractions in [0, 1])")
    return ap.parse_args(argv)


def robustness(args) -> int:
    """rank-1 and mAP of a checkpoint's model with every query FGSM-attacked, one row per eps."""
    if args.features:
        raise SystemExit("error: --fgsm attacks query images, so it needs a model: pass --checkpoint (or nothing, for the latest run), not --features")
    if any(e < 0 for e in args.fgsm):
        raise SystemExit(f"error: --fgsm eps values must be >= 0, got {args.fgsm}")
    from reid_htg.engine.extract import checkpoint_test_sets, default_device, latest_checkpoint
    from reid_htg.engine.robustness import fgsm_robustness

    ckpt = args.checkpoint or latest_checkpoint(args.runs_dir)
    try:
        model, sets, desc = checkpoint_test_sets(ckpt, args.dataset, args.data_root)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    rows = fgsm_robustness(model, sets["query"], sets["gallery"], args.fgsm, batch_size=min(args.batch_size, 64),
                           device=default_device(args.device), ap=args.ap)
    print(f"{ckpt} on {desc}")
    print("FGSM on every query (metric attack: away from its true matches), gallery clean, cosine distance, Market-1501 protocol")
    print(f"{'eps':>8} {'eps*255':>8} {'rank-1':>8} {'mAP':>8}")
    for eps, res in rows:
        print(f"{eps:>8.4f} {eps * 255:>8.1f} {100 * res.rank(1):>7.2f}% {100 * res.mAP:>7.2f}%")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"fgsm": [dict(eps=eps, **res.as_dict()) for eps, res in rows]}, fh, indent=2)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    picked = tuple(n for n in ("rank1", "rank5", "rank10", "mAP", "mINP") if getattr(args, n))
    if args.features and args.checkpoint:
        raise SystemExit("error: pass either --features or --checkpoint, not both")
    if args.fgsm is not None:
        return robustness(args)
    if args.features:
        feats = load_features(args.features)
        source = args.features
    else:
        from reid_htg.engine.extract import features_for_checkpoint, latest_checkpoint

        ckpt = args.checkpoint or latest_checkpoint(args.runs_dir)
        feats = features_for_checkpoint(
            ckpt, dataset=args.dataset, data_root=args.data_root, batch_size=args.batch_size, device=args.device
        )
        source = f"{ckpt} on {feats.pop('description')}"
    labels = (feats["q_pids"], feats["g_pids"], feats["q_camids"], feats["g_camids"])
    try:
        metric = "l2" if args.metric == "euclidean" else "cosine"
        if args.rerank:
            result = evaluate_reranked(feats["qf"], feats["gf"], *labels, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value,
                                       metric=metric, index_type=args.index or "flat", ap=args.ap, max_rank=args.max_rank)
            how = f"k-reciprocal re-ranking k1={args.k1} k2={args.k2} lambda={args.lambda_value}, neighbours from a {args.index or 'flat'} index"
        elif args.index:
            result = evaluate_with_index(feats["qf"], feats["gf"], *labels, index_type=args.index, metric=metric, k=args.index_k, ap=args.ap, max_rank=args.max_rank)
            how = f"{args.index} index, " + (f"top-{args.index_k}" if args.index_k else "whole gallery")
        else:
            dtype = torch.float64 if args.precision == "float64" else torch.float32
            result = evaluate_features(feats["qf"], feats["gf"], *labels, metric=args.metric, ap=args.ap, max_rank=args.max_rank, dtype=dtype)
            how = f"distance matrix, {args.precision}"
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{source}  ({args.metric} distance, {how}, Market-1501 protocol)")
    print(result.format(picked))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.as_dict(), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
