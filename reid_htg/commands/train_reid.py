"""Train a re-ID embedding network (biasless softmax + batch-hard triplet, optional keypoint blocks, HTG, GAN/FGSM augmenters).

    python tools/train_reid.py                                    # built-in synthetic default, a few CPU minutes
    python tools/train_reid.py --config configs/cuhk03_cpu.yaml --data-root ../shared/data/cuhk03
    python tools/train_reid.py --config FILE optim.optimizer.args.lr=1e-3 model.keypoint_blocks=[]
    python tools/train_reid.py --config FILE --resume             # continue runs/<name>/last.pt
    python tools/train_reid.py --config FILE augmenters.lsro_checkpoint=runs/gan_dcgan augmenters.lsro_ratio=0.25
    torchrun --nproc_per_node 2 tools/train_reid.py --config FILE # DistributedDataParallel

The output folder (default runs/<config name>/) holds config.yaml (the resolved
config), metrics.csv (one row per epoch), last.pt (written atomically after
every epoch) and eval.json (the final rank-1/mAP).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

from reid_htg import distributed
from reid_htg.builders import (
    build_batch_assembler,
    build_htg,
    build_model,
    build_optimization,
    build_sampler,
    build_train_step,
    build_training_data,
    model_args,
)
from reid_htg.checkpoint import check_resumable, init_from_checkpoint, load_checkpoint, restore_training, save_checkpoint, training_state
from reid_htg.cli import run_tool
from reid_htg.config import TrainConfig, from_dict, load_config, save_config, to_dict
from reid_htg.data.dataset import iterate_batches
from reid_htg.data.transforms import normalize
from reid_htg.device import flush_denormal
from reid_htg.features import HEADLINE, PROTOCOL_NAMES, evaluate_split
from reid_htg.htg import HTG
from reid_htg.models.health import health_columns, health_row
from reid_htg.runs import MetricsLog, RunFolder, TensorBoardLog, check_same_config, format_row
from reid_htg.training import EpochMeans
from reid_htg.utils.plots import plot_training
from reid_htg.utils.progress import progress as progress_bar

COLUMNS = ["epoch", "lr", "loss", "softmax", "triplet", "tri_active", "tri_gap", "tri_active_all", "train_acc", "img_per_s", "time_s"]
RUN_FILES = ("last.pt", "metrics.csv", "eval.json", "val.json", "curves.png")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a YAML file from configs/ (default: the built-in synthetic run)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.optimizer.args.lr=1e-3")
    ap.add_argument("--data-root", help="dataset folder (overrides data.root)")
    ap.add_argument("--output-dir", help="default: runs/<config name>/")
    ap.add_argument("--resume", nargs="?", const="auto", help="continue from OUTPUT_DIR/last.pt, or from the given checkpoint")
    ap.add_argument("--overwrite", action="store_true", help="start afresh in an output folder that already holds a run")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    args = ap.parse_intermixed_args(argv)
    if args.resume not in (None, "auto") and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.append(args.resume)  # `--resume epochs=2`: an override, not a checkpoint path
        args.resume = "auto"
    return args


def evaluate(model, split, device):
    """Metrics of ``model`` on an evaluation split (its protocol's), or None with one line saying why it could not run."""
    try:
        return evaluate_split(model, split, device)
    except ValueError as exc:
        print(f"warning: evaluation skipped: {exc}", file=sys.stderr)
        return None


def headline(result) -> dict:
    d = result.as_dict()
    return {k: d[k] for k in (HEADLINE["class"] if "map@r" in d else HEADLINE["reid"])}


def health_probe(images, device, n: int = 64) -> torch.Tensor:
    """``n`` training images spread over the set (normalised, on ``device``): the images silent channels are counted on."""
    idx = torch.linspace(0, len(images) - 1, min(n, len(images))).long()
    x, _, _ = images.batch(idx)
    return normalize(x.to(device))


def htg_starts(cfg: TrainConfig, epoch: int, active_all: float | None) -> bool:
    """HTG starts after ``htg.warmup_epochs``, and (with ``htg.start_active``) once the last epoch's batch-all active fraction is below it."""
    h = cfg.htg
    return epoch >= h.warmup_epochs and (h.start_active is None or (active_all is not None and active_all < h.start_active))


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(TrainConfig, args.config, args.overrides)  # a bad value ends the run here, in one line (reid_htg.cli)
    if args.data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data_root))
    out_dir = args.output_dir or os.path.join("runs", cfg.name)
    if int(os.environ.get("RANK", "0")) != 0:  # the main process owns the folder
        return train(args, cfg, out_dir, None)
    args.resume = resume_source(args.resume, out_dir)
    here = args.resume == "auto"  # --resume PATH continues another run's checkpoint into this folder
    with RunFolder(out_dir, RUN_FILES, resume=here, overwrite=args.overwrite) as run:  # refused here, before any work
        return train(args, cfg, out_dir, run)


def resume_source(resume: str | None, out_dir: str) -> str | None:
    """``--resume``'s checkpoint: ``auto`` for this folder's own (also when the path names it or the folder), else a file.

    Nothing is read or removed here; a path that is not a checkpoint file is refused in one line.
    """
    if resume in (None, "auto"):
        return resume
    path = os.path.join(resume, "last.pt") if os.path.isdir(resume) else resume
    if os.path.realpath(os.path.dirname(os.path.abspath(path))) == os.path.realpath(out_dir) and os.path.basename(path) == "last.pt":
        return "auto"  # this folder's own checkpoint: resume in place (RunFolder checks that it exists)
    if not os.path.isfile(path):
        raise SystemExit(f"error: --resume {resume}: no checkpoint there ({path} not found); give RUN/last.pt, or --resume alone for "
                         f"{os.path.join(out_dir, 'last.pt')}")
    return path


def train(args, cfg: TrainConfig, out_dir: str, run: RunFolder | None) -> int:
    rank, world, device = distributed.setup(args.device)
    main_proc = rank == 0
    if device.type == "cpu":
        flush_denormal(cfg.flush_denormal)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    cuda = device.type == "cuda"
    data = build_training_data(cfg, main_proc)
    try:
        sampler = build_sampler(cfg, data.labels, rank, world)
    except ValueError as exc:
        raise SystemExit(f"error: {exc} (lower data.p, or hold out fewer identities with data.val_ids)") from None
    model = build_model(cfg, data.num_classes)
    if cfg.model.init_from:  # fine-tuning: every weight but the classifier from the source run (on resume too, to check the file)
        digest = init_from_checkpoint(model, cfg.model.init_from, cfg.model.init_sha256)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_sha256=digest))
        if main_proc:
            print(f"initialised from {cfg.model.init_from} (sha256 {digest[:16]}...; classifier fresh for {data.num_classes} identities)")
    model = model.to(device)
    if cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    htg = build_htg(cfg, model.dim, data.num_classes)
    htg = htg.to(device) if htg is not None else None
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    batches = build_batch_assembler(cfg, data.images, data.num_classes, device, aug_gen, progress=main_proc)
    steps = len(sampler)
    opt, sched = build_optimization(cfg, model.parameters(), steps)

    ckpt_path = os.path.join(out_dir, "last.pt")
    resumed = {"epoch": 0, "htg_start": None, "active_all": None, "metrics_row": None}
    state = None
    if args.resume:  # read and checked before the folder is touched: a refused resume leaves the run as it was
        path = ckpt_path if args.resume == "auto" else args.resume
        state = check_resumable(load_checkpoint(path, map_location=device), path)
        check_same_config(to_dict(from_dict(TrainConfig, state["config"])), to_dict(cfg), path)  # keys added since: their defaults
    if main_proc:
        run.start()  # locked for this process from here on; --overwrite removes the old run only now
    if state is not None:
        resumed = restore_training(state, model, opt, sched, htg, aug_gen, rank)
        if main_proc:
            print(f"resumed from {path} after epoch {resumed['epoch']}")
    start_epoch, htg_start, active_all = resumed["epoch"], resumed["htg_start"], resumed["active_all"]
    if htg is not None and world > 1:
        htg.broadcast_()  # G and D start equal on every process; their steps average gradients
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    step = build_train_step(cfg, model, opt, sched, htg, device, forward=torch.compile(ddp_model) if cfg.compile and cuda else ddp_model)

    evaluated = data.val or data.test  # what evaluation during training reads: the validation split when there is one
    eval_columns = [("val_" if data.val else "") + k for k in HEADLINE[evaluated.protocol]] if evaluated else []
    columns = COLUMNS + health_columns(model) + eval_columns + (["htg_on", *HTG.LOG_KEYS] if htg else [])
    probe = health_probe(data.images, device)
    log = board = None
    if main_proc:
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
        print(f"{cfg.name}: {data.num_train} training images of {data.num_classes} identities ({cfg.data.dataset}), "
              f"{steps} iterations/epoch x {cfg.epochs} epochs, {world} process(es) on {device}; output {out_dir}")
        if evaluated is None:
            print("note: this dataset has no evaluation split (query + gallery, or test) and data.val_ids=0: training only")
        log = MetricsLog(os.path.join(out_dir, "metrics.csv"), columns, start_epoch or None, resumed["metrics_row"])
        board = TensorBoardLog(os.path.join(out_dir, "tensorboard"), start_epoch) if cfg.log.tensorboard else None

    result = val_result = None
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        if htg is not None and htg_start is None and htg_starts(cfg, epoch, active_all):
            htg_start = epoch
            if main_proc:
                why = f"; the last epoch's batch-all active fraction {active_all:.3f} < {cfg.htg.start_active}" if cfg.htg.start_active is not None else ""
                print(f"HTG starts at epoch {epoch + 1} (after {cfg.htg.warmup_epochs} warm-up epoch(s){why})", flush=True)
        step.forward.train()
        means, n_images, t0 = EpochMeans(), 0, time.perf_counter()
        bar = progress_bar(iterate_batches(data.images, sampler, cfg.data.workers), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=main_proc)
        for x, y, _, idx in bar:
            y = y.to(device, non_blocking=True)
            x, targets = batches(model, x.to(device, non_blocking=True), y, idx)  # real rows first, then augmenter rows
            stats = step(x, y, targets, htg_on=htg_start is not None)
            means.add(stats)
            n_images += len(y)
            if main_proc and means.count % max(cfg.log_every, 1) == 0:
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.2f}")
        if means.count == 0:
            raise SystemExit("error: the sampler produced no batch; lower data.p or data.k for this dataset")
        elapsed = time.perf_counter() - t0
        row = dict(means.means(), epoch=epoch + 1, lr=opt.param_groups[0]["lr"], img_per_s=n_images * world / elapsed, time_s=elapsed)
        active_all = row.get("tri_active_all")
        row.update(health_row(model, probe))
        if htg is not None:
            row["htg_on"] = int(htg_start is not None)
        # the checkpoint, with the epoch's row, goes to disk before evaluation: a kill during evaluation loses nothing
        aug_rng = distributed.gather_objects(aug_gen.get_state())
        if main_proc:
            save_checkpoint(training_state(
                model=model, optimizer=opt, scheduler=sched, htg=htg, htg_start=htg_start, active_all=active_all, aug_rng=aug_rng,
                epoch=epoch + 1, config=to_dict(cfg), model_args=model_args(cfg, data.num_classes), metrics_row=format_row(columns, row),
                data_args=dict(dataset=cfg.data.dataset, root=os.path.abspath(cfg.data.root), args=cfg.data.args, height=cfg.data.height,
                               width=cfg.data.width)), ckpt_path)
        last = epoch + 1 == cfg.epochs
        if main_proc and evaluated and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            if data.val is not None:  # model selection reads the validation split; the test split waits for the end
                val_result = evaluate(model, data.val, device)
                row.update({f"val_{k}": v for k, v in headline(val_result).items()} if val_result else {})
            else:
                result = evaluate(model, data.test, device)
                row.update(headline(result) if result else {})
        if main_proc:
            log.append(row)
            if board is not None:
                board.append(row)
            msg = " ".join(f"{k}={row[k]:.4g}" for k in ("loss", "softmax", "triplet", "tri_active", "train_acc", "img_per_s") if k in row)
            evals = "".join(f" {k}={row[k]:.4f}" for k in eval_columns if k in row)
            print(f"epoch {epoch + 1}/{cfg.epochs} {msg}{evals} ({elapsed:.1f}s)", flush=True)
    if world > 1:
        agree = distributed.weights_agree([model, *([htg] if htg is not None else [])])
        if main_proc:
            print(f"ranks agree on the weights{' (F, G and D)' if htg is not None else ''}: {agree}")
        torch.distributed.destroy_process_group()
        if not agree:
            return 1
    if main_proc:
        finish(cfg, out_dir, log.path, model, data, device, result, val_result)
        if board is not None:
            board.close(os.path.join(out_dir, "curves.png"))
    return 0


def finish(cfg, out_dir, csv_path, model, data, device, result, val_result) -> None:
    """Curves, the validation result (val.json), and the test split, evaluated once (eval.json)."""
    plot_training(csv_path, os.path.join(out_dir, "curves.png"))
    if val_result is not None:
        with open(os.path.join(out_dir, "val.json"), "w") as fh:
            json.dump(dict(val_result.as_dict(), val_ids=cfg.data.val_ids, val_seed=cfg.data.val_seed), fh, indent=2)
        print(f"\n{cfg.name}: validation split ({cfg.data.val_ids} held-out training identities; {PROTOCOL_NAMES[data.val.protocol]}, cosine distance)")
        print(val_result.format())
        if data.test is not None:
            result = evaluate(model, data.test, device)
    if result is not None:
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump(result.as_dict(), fh, indent=2)
        print(f"\n{cfg.name} on {cfg.data.dataset} ({PROTOCOL_NAMES[data.test.protocol]}, cosine distance)")
        print(result.format())


def entry() -> None:
    """The console script ``reid-train`` (and ``tools/train_reid.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
