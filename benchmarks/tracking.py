#!/usr/bin/env python
"""A re-ID model as a tracker's appearance encoder: IDF1 and identity switches, trained against untrained, on rendered scenes.

    python tools/train_reid.py                                   # the trained encoder: runs/synthetic_resnet18/last.pt
    python benchmarks/tracking.py --checkpoint runs/synthetic_resnet18/last.pt --csv runs/tracking.csv --plot docs/img/tracking_idf1.png

Each seed renders one scene (:func:`reid_htg.data.scenes.render_scene`: 300 frames, 8 people of the
synthetic generator walking on crossing paths; seed 0 would draw the synthetic training set's first
identities, so seeds start at 1 and the people are ones the model never saw). The scene's ground-truth
boxes, 5% missed and corners jittered by 3%, are the detections; ``--palette K`` dresses everyone from K
shared colours (a crowd in similar clothes: keep one --csv per setting). Encoders:

- ``trained``: the checkpoint as :class:`reid_htg.tracking.TrackerEncoder`;
- ``untrained``: the same architecture and preprocessing with fresh random weights (``--untrained-seed``);
- ``motion``: BoT-SORT with ``use_embeddings=False`` (boxes and the Kalman filter only; StrongSORT has no such mode).

A tracker's appearance gate is tuned to its usual encoder's distances, not to these: for each tracker and
encoder the gate (BoT-SORT ``appearance_thresh``, StrongSORT ``max_cos_dist``) is chosen on validation scenes
(``--val-seeds``, never test scenes) by mean IDF1, then every arm runs on the test scenes (``--seeds``),
paired by scene, at its chosen gate and at the tracker's default. Printed: IDF1, identity switches and MOTA per
arm, trained - untrained and trained - motion with the 95% t-interval over scenes. ``--csv`` keeps every row
as it is measured; a rerun with the same file skips what is there. Needs the track extra.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runner import paired_ci  # noqa: E402

GATES = {"botsort": ("appearance_thresh", [0.05, 0.15, 0.3]), "strongsort": ("max_cos_dist", [0.05, 0.15, 0.3])}  # + the tracker's default
COLUMNS = ["phase", "tracker", "arm", "gate", "scene", "idf1", "id_switches", "mota", "frames"]


def untrained_copy(checkpoint: str, folder: str, seed: int) -> str:
    """A checkpoint with ``checkpoint``'s architecture and input size and fresh random weights."""
    import torch

    from reid_htg.checkpoint import load_checkpoint, save_checkpoint
    from reid_htg.models import ReIDNet

    state = load_checkpoint(checkpoint)
    torch.manual_seed(seed)
    model = ReIDNet(**state["model_args"])
    path = os.path.join(folder, "untrained.pt")
    save_checkpoint({"model": model.state_dict(), "config": {}, "model_args": state["model_args"], "data_args": state["data_args"]}, path)
    return path


def crop_auc(scene, encoder, every: int = 10) -> float:
    """Verification AUC of ``encoder`` on a scene's crops: same person against other people, cosine distance.

    Boxes at least 90% visible, one frame in ``every``: how well the encoder alone tells these people apart."""
    import numpy as np

    from reid_htg.metrics.verification import roc

    b = scene.boxes[(scene.boxes["visibility"] > 0.9) & (scene.boxes["frame"] % every == 0)]
    feats, people = [], []
    for t, g in b.groupby("frame"):
        feats.append(encoder.encode_rgb(scene.frames[t], g[["x1", "y1", "x2", "y2"]].to_numpy()))
        people.append(g["person"].to_numpy())
    f, p = np.concatenate(feats), np.concatenate(people)
    iu = np.triu_indices(len(f), 1)
    far, tar, _ = roc((1 - f @ f.T)[iu], (p[:, None] == p[None, :])[iu])  # the evaluator's ROC, ties grouped
    return float(np.trapezoid(tar, far))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/synthetic_resnet18/last.pt", help="the trained encoder (a checkpoint, .onnx or .xml)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)), help="test scenes (>= 1: seed 0 draws training identities)")
    ap.add_argument("--val-seeds", type=int, nargs="+", default=[101, 102, 103], help="validation scenes, where the gates are chosen")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--palette", type=int, help="people dress from this many shared colours (a crowd in similar clothes); default: their own")
    ap.add_argument("--trackers", nargs="+", default=["botsort", "strongsort"], choices=sorted(GATES))
    ap.add_argument("--untrained-seed", type=int, default=0)
    ap.add_argument("--csv", help="every (phase, tracker, arm, gate, scene) row, written as measured; reused by a rerun")
    ap.add_argument("--plot", help="IDF1 per test scene and arm, as a PNG")
    ap.add_argument("--scene-png", help="three frames of the first test scene with its detections, as a PNG")
    args = ap.parse_args()
    if not os.path.isfile(args.checkpoint):
        print(f"error: no trained encoder at {args.checkpoint!r}; train one with: python tools/train_reid.py", file=sys.stderr)
        return 2
    if (any(s < 1 for s in args.seeds + args.val_seeds) or set(args.seeds) & set(args.val_seeds) or args.frames < 10 or args.people < 2
            or (args.palette is not None and args.palette < 1)):
        print("error: seeds >= 1, test and validation seeds apart, --frames >= 10, --people >= 2 and --palette >= 1", file=sys.stderr)
        return 2
    try:
        import boxmot  # noqa: F401
        import motmetrics  # noqa: F401
    except ImportError:
        print('error: the tracker benchmark needs the track extra: pip install -e ".[track]"', file=sys.stderr)
        return 2
    from reid_htg.data.scenes import render_scene
    from reid_htg.tracking import TrackerEncoder, mot_scores, track_scene

    encoders = {"trained": TrackerEncoder.load(args.checkpoint),
                "untrained": TrackerEncoder.load(untrained_copy(args.checkpoint, tempfile.mkdtemp(prefix="reid_track_"), args.untrained_seed))}
    done = pd.read_csv(args.csv, keep_default_na=False) if args.csv and os.path.isfile(args.csv) else pd.DataFrame(columns=COLUMNS)
    rows = done.to_dict("records")
    have = {(r["phase"], r["tracker"], r["arm"], str(r["gate"]), int(r["scene"])) for r in rows}

    def measure(phase, seed, jobs):
        """Run (tracker, arm, gate) jobs on the scene of ``seed`` (rendered only if a job is not measured yet)."""
        todo = [j for j in jobs if (phase, *j[:2], str(j[2]), seed) not in have]
        if not todo:
            return
        t0, scene = time.perf_counter(), render_scene(frames=args.frames, people=args.people, seed=seed, palette=args.palette)
        for tracker, arm, gate in todo:
            options = {"use_embeddings": False} if arm == "motion" else ({GATES[tracker][0]: float(gate)} if gate != "default" else {})
            s = mot_scores(scene.ground_truth, track_scene(scene, encoders["trained" if arm == "motion" else arm], tracker, options))
            rows.append({"phase": phase, "tracker": tracker, "arm": arm, "gate": str(gate), "scene": seed, **s})
            have.add((phase, tracker, arm, str(gate), seed))
            if args.csv:
                pd.DataFrame(rows, columns=COLUMNS).to_csv(args.csv, index=False)
        print(f"{phase} scene {seed}: {len(todo)} runs ({time.perf_counter() - t0:.0f}s)", flush=True)

    print(f"{len(args.val_seeds)} validation + {len(args.seeds)} test scenes x {args.frames} frames x {args.people} people; "
          f"{'their own colours' if args.palette is None else f'clothes from {args.palette} shared colours'}; "
          f"encoder {args.checkpoint} ({encoders['trained'].embedding_dim}-d)", flush=True)
    grid = [(t, arm, g) for t in args.trackers for arm in encoders for g in [*GATES[t][1], "default"]]
    for seed in args.val_seeds:
        measure("val", seed, grid)
    df = pd.DataFrame(rows, columns=COLUMNS)
    val = df[df.phase == "val"].groupby(["tracker", "arm", "gate"])["idf1"].mean()
    chosen = {(t, arm): val[t][arm].idxmax() for t in args.trackers for arm in encoders}
    print("\ngate chosen on validation (mean IDF1 %, each gate):")
    for (t, arm), g in chosen.items():
        print(f"  {t:>10} {arm:>9}: {GATES[t][0]} = {g}   (" + ", ".join(f"{k}: {100 * v:.1f}" for k, v in val[t][arm].items()) + ")")
    test = [(t, arm, chosen[(t, arm)]) for t in args.trackers for arm in encoders]
    test += [(t, arm, "default") for t in args.trackers for arm in encoders if chosen[(t, arm)] != "default"]
    test += [("botsort", "motion", "default")] if "botsort" in args.trackers else []
    for seed in args.seeds:
        measure("test", seed, test)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df[(df.phase == "test") & df.scene.astype(int).isin(args.seeds)]
    df["label"] = [f"{a}" + ("" if a == "motion" else f" ({'validated' if g == str(chosen[(t, a)]) else 'default'} gate)")
                   for t, a, g in zip(df.tracker, df.arm, df.gate)]
    same = df[(df.gate == "default") & df.label.str.contains("validated")]  # a validated gate that is the default is both arms
    df = pd.concat([df, same.assign(label=same.label.str.replace("validated", "default"))], ignore_index=True)
    order = ["trained (validated gate)", "untrained (validated gate)", "trained (default gate)", "untrained (default gate)", "motion"]
    df = df.assign(rank=df.label.map(order.index)).sort_values(["tracker", "rank", "scene"], kind="stable").drop(columns="rank")
    print(f"\ntest scenes {args.seeds}:")
    print(f"{'tracker':>10} {'arm':>28} {'IDF1':>6} {'ID sw':>6} {'MOTA':>6}")
    for (tracker, label), g in df.groupby(["tracker", "label"], sort=False):
        print(f"{tracker:>10} {label:>28} {100 * g.idf1.mean():>6.1f} {g.id_switches.mean():>6.1f} {100 * g.mota.mean():>6.1f}")
    print()
    for tracker in args.trackers:
        t = df[df.tracker == tracker].pivot_table(index="scene", columns="label", values=["idf1", "id_switches"])
        pairs = [("trained (validated gate)", "untrained (validated gate)"), ("trained (default gate)", "untrained (default gate)"),
                 ("trained (validated gate)", "motion")]
        for a, b in pairs:
            if ("idf1", a) in t.columns and ("idf1", b) in t.columns:
                m, lo, hi = paired_ci(100 * (t["idf1"][a] - t["idf1"][b]))
                sm, slo, shi = paired_ci(t["id_switches"][a] - t["id_switches"][b])
                print(f"{tracker}: {a} - {b}: IDF1 {m:+.1f} [{lo:+.1f}, {hi:+.1f}], ID switches {sm:+.1f} [{slo:+.1f}, {shi:+.1f}] ({len(t)} scenes)")
    aucs = {arm: [] for arm in encoders}
    for seed in args.seeds[:3]:
        scene = render_scene(frames=args.frames, people=args.people, seed=seed, palette=args.palette)
        for arm, enc in encoders.items():
            aucs[arm].append(crop_auc(scene, enc))
    print("verification AUC on the crops of test scenes " + str(args.seeds[:3]) + " (same person against others): "
          + ", ".join(f"{arm} {sum(v) / len(v):.3f}" for arm, v in aucs.items()))
    if args.plot:
        from reid_htg.utils.plots import plot_tracking

        plot_tracking(df.assign(arm=df["label"]), args.plot)
        print(f"plot: {args.plot}")
    if args.scene_png:
        from reid_htg.utils.plots import plot_scene

        plot_scene(render_scene(frames=args.frames, people=args.people, seed=args.seeds[0], palette=args.palette), [0, args.frames // 2, args.frames - 1], args.scene_png)
        print(f"scene: {args.scene_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
