"""Every picture the toolkit draws: training curves (metrics.csv, HTG diagnostics included; a GAN run's losses.csv), CMC and ROC curves, tracking scores."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd


def plot_training(csv_path: str, out_png: str) -> str:
    """Draw losses, retrieval metrics and (when present) HTG's triplet diagnostics; return ``out_png``.

    The HTG panels compare real and generated triplets (the fraction of active
    triplets and the mean gap d(a, n) - d(a, p): generated triplets that are
    harder than real ones show as more active and with a smaller gap) and draw
    the game itself: D's real-vs-generated AUC and its identity accuracy on
    real features, G's relative shift ||G(f) - f|| / ||f||, and the batch-all
    active fraction of real triplets (what HTG's start waits for).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(csv_path)
    htg = "gen_active" in df.columns and df["gen_active"].notna().any()
    panels = 5 if htg else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    ep = df["epoch"]
    ax = axes[0]
    for col in ("loss", "softmax", "triplet", "htg_hard"):
        if col in df and df[col].notna().any():
            ax.plot(ep, df[col], marker=".", label=col)
    ax.set(title="training losses", xlabel="epoch")
    ax.legend(fontsize=8)
    ax = axes[1]
    for col in ("rank1", "mAP", "val_rank1", "val_mAP", "train_acc"):
        if col in df and df[col].notna().any():
            ax.plot(ep[df[col].notna()], df[col].dropna(), marker="o", label=col)
    ax.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    ax.legend(fontsize=8)
    if htg:
        for ax, (real, gen, title) in zip(axes[2:4], (("real_active", "gen_active", "active triplets (fraction)"), ("real_gap", "gen_gap", "mean gap d(a,n) - d(a,p)"))):
            ax.plot(ep, df[real], marker=".", label="real triplets")
            ax.plot(ep, df[gen], marker=".", label="generated (HTG)")
            ax.set(title=title, xlabel="epoch")
            ax.legend(fontsize=8)
        ax = axes[4]
        for col, label in (("d_auc", "D: AUC real vs generated"), ("d_id_acc", "D: identity acc. (real)"),
                           ("g_shift", "G: |G(f) - f| / |f|"), ("tri_active_all", "real triplets active (batch-all)")):
            if col in df and df[col].notna().any():
                ax.plot(ep[df[col].notna()], df[col].dropna(), marker=".", label=label)
        ax.set(title="the game", xlabel="epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_gan_losses(csv_path: str, png_path: str) -> None:
    """The loss columns of a tools/train_gan.py losses.csv against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(csv_path)
    keys = [c for c in df.columns if c not in ("iteration", "epoch", "seconds")]
    if df.empty or not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for k in keys:
        ax.plot(df["iteration"], df[k], label=k)
    ax.set_xlabel("iteration")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(csv_path))))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


RECALL_PLOT_KS = (1, 2, 4, 8, 16, 32)


def plot_curves(runs: list[tuple[str, object, dict]], path: str) -> None:
    """CMC curves (re-ID) or Recall@K (class-level), one line per run, labelled by run name.

    Args:
        runs: ``(label, result, features)``: a run's label, its RankResult (re-ID), and its features dict
            (``protocol``, and ``tf``/``t_pids`` for class-level, whose Recall@K is computed here).
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reid_htg.metrics import recall_at_k

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, result, feats in runs:
        if feats["protocol"] == "class":
            ks = [k for k in RECALL_PLOT_KS if k < len(feats["tf"])]
            rec = recall_at_k(feats["tf"], feats["t_pids"], ks)
            ax.plot(ks, [100 * rec[k] for k in ks], marker="o", label=f"{label} (R@1 {100 * rec[1]:.1f})")
        else:
            ks = np.arange(1, len(result.cmc) + 1)
            ax.plot(ks, 100 * result.cmc, label=f"{label} (rank-1 {100 * result.rank(1):.1f}, mAP {100 * result.mAP:.1f})")
    kind = "class" if runs[0][2]["protocol"] == "class" else "reid"
    ax.set(xlabel="K" if kind == "class" else "rank", ylabel="Recall@K (%)" if kind == "class" else "CMC: matching rate (%)",
           title="Recall@K, class-level retrieval" if kind == "class" else "CMC curve, Market-1501 protocol", ylim=(0, 100))
    if kind == "class":
        ax.set_xscale("log", base=2)
        ax.set_xticks(RECALL_PLOT_KS, [str(k) for k in RECALL_PLOT_KS])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(runs: list[tuple[str, object]], path: str) -> None:
    """Verification ROC curves (TAR against FAR, FAR on a log axis), one line per run with its EER and TAR@FAR=1e-2.

    Args:
        runs: ``(label, VerificationResult)`` pairs.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ver in runs:
        far = np.maximum(ver.far, 1.0 / max(ver.num_impostor, 1) / 10)  # FAR 0 drawn at the left edge of the log axis
        extra = f", TAR@1e-2 {100 * ver.tar_at[1e-2]:.1f}" if 1e-2 in ver.tar_at else ""
        ax.plot(far, 100 * ver.tar, label=f"{label} (EER {100 * ver.eer:.1f}{extra})")
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate (impostor pairs accepted)", ylabel="true accept rate (%)", title="Verification ROC", ylim=(0, 100))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tracking(df: pd.DataFrame, path: str) -> None:
    """IDF1 per scene (points) and its mean (a bar) for each arm, one panel per tracker: benchmarks/tracking.py's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trackers = list(dict.fromkeys(df["tracker"]))
    fig, axes = plt.subplots(1, len(trackers), figsize=(4.5 * len(trackers), 3.4), squeeze=False)
    for ax, tracker in zip(axes[0], trackers):
        t = df[df["tracker"] == tracker]
        arms = list(dict.fromkeys(t["arm"]))
        for i, arm in enumerate(arms):
            v = 100 * t[t["arm"] == arm].sort_values("scene")["idf1"].to_numpy()
            ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=18)
            ax.hlines(v.mean(), i - 0.3, i + 0.3, color="k")
        ax.set_xticks(range(len(arms)), arms, rotation=25, ha="right", fontsize=8)
        ax.set_title(tracker)
        ax.set_ylabel("IDF1 (%)")
    fig.suptitle(f"re-ID encoders in boxmot trackers, {df['scene'].nunique()} rendered scenes (points: scenes, bars: means)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scene(scene, frames: list[int], path: str) -> None:
    """Frames of a rendered :class:`reid_htg.data.scenes.Scene` side by side, its detections drawn and numbered by person."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(frames), figsize=(4.8 * len(frames), 3.0), squeeze=False)
    for ax, t in zip(axes[0], frames):
        ax.imshow(scene.frames[t])
        for r in scene.detections[scene.detections["frame"] == t].itertuples():
            ax.add_patch(Rectangle((r.x1, r.y1), r.x2 - r.x1, r.y2 - r.y1, fill=False, color="red", lw=1))
            ax.text(r.x1, r.y1 - 3, str(r.person), color="yellow", fontsize=7)
        ax.set_title(f"frame {t}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
