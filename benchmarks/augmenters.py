#!/usr/bin/env python
"""The augmenter benchmark: one backbone, data, budget and seeds; baseline against each augmenter.

    python benchmarks/augmenters.py --data-root ../shared/data/cuhk03 --small      # CPU setting
    python benchmarks/augmenters.py --data-root ../shared/data/cuhk03              # full setting (on a GPU)
    python benchmarks/augmenters.py --data-root ... --small --summary-only         # table from finished runs

Arms (configs/arms/*.yaml, read by benchmarks/runner.py), each on CUHK03-pair1 (query val camera A, gallery val
camera B): ``basic`` (biasless softmax + batch-hard triplet, the reference), ``lsro``, ``camstyle``, ``fgsm``
(configs/arms/augmenters.yaml) and any other arm, e.g. ``htg_gl01_lr_fh2`` (HTG as the defaults set it).

Settings: ``--small`` uses configs/augmenters_small.yaml (ResNet-10-T at 32x16,
3 epochs) and GANs from configs/gan_*_small.yaml; the full setting uses
configs/cuhk03_gpu.yaml (ResNet-50 at 256x128) and configs/gan_*_gpu.yaml.
The GANs are trained once (seed 0) and shared by the seeds of the re-ID runs.
Every model is evaluated through the FAISS retrieval path (a flat GalleryIndex
over the gallery, whole-gallery search, Market-1501 protocol, noninterp AP).

Runs go to RUNS_DIR/<arm>_s<seed>/ and RUNS_DIR/gan_<model>/ (default
runs/augmenters_small or runs/augmenters_full); finished runs are skipped and
interrupted ones resumed. Writes RUNS_DIR/augmenters.csv, augmenters.md and
augmenters.png (rank-1 and mAP bars with the spread over seeds). The extra
cost of an arm is the CPU time (user + system, measured from the child
processes' resource usage) of its re-ID run over the baseline's, same seed,
and separately the GAN's training CPU time. CPU time, unlike wall time, is
barely disturbed by other jobs on a shared machine (run with
OMP_NUM_THREADS=1 for the cleanest figure); on a GPU the wall time
(train_wall_min in the CSV) is the figure to read.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
import runner

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(ROOT, "configs")
SETTINGS = {
    "small": {"reid": "augmenters_small.yaml", "dcgan": "gan_dcgan_small.yaml", "cyclegan": "gan_cyclegan_small.yaml"},
    "full": {"reid": "cuhk03_gpu.yaml", "dcgan": "gan_dcgan_gpu.yaml", "cyclegan": "gan_cyclegan_gpu.yaml"},
}
def train_gan(model: str, cfg_file: str, data_root: str, out: str, device: str | None) -> float:
    """Train (or finish) a GAN run; its training seconds."""
    from reid_htg.checkpoint import load_checkpoint
    from reid_htg.config import GANConfig, load_config

    epochs = load_config(GANConfig, cfg_file).epochs
    ckpt = os.path.join(out, "last.pt")
    state = load_checkpoint(ckpt) if os.path.isfile(ckpt) else None
    if state is None or state["epoch"] < epochs:
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train_gan.py"), "--config", cfg_file, "--data-root", data_root, "--output-dir", out]
        runner.run(cmd + (["--resume"] if state is not None else []) + (["--device", device] if device else []), os.path.join(out, "cpu_seconds.txt"))
        state = load_checkpoint(ckpt)
    return float(state["train_seconds"])


def faiss_eval(run_dir: str, device: str | None) -> dict:
    """rank-1 / mAP of a run's checkpoint through a flat GalleryIndex (whole gallery), cached as eval_faiss.json."""
    path = os.path.join(run_dir, "eval_faiss.json")
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    from reid_htg.features import features_for_checkpoint
    from reid_htg.retrieval.evaluate import evaluate_with_index

    f = features_for_checkpoint(os.path.join(run_dir, "last.pt"), device=device)
    res = evaluate_with_index(f["qf"], f["gf"], f["q_pids"], f["g_pids"], f["q_camids"], f["g_camids"], index_type="flat")
    out = res.as_dict()
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
    return out


def train_seconds(run_dir: str) -> float:
    with open(os.path.join(run_dir, "metrics.csv")) as fh:
        return sum(float(r["time_s"]) for r in csv.DictReader(fh))


def mean_sd(vals) -> str:
    v = np.asarray(vals, float)
    return f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [r["arm"] for r in rows]
    x = np.arange(len(arms))
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2, 4))
    for off, key, color in ((-0.2, "rank1", "tab:blue"), (0.2, "mAP", "tab:orange")):
        ax.bar(x + off, [r[f"{key}_mean"] for r in rows], 0.4, yerr=[r[f"{key}_sd"] for r in rows], capsize=4, label=key, color=color)
    base = next((r for r in rows if r["arm"] == "basic"), None)
    if base:
        ax.axhline(base["rank1_mean"], color="tab:blue", lw=0.8, ls="--")
        ax.axhline(base["mAP_mean"], color="tab:orange", lw=0.8, ls="--")
    ax.set_xticks(x, arms)
    ax.set_ylabel("% (mean, error bar: sd over seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="the CUHK03 folder (../shared/data/cuhk03)")
    ap.add_argument("--small", action="store_true", help="the CPU setting")
    ap.add_argument("--arms", nargs="+", default=["basic", "lsro", "camstyle", "fgsm", "htg_gl01_lr_fh2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs-dir", help="default: runs/augmenters_small or runs/augmenters_full")
    ap.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    ap.add_argument("--summary-only", action="store_true", help="only summarise finished runs")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every re-ID run")
    args = ap.parse_intermixed_args()
    if not os.path.isdir(args.data_root):
        raise SystemExit(f"error: data root {args.data_root!r} not found; pass --data-root pointing at the CUHK03 folder")
    setting = "small" if args.small else "full"
    cfgs = {k: os.path.join(CONFIGS, v) for k, v in SETTINGS[setting].items()}
    runs = args.runs_dir or os.path.join("runs", f"augmenters_{setting}")
    gan_dirs = {m: os.path.abspath(os.path.join(runs, f"gan_{m}")) for m in ("dcgan", "cyclegan")}

    arms = runner.pick_arms(args.arms, runner.load_arms())
    gan_cpu = {}
    for model in sorted({a.gan for a in arms} - {None}):
        if not args.summary_only:
            train_gan(model, cfgs[model], args.data_root, gan_dirs[model], args.device)
        gan_cpu[model] = runner.cpu_seconds(gan_dirs[model])
    for seed in args.seeds:  # seed-major: an interrupted benchmark still has comparable arms
        for arm in arms:
            out = runner.run_dir(runs, arm.name, seed)
            if args.summary_only or os.path.isfile(os.path.join(out, "eval_faiss.json")):
                continue
            if not os.path.isfile(os.path.join(out, "eval.json")):
                cmd = runner.train_command(cfgs["reid"], args.data_root, out, seed, arm, args.overrides, gan_dirs=gan_dirs)
                runner.run(cmd + (["--device", args.device] if args.device else []), os.path.join(out, "cpu_seconds.txt"))
            faiss_eval(out, args.device)

    rows = []
    base_cpu = {s: runner.cpu_seconds(runner.run_dir(runs, "basic", s)) for s in args.seeds}
    results = {}
    for arm in args.arms:
        done = [s for s in args.seeds if os.path.isfile(os.path.join(runs, f"{arm}_s{s}", "eval_faiss.json"))]
        if not done:
            continue
        evals = [faiss_eval(os.path.join(runs, f"{arm}_s{s}"), args.device) for s in done]
        results.update({(arm, s): {"rank1": 100 * e["rank1"], "mAP": 100 * e["mAP"]} for s, e in zip(done, evals)})
        cpu = [runner.cpu_seconds(os.path.join(runs, f"{arm}_s{s}")) for s in done]
        wall = [train_seconds(os.path.join(runs, f"{arm}_s{s}")) for s in done]
        r1 = [100 * e["rank1"] for e in evals]
        mp = [100 * e["mAP"] for e in evals]
        extra = [c / base_cpu[s] - 1 for s, c in zip(done, cpu) if np.isfinite(base_cpu.get(s, np.nan)) and np.isfinite(c)]
        gan = next(a.gan for a in arms if a.name == arm)
        rows.append({
            "arm": arm, "seeds": len(done), "rank1": mean_sd(r1), "mAP": mean_sd(mp),
            "rank1_mean": float(np.mean(r1)), "rank1_sd": float(np.std(r1, ddof=1)) if len(r1) > 1 else 0.0,
            "mAP_mean": float(np.mean(mp)), "mAP_sd": float(np.std(mp, ddof=1)) if len(mp) > 1 else 0.0,
            "cpu_min": round(float(np.mean(cpu)) / 60, 1), "extra_cpu": f"{100 * np.mean(extra):+.0f}%" if extra else "",
            "gan_cpu_min": round(gan_cpu[gan] / 60, 1) if gan else 0.0, "train_wall_min": round(float(np.mean(wall)) / 60, 1),
        })
    if not rows:
        raise SystemExit("no finished run to summarise")
    cols = ["arm", "seeds", "rank1", "mAP", "cpu_min", "extra_cpu", "gan_cpu_min"]
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    paired, paired_cols = runner.paired_rows(results, args.arms, args.seeds, "basic")
    table += "\n\nPaired against basic (same seeds), 95% interval:\n\n" + runner.markdown(paired, paired_cols)
    title = (f"CUHK03-pair1, {setting} setting ({os.path.basename(cfgs['reid'])}), FAISS flat index, noninterp AP, "
             f"mean +- sd over seeds {args.seeds}")
    print(f"\n{title}\n{table}")
    with open(os.path.join(runs, "augmenters.md"), "w") as fh:
        fh.write(f"{title}\n\n{table}\n")
    with open(os.path.join(runs, "augmenters.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, os.path.join(runs, "augmenters.png"), title)
    print(f"wrote {os.path.join(runs, 'augmenters.md')}, .csv and .png")


if __name__ == "__main__":
    main()
