#!/usr/bin/env python
"""Arms x seeds x recipes with paired seeds: run what is missing, then print each arm against a reference arm.

    python benchmarks/paired.py --dataset small --arms basic htg_v1_batchhard_reversed --seeds 0 1 2 3 4 5 6 7 --val
    python benchmarks/paired.py --dataset cuhk03 --arms keypoint both_fh2 both_fh2_static --reference keypoint --seeds 0 1 2
    python benchmarks/paired.py --dataset cuhk03_ft --arms keypoint both_fh2_static both_fh2 --seeds 0 1 2 3 4
    python benchmarks/paired.py --dataset cuhk03_ft --arms keypoint lsro --gan dcgan=runs/gan_dcgan_64x32 --seeds 0 1 2 3 4
    python benchmarks/paired.py --dataset small --arms basic htg_gl01_lr --seeds 0 1 --summary-only
    python benchmarks/paired.py --dataset small --arm mine="htg.enabled=true htg.lr=1e-3" --arms basic mine
    python benchmarks/paired.py --list                         # every arm and recipe, one line each

Arms are data: ``configs/arms/*.yaml`` (benchmarks/runner.py reads them).
Every run is ``tools/train_reid.py`` with the recipe's config, ``seed=S`` and
the arm's overrides, written to RUNS_DIR/<recipe>/<arm>_s<seed>/ (default
RUNS_DIR: runs/paired); a finished run (its result file exists) is skipped and
an interrupted one resumed, so the script continues where it stopped. Runs go
seed by seed (all arms of seed 0, then seed 1 ...), so an interrupted benchmark
still has complete pairs; run two copies with disjoint ``--seeds`` to use two
cores, then once more with every seed to summarise.

``--val`` is for choosing settings: each run holds out ``--val-ids`` training
identities (``data.val_ids``, the same ones for every run), never evaluates the
test split, and the table reads the validation split. Without it the table
reads the test split (``eval.json``): evaluate each test split once per
decision, with the settings chosen on validation.

The table gives, per arm, the mean +- sd over seeds of rank-1 and mAP
(Recall@1 and MAP@R on class-level data) and, for every arm but the reference,
the paired difference to the reference (same seeds): its mean and 95%
confidence interval (Student's t over the per-seed differences). Written as
RUNS_DIR/<recipe>/paired[_val].md and .csv, with HTG's diagnostics under it.
"""
from __future__ import annotations

import argparse
import os
import shlex

import runner

SHARED = os.path.join(os.path.dirname(runner.ROOT), "shared", "data")
DATASETS = {  # recipe name -> (config, default data root, what it is)
    "small": ("augmenters_small.yaml", os.path.join(SHARED, "cuhk03"), "CUHK03-pair1, small setting (ResNet-10-T, 32x16, 3 epochs)"),
    "cuhk03": ("cuhk03_cpu.yaml", os.path.join(SHARED, "cuhk03"), "CUHK03-pair1, CPU recipe (ResNet-18, 64x32, 8 epochs)"),
    "market": ("market_cpu.yaml", os.path.join(SHARED, "market1501"), "Market-501/250, CPU recipe (ResNet-18, 64x32)"),
    "cub50": ("cub50_cpu.yaml", os.path.join(SHARED, "cub50", "images"), "CUB-50, CPU recipe (ResNet-18, 64x64, 20 epochs)"),
    "cuhk03_ft": ("cuhk03_finetune.yaml", os.path.join(SHARED, "cuhk03"),
                  "CUHK03-pair1 fine-tuned from the Market-501/250 source model (strong start, ResNet-18 + keypoint blocks, 64x32)"),
    "cub50_long": ("cub50_long.yaml", os.path.join(SHARED, "cub50", "images"), "CUB-50, 3x the CPU recipe's budget (60 epochs)"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=["small"], choices=sorted(DATASETS), help="recipe(s)")
    ap.add_argument("--data-root", help="dataset folder (default: ../shared/data/<dataset>); only with one --dataset")
    ap.add_argument("--arms", nargs="+", default=["basic", "htg_gl01_lr_fh2"])
    ap.add_argument("--arm", action="append", default=[], metavar='NAME="K=V K=V"', help="define an arm by its overrides")
    ap.add_argument("--reference", default=None, help="the arm the others are paired against (default: the first arm)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--val", action="store_true", help="model selection: hold out training identities, never touch the test split")
    ap.add_argument("--val-ids", type=int, default=100, help="training identities held out with --val")
    ap.add_argument("--runs-dir", default=os.path.join("runs", "paired"))
    ap.add_argument("--summary-only", action="store_true", help="only summarise the runs already finished")
    ap.add_argument("--gan", action="append", default=[], metavar="MODEL=DIR",
                    help="a GAN run of tools/train_gan.py for the arms that need one, e.g. dcgan=runs/gan_dcgan (lsro), cyclegan=... (camstyle)")
    ap.add_argument("--list", action="store_true", help="list the arms and recipes and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_intermixed_args()
    arms = runner.load_arms()
    if args.list:
        for a in arms.values():
            print(f"{a.name:28s} {a.about}")
        print()
        for name, (config, _, about) in DATASETS.items():
            print(f"{name:28s} configs/{config}: {about}")
        return
    for spec in args.arm:
        name, _, ov = spec.partition("=")
        if not name or not ov:
            raise SystemExit(f'error: --arm {spec!r} is not NAME="key=value key=value"')
        arms[name] = runner.Arm(name, "defined on the command line", tuple(shlex.split(ov)))
    picked = runner.pick_arms(args.arms, arms)
    gan_dirs = dict(g.split("=", 1) for g in args.gan if "=" in g)
    missing = sorted({a.gan for a in picked if a.gan} - set(gan_dirs))
    if missing and not args.summary_only:
        raise SystemExit(f"error: arm(s) {[a.name for a in picked if a.gan in missing]} need a GAN run: pass --gan {missing[0]}=DIR "
                         "(train one with tools/train_gan.py, or use benchmarks/augmenters.py, which trains them)")
    args.reference = args.reference or args.arms[0]
    if args.data_root and len(args.dataset) > 1:
        raise SystemExit("error: --data-root applies to one --dataset at a time")
    for dataset in args.dataset:
        config, default_root, about = DATASETS[dataset]
        root = args.data_root or default_root
        base = os.path.join(args.runs_dir, dataset)
        if not args.summary_only:
            if not os.path.isdir(root):
                raise SystemExit(f"error: data root {root!r} for {dataset} not found; pass --data-root")
            for seed in args.seeds:
                for arm in picked:
                    out = runner.run_dir(base, arm.name, seed)
                    if not os.path.isfile(runner.result_file(out, args.val)):
                        runner.run(runner.train_command(os.path.join(runner.ROOT, "configs", config), root, out, seed, arm, args.overrides,
                                                        args.val_ids if args.val else 0, gan_dirs))
        split = f"validation split ({args.val_ids} held-out training identities)" if args.val else "test split"
        print("\n" + runner.summarise(base, args.arms, args.seeds, args.reference, f"{about}; {split}", val=args.val), flush=True)


if __name__ == "__main__":
    main()
