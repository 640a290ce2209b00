#!/usr/bin/env python
"""Does HTG's generator do its job? G and D trained on fixed features of a checkpoint, then judged.

    python benchmarks/htg_fixed_f.py --checkpoint CK --dataset NAME --data-root DIR --steps N --seed S --json OUT [htg.KEY=VALUE ...]
    python benchmarks/htg_fixed_f.py --checkpoint runs/market_source/last.pt --dataset cuhk03 --data-root ../shared/data/cuhk03 \\
        --steps 420 --seed 0 --json runs/fixed_f/cuhk03_s0.json --plot runs/fixed_f/cuhk03_s0.png

The dataset's training split is embedded once with the checkpoint's network
(eval mode; cached under --cache by the checkpoint's sha256 and the dataset).
With F so held fixed, G and D are trained from scratch by the config's own HTG
steps (``reid_htg.htg.HTG``: the default config's ``htg`` section unless
overridden) on P x K batches of those features for N steps. After the last
step (and every --eval-every steps, for the figure) they are measured on 20
fresh P x K batches, G and D in eval mode:

- ``real_gap``, ``gen_gap``: mean d(a, n) - d(a, p) of the semi-hard triplets
  mined on the real features, on real and on generated rows;
  ``gap_change_rel`` = (gen_gap - real_gap) / real_gap.
- ``real_violated``, ``gen_violated``: share of those triplets (G's
  triplets) with d(a, n) < d(a, p), on real rows (0 for semi-hard triplets,
  but for ties) and on generated rows; ``real_violated_all``,
  ``gen_violated_all``: the same over every valid triplet of the batch.
- ``common_share``: |batch mean of G(f) - f| / mean |G(f) - f|.
- ``d_real_id_acc``, ``d_gen_id_acc``: D's identity accuracy among the K on
  real features and on G's outputs; ``d_gen_prob``: D's "generated" probability
  on G's outputs.
- ``ncm_real_id_acc``, ``ncm_gen_id_acc``: identity accuracy of the nearest
  class mean of the real training features (cosine), a judge D's training
  cannot bend; ``g_shift``: mean |G(f) - f| / |f|; ``g_grad_triplet``,
  ``g_grad_label``: the last steps' gradient norms of G's two terms.

The gate (printed PASS / FAIL): ``gap_change_rel`` <= -0.30, ``gen_violated``
- ``real_violated`` >= 0.10, ``common_share`` <= 0.30 and ``ncm_gen_id_acc``
>= 0.7 x ``ncm_real_id_acc``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

from reid_htg.builders import build_htg
from reid_htg.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from reid_htg.config import ConfigError, TrainConfig, load_config
from reid_htg.data import DatasetError, build_dataset, relabel
from reid_htg.data.dataset import ImageSet
from reid_htg.data.sampler import PKSampler
from reid_htg.device import flush_denormal
from reid_htg.features import extract_features
from reid_htg.htg import GATE, class_means, fixed_f_figures, gate
from reid_htg.utils.hashing import file_sha256

KEYS = ["real_gap", "gen_gap", "gap_change_rel", "real_violated", "gen_violated", "real_violated_all", "gen_violated_all", "common_share",
        "d_real_id_acc", "d_gen_id_acc", "d_gen_prob", "ncm_real_id_acc", "ncm_gen_id_acc", "g_shift", "g_grad_triplet", "g_grad_label"]


def training_features(checkpoint: str, dataset: str, root: str, cache: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(N, L) features of the training split through the checkpoint's network (eval mode), (N,) labels 0..K-1, sha256."""
    digest = file_sha256(checkpoint)
    df = build_dataset(dataset, root)
    train = df[df["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise SystemExit(f"error: {dataset} at {root} has no training split to embed")
    key = hashlib.sha256(f"{digest}|{dataset}|{os.path.abspath(root)}|{len(train)}".encode()).hexdigest()[:16]
    path = os.path.join(cache, f"{key}.npz") if cache else None
    labels = torch.as_tensor(relabel(train["pid"].to_numpy())[0], dtype=torch.long)
    if path and os.path.isfile(path):
        return torch.from_numpy(np.load(path)["features"]), labels, digest
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    size = (state["data_args"]["height"], state["data_args"]["width"])
    images = ImageSet(train["path"].tolist(), labels.numpy(), train["camid"].to_numpy(), size, cache=False)
    feats = extract_features(model, images, 128, torch.device("cpu"), desc="training features")
    if path:
        os.makedirs(cache, exist_ok=True)
        np.savez(path + ".tmp.npz", features=feats.numpy())
        os.replace(path + ".tmp.npz", path)
    return feats, labels, digest


def run(args, overrides) -> dict:
    cfg = load_config(TrainConfig, None, ["htg.enabled=true", *overrides])
    feats, labels, digest = training_features(args.checkpoint, args.dataset, args.data_root, args.cache)
    torch.manual_seed(args.seed)  # after the features: a cached and a fresh embedding give the same run
    k = int(labels.max()) + 1
    htg = build_htg(cfg, feats.shape[1], k)
    means = class_means(feats, labels, k)
    train_batches = PKSampler(labels.numpy(), args.p, args.k, seed=args.seed)
    eval_sampler = PKSampler(labels.numpy(), args.p, args.k, seed=10_000 + args.seed)
    eval_batches = [torch.as_tensor(b) for b, _ in zip(iter(eval_sampler), range(20))]
    history, stats, step, t0 = [], {}, 0, time.perf_counter()
    every = args.eval_every or max(1, args.steps // 10)
    history.append(dict(fixed_f_figures(htg, feats, labels, eval_batches, means), step=0))
    epoch = 0
    while step < args.steps:
        train_batches.set_epoch(epoch)
        for b in train_batches:
            idx = torch.as_tensor(b)
            f, y = feats[idx], labels[idx]
            stats.update(htg.d_step(f, y))
            stats.update(htg.g_step(f, y))
            step += 1
            if step % every == 0 or step == args.steps:
                row = fixed_f_figures(htg, feats, labels, eval_batches, means)
                row.update(step=step, g_grad_triplet=stats.get("g_grad_triplet", float("nan")), g_grad_label=stats.get("g_grad_label", float("nan")))
                history.append(row)
            if step == args.steps:
                break
        epoch += 1
    final = history[-1]
    verdicts = gate(final)
    return {"checkpoint": args.checkpoint, "checkpoint_sha256": digest, "dataset": args.dataset, "data_root": args.data_root,
            "steps": args.steps, "seed": args.seed, "p": args.p, "k": args.k, "identities": k, "images": len(labels),
            "overrides": overrides, "htg": {f: getattr(cfg.htg, f) for f in cfg.htg.__dataclass_fields__},
            **{key: final[key] for key in KEYS}, "gate": verdicts, "passed": all(verdicts.values()), "history": history,
            "seconds": time.perf_counter() - t0}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result["history"]
    steps = [r["step"] for r in h]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    panels = [
        ("semi-hard gap", [("real_gap", "real"), ("gen_gap", "generated")], None),
        ("violated triplets", [("real_violated", "real"), ("gen_violated", "generated")], None),
        ("identity accuracy", [("ncm_real_id_acc", "NCM real"), ("ncm_gen_id_acc", "NCM generated"), ("d_real_id_acc", "D real"),
                               ("d_gen_id_acc", "D generated")], None),
        ("G's move", [("common_share", "common share"), ("g_shift", "|G(f)-f| / |f|")], 0.30),
    ]
    for ax, (title, series, line) in zip(axes, panels):
        for key, label in series:
            ax.plot(steps, [r[key] for r in h], label=label)
        if line is not None:
            ax.axhline(line, color="grey", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel("G/D steps")
        ax.legend(fontsize=7)
    verdict = "PASS" if result["passed"] else "FAIL"
    fig.suptitle(f"HTG with F fixed: {result['dataset']}, seed {result['seed']}, {result['steps']} steps, gate {verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint of tools/train_reid.py: the fixed F")
    ap.add_argument("--dataset", required=True, help="a dataset name (reid_htg.data.DATASETS) whose training split is embedded")
    ap.add_argument("--data-root", required=True, help="the dataset's folder")
    ap.add_argument("--steps", type=int, default=420, help="G and D steps (default 420)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures, the gate and the history here")
    ap.add_argument("--plot", help="a PNG of the figures against steps (default: next to --json)")
    ap.add_argument("--p", type=int, default=16, help="identities per batch (the recipes' 16)")
    ap.add_argument("--k", type=int, default=4, help="images per identity (the recipes' 4)")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between measurements for the figure (default: steps / 10)")
    ap.add_argument("--cache", default=os.path.join("runs", "fixed_f_cache"), help="where embedded features are kept ('' for none)")
    ap.add_argument("overrides", nargs="*", help="htg.KEY=VALUE overrides of the default config's htg section")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.p < 2 or args.k < 2:
        raise SystemExit("error: --steps must be >= 1, --p and --k >= 2")
    bad = [o for o in args.overrides if not o.startswith("htg.") or "=" not in o]
    if bad:
        raise SystemExit(f"error: overrides must be htg.KEY=VALUE, got {bad}")
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"error: checkpoint {args.checkpoint} not found")
    if not os.path.exists(args.data_root):
        raise SystemExit(f"error: data root {args.data_root} not found; pass --data-root pointing at the dataset")
    flush_denormal()
    try:
        result = run(args, args.overrides)
    except (DatasetError, CheckpointError, ConfigError) as exc:  # a wrong dataset name, file or key: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
    print(f"\nHTG with F fixed: {args.checkpoint} (sha256 {result['checkpoint_sha256'][:16]}...) on {args.dataset}'s training split, "
          f"{result['images']} images of {result['identities']} identities; {args.steps} G/D steps, seed {args.seed}, "
          f"P x K = {args.p} x {args.k}; {' '.join(args.overrides) or 'default htg'}; measured on 20 fresh batches")
    print(f"{'':<18}" + "".join(f"{'step ' + str(r['step']):>12}" for r in (result["history"][0], result["history"][-1])))
    for key in KEYS:
        print(f"{key:<18}" + "".join(f"{r.get(key, float('nan')):>12.4f}" for r in (result["history"][0], result["history"][-1])))
    for name, (_, what) in GATE.items():
        print(f"gate {name:<15} {'PASS' if result['gate'][name] else 'FAIL'}  {what}")
    print(f"gate: {'PASS' if result['passed'] else 'FAIL'} ({result['seconds']:.0f} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    png = args.plot or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if png:
        plot(result, png)
        print(f"figure: {png}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
