"""Training curves: a re-ID run's metrics.csv (HTG diagnostics included) and a GAN run's losses.csv."""
from __future__ import annotations

import os

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
