"""Evaluate features or trained models: re-ID (CMC rank-k, mAP, mINP; Market-1501 protocol) or class-level retrieval.

    python tools/eval.py --rank1 --mAP                              # the most recent run under runs/
    python tools/eval.py --checkpoint runs/x/last.pt [--dataset cuhk03 --data-root PATH]
    python tools/eval.py --checkpoint runs/cuhk/last.pt --dataset market1501 --data-root ../shared/data/market1501   # cross-dataset
    python tools/eval.py --checkpoint runs/cub/last.pt                  # a class-level set: Recall@K, MAP@R, NMI
    python tools/eval.py --features feats.npz [--ap official] [--metric euclidean] [--json out.json]
    python tools/eval.py --query q.npz --gallery g.npz             # embeddings files of tools/embed.py (--split query / gallery)
    python tools/eval.py --checkpoint runs/a/last.pt --checkpoint runs/b/last.pt --plot cmc.png   # overlaid curves
    python tools/eval.py --checkpoint runs/x/last.pt --fgsm 0 0.01 0.03   # rank-1/mAP with FGSM-attacked queries
    python tools/eval.py --checkpoint runs/x/last.pt --verify --plot roc.png   # TAR@FAR, EER, the ROC curve
    python tools/eval.py --checkpoint runs/x/last.pt --dataset csv --data-root val.csv --verify --far 0.01 --save-threshold gallery_index

The protocol follows the data (``--protocol`` forces one): a dataset with query
and gallery splits is evaluated as re-ID, one with a test split as class-level
retrieval (every test image against all the others, itself excluded:
Recall@1/2/4/8, MAP@R, NMI with k-means, k = number of test classes, seed 0).
A features file is an .npz with arrays qf, gf, q_pids, g_pids, q_camids,
g_camids (re-ID) or tf, t_pids (class-level); embeddings files of
tools/embed.py of a dataset's query and gallery (or test) split are read as
they are (--query, --gallery, --test). Distances are cosine on
L2-normalised features unless --metric euclidean. The AP formula defaults to
noninterp (torchreid / fast-reid); --ap official is the Market-1501 evaluation
code's trapezoid formula.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from reid_htg.cli import positive_int, run_tool
from reid_htg.data import PROTOCOLS
from reid_htg.metrics import (
    AP_FORMULAS,
    evaluate_class_level,
    evaluate_features,
)
from reid_htg.metrics.distance import METRICS
from reid_htg.metrics.rank import DEFAULT_AP
from reid_htg.retrieval import INDEX_TYPES
from reid_htg.retrieval.evaluate import evaluate_reranked, evaluate_with_index
from reid_htg.retrieval.files import features_from_embeddings, load_features
from reid_htg.utils.plots import plot_curves, plot_roc


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("what to evaluate (default: the most recent run under runs/)")
    src.add_argument("--features", action="append", help="an .npz (qf, gf, q_pids, g_pids, q_camids, g_camids, or tf, t_pids); repeat to compare")
    src.add_argument("--checkpoint", action="append", help="a checkpoint written by tools/train_reid.py; repeat to compare")
    src.add_argument("--query", help="an embeddings file of tools/embed.py (--dataset NAME --split query), with --gallery")
    src.add_argument("--gallery", help="an embeddings file of tools/embed.py (--split gallery), with --query")
    src.add_argument("--test", help="an embeddings file of tools/embed.py (--split test): class-level evaluation")
    src.add_argument("--protocol", choices=PROTOCOLS, help="reid or class (default: what the data has; reid when it has both)")
    src.add_argument("--runs-dir", default="runs", help="where to look for the most recent run (default: runs)")
    src.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained for)")
    src.add_argument("--data-root", help="dataset folder (default: the one the checkpoint was trained on)")
    src.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass when extracting features")
    src.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    m = ap.add_argument_group("metrics")
    for name in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        m.add_argument(f"--{name}", action="store_true", help=f"show {name} (all metrics are shown when none is picked)")
    m.add_argument("--ap", choices=AP_FORMULAS, default=DEFAULT_AP, help=f"AP formula (default: {DEFAULT_AP})")
    m.add_argument("--metric", choices=METRICS, default="cosine", help="distance (default: cosine)")
    m.add_argument("--max-rank", type=positive_int, default=50, help="length of the CMC curve (default: 50)")
    m.add_argument("--precision", choices=("float64", "float32"), default="float64",
                   help="distance arithmetic (default float64: the index path and the matrix path then agree exactly)")
    m.add_argument("--index", choices=INDEX_TYPES, help="rank the gallery with a FAISS index of this type instead of a distance matrix")
    m.add_argument("--index-k", type=positive_int, help="neighbours retrieved per query with --index (default: the whole gallery)")
    m.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017) from top-k1 neighbour lists")
    m.add_argument("--k1", type=positive_int, default=20, help="re-ranking k1 (default 20)")
    m.add_argument("--k2", type=positive_int, default=6, help="re-ranking k2 (default 6)")
    m.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, help="re-ranking weight of the original distance (default 0.3)")
    v = ap.add_argument_group("open-set verification (is this anyone we know?)")
    v.add_argument("--verify", action="store_true",
                   help="also report TAR at FAR 1e-1, 1e-2, 1e-3 and the EER over the protocol's pairs (--plot then draws the ROC)")
    v.add_argument("--far", type=float, default=1e-2, help="the FAR --save-threshold calibrates at (default 0.01)")
    v.add_argument("--save-threshold", metavar="INDEX_DIR",
                   help="write the distance threshold at --far to INDEX_DIR/threshold.json (calibrate on a validation split, "
                        "never on the test split you report); search.py and the service then answer unknown for queries beyond it")
    r = ap.add_argument_group("robustness")
    r.add_argument("--fgsm", type=float, nargs="+", metavar="EPS",
                   help="attack every query with FGSM at each eps (pixel units in [0, 1], e.g. 0.01 0.03) and report rank-1/mAP; needs a checkpoint")
    ap.add_argument("--json", help="write the metrics as JSON to this file (fractions in [0, 1]; a list with several runs)")
    ap.add_argument("--plot", help="draw the CMC curve (re-ID) or Recall@K (class-level) to this PNG, one line per run")
    return ap.parse_args(argv)


def robustness(args) -> int:
    """rank-1 and mAP of a checkpoint's model with every query FGSM-attacked, one row per eps."""
    if args.features:
        raise SystemExit("error: --fgsm attacks query images, so it needs a model: pass --checkpoint (or nothing, for the latest run), not --features")
    if any(e < 0 for e in args.fgsm):
        raise SystemExit(f"error: --fgsm eps values must be >= 0, got {args.fgsm}")
    from reid_htg.augmenters.robustness import fgsm_robustness
    from reid_htg.checkpoint import latest_checkpoint
    from reid_htg.device import default_device
    from reid_htg.features import checkpoint_test_sets

    if args.checkpoint and len(args.checkpoint) > 1:
        raise SystemExit("error: --fgsm evaluates one checkpoint at a time")
    ckpt = args.checkpoint[0] if args.checkpoint else latest_checkpoint(args.runs_dir)
    try:
        model, split, desc = checkpoint_test_sets(ckpt, args.dataset, args.data_root, protocol="reid")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    rows = fgsm_robustness(model, split.sets["query"], split.sets["gallery"], args.fgsm, batch_size=min(args.batch_size, 64),
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


def evaluate(feats: dict, args):
    """(result, how) for one set of features under its protocol."""
    if feats["protocol"] == "class":
        if args.rerank or args.index:
            raise SystemExit("error: --rerank and --index rank a gallery for queries (re-ID); class-level evaluation ranks the test set against itself")
        return evaluate_class_level(feats["tf"], feats["t_pids"], metric=args.metric), "class-level: each test image against all the others"
    labels = (feats["q_pids"], feats["g_pids"], feats["q_camids"], feats["g_camids"])
    metric = args.metric
    if args.rerank:
        result = evaluate_reranked(feats["qf"], feats["gf"], *labels, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value,
                                   metric=metric, index_type=args.index or "flat", ap=args.ap, max_rank=args.max_rank)
        how = f"k-reciprocal re-ranking k1={args.k1} k2={args.k2} lambda={args.lambda_value}, neighbours from a {args.index or 'flat'} index"
    elif args.index:
        result = evaluate_with_index(feats["qf"], feats["gf"], *labels, index_type=args.index, metric=metric, k=args.index_k, ap=args.ap, max_rank=args.max_rank)
        how = f"{args.index} index, " + (f"top-{args.index_k}" if args.index_k else "whole gallery")
    else:
        dtype = torch.float64 if args.precision == "float64" else torch.float32
        result = evaluate_features(feats["qf"], feats["gf"], *labels, metric=metric, ap=args.ap, max_rank=args.max_rank, dtype=dtype)
        how = f"distance matrix, {args.precision}"
    return result, how + ", Market-1501 protocol"


def run_label(path: str) -> str:
    """A run's name for a legend: the run folder of a checkpoint, the stem of a features file."""
    base = os.path.basename(path)
    if base.endswith(".pt"):
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or base
    return os.path.splitext(base)[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    picked = tuple(n for n in ("rank1", "rank5", "rank10", "mAP", "mINP") if getattr(args, n))
    embedded = args.query or args.gallery or args.test
    if sum(map(bool, (args.features, args.checkpoint, embedded))) > 1:
        raise SystemExit("error: pass one of --features, --checkpoint, or embeddings files (--query and --gallery, or --test)")
    if args.fgsm is not None:
        return robustness(args)
    from reid_htg.checkpoint import latest_checkpoint
    from reid_htg.device import default_device
    from reid_htg.features import features_for_checkpoint

    sources = args.features or args.checkpoint or ([args.test or args.query] if embedded else [latest_checkpoint(args.runs_dir)])
    check_threshold_args(args, len(sources))  # before any evaluation: a calibration that cannot be saved is refused now
    runs, verifications = [], []
    for src in sources:
        if embedded:
            feats = features_from_embeddings(args.query, args.gallery, args.test)
            source = args.test or f"{args.query} against {args.gallery}"
        elif args.features:
            feats, source = load_features(src), src
            if args.protocol and feats["protocol"] != args.protocol:
                raise SystemExit(f"error: {src} holds {feats['protocol']} features, not {args.protocol}")
        else:
            try:
                default_device(args.device)  # an unavailable device is named before any work
                feats = features_for_checkpoint(src, dataset=args.dataset, data_root=args.data_root, batch_size=args.batch_size,
                                                device=args.device, protocol=args.protocol)
            except (ValueError, FileNotFoundError) as exc:
                raise SystemExit(f"error: {src}: {exc}") from None
            source = f"{src} on {feats.pop('description')}"
        try:
            result, how = evaluate(feats, args)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"{source}  ({args.metric} distance, {how})")
        print(result.format(picked) if feats["protocol"] == "reid" else result.format())
        print()
        if args.verify:
            ver = verify(feats, args)
            print(f"verification ({args.metric} distance; a pair is accepted when its distance is at most the threshold)")
            print(ver.format())
            print()
            verifications.append(ver)
        runs.append((run_label(src), result, feats))
    if len({r[2]["protocol"] for r in runs}) > 1:
        raise SystemExit("error: the runs were evaluated under different protocols (re-ID and class-level); compare like with like")
    if args.json:
        dicts = [dict(r.as_dict(), run=label) for label, r, _ in runs]
        for d, ver in zip(dicts, verifications):
            d["verification"] = ver.as_dict()
        with open(args.json, "w") as fh:
            json.dump(dicts[0] if len(dicts) == 1 else dicts, fh, indent=2)
    if args.plot:
        if args.verify:
            plot_roc([(label, ver) for (label, _, _), ver in zip(runs, verifications)], args.plot)
        else:
            plot_curves(runs, args.plot)
        print(f"wrote {args.plot}")
    if args.save_threshold:
        save_threshold(verifications, sources, args)
    return 0


def verify(feats: dict, args):
    from reid_htg.metrics.verification import FARS, evaluate_verification

    if not 0 < args.far < 1:
        raise SystemExit(f"error: --far {args.far} must be within (0, 1)")
    fars = tuple(sorted({*FARS, args.far}, reverse=True))
    if feats["protocol"] == "class":
        return evaluate_verification(feats["tf"], q_pids=feats["t_pids"], metric=args.metric, fars=fars)
    return evaluate_verification(feats["qf"], feats["gf"], feats["q_pids"], feats["g_pids"], feats["q_camids"], feats["g_camids"],
                                 metric=args.metric, fars=fars)


def check_threshold_args(args, n_sources: int) -> None:
    """--far, --verify and --save-threshold's index folder, checked before the evaluation they would follow."""
    if (args.verify or args.save_threshold) and not 0 < args.far < 1:
        raise SystemExit(f"error: --far {args.far} must be within (0, 1)")
    if not args.save_threshold:
        return
    if not args.verify:
        raise SystemExit("error: --save-threshold needs --verify")
    if n_sources != 1:
        raise SystemExit("error: --save-threshold calibrates one model: pass one --checkpoint or features file")
    from reid_htg.retrieval import GalleryIndex, GalleryIndexError

    try:
        index = GalleryIndex.load(args.save_threshold, mmap=True)  # refuses a folder that is not an index
    except (GalleryIndexError, OSError) as exc:
        raise SystemExit(f"error: --save-threshold {args.save_threshold}: {exc}") from None
    if index.metric != args.metric:
        raise SystemExit(f"error: the index ranks by {index.metric} distance and this calibration used {args.metric}; pass --metric {index.metric}")


def save_threshold(verifications, sources, args) -> None:
    """The threshold at --far of the (one) evaluated run, written beside an index as threshold.json (atomically)."""
    if not args.verify:
        raise SystemExit("error: --save-threshold needs --verify")
    if len(verifications) != 1:
        raise SystemExit("error: --save-threshold calibrates one model: pass one --checkpoint or features file")
    from reid_htg.retrieval import GalleryIndex

    index = GalleryIndex.load(args.save_threshold, mmap=True)  # refuses a folder that is not an index
    if index.metric != args.metric:
        raise SystemExit(f"error: the index ranks by {index.metric} distance and this calibration used {args.metric}; pass --metric {index.metric}")
    ver = verifications[0]
    record = {"distance": ver.threshold_at[args.far], "far": args.far, "tar": ver.tar_at[args.far], "metric": args.metric,
              "calibrated_on": str(sources[0]), "pairs": [ver.num_genuine, ver.num_impostor]}
    path = os.path.join(args.save_threshold, "threshold.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(record, fh, indent=2)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: distance threshold {record['distance']:.4f} at FAR {args.far:g} (TAR {100 * record['tar']:.1f}%)")


def entry() -> None:
    """The console script ``reid-eval`` (and ``tools/eval.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
