#!/usr/bin/env python
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
import csv
import dataclasses
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

from reid_htg.builders import (
    build_batch_assembler,
    build_htg,
    build_model,
    build_optimization,
    build_sampler,
    model_args,
)
from reid_htg.checkpoint import (
    code_version,
    init_from_checkpoint,
    load_checkpoint,
    package_versions,
    save_checkpoint,
)
from reid_htg.cli import run_tool
from reid_htg.config import TrainConfig, load_config, save_config, to_dict
from reid_htg.data import DatasetError, build_dataset, drop_unreadable, eval_protocol, hold_out_identities, relabel, split_of
from reid_htg.data.dataset import ImageSet, iterate_batches
from reid_htg.features import default_device, extract_features
from reid_htg.htg import HTG
from reid_htg.losses import batch_hard_triplet_loss, identity_cross_entropy
from reid_htg.metrics import evaluate_class_level, evaluate_features
from reid_htg.utils.plots import plot_training
from reid_htg.utils.progress import progress as progress_bar

COLUMNS = ["epoch", "lr", "loss", "softmax", "triplet", "tri_active", "tri_gap", "tri_active_all", "train_acc", "img_per_s", "time_s"]


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


RUN_FILES = ("last.pt", "metrics.csv", "eval.json", "val.json", "curves.png")


def claim_output_dir(out_dir: str, resume, overwrite: bool) -> None:
    """Refuse to train over a finished or interrupted run unless told to resume it or to start afresh."""
    present = [f for f in RUN_FILES if os.path.isfile(os.path.join(out_dir, f))]
    if resume:
        if resume == "auto" and not os.path.isfile(os.path.join(out_dir, "last.pt")):
            raise SystemExit(f"error: --resume, but {os.path.join(out_dir, 'last.pt')} does not exist (drop --resume to start a new run)")
        return
    if present and not overwrite:
        raise SystemExit(f"error: {out_dir} already holds a run ({', '.join(present)}); pass --resume to continue it, "
                         "--overwrite to start afresh, or choose another --output-dir / name=")
    for f in present:
        os.remove(os.path.join(out_dir, f))


def setup_distributed(device_arg):
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_arg != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        return dist.get_rank(), world, torch.device(f"cuda:{local}" if use_cuda else "cpu")
    device = default_device(device_arg)
    return 0, 1, device


def image_set(part, cfg: TrainConfig, rank: int, labels=None) -> ImageSet:
    try:
        return ImageSet(part["path"], part["pid"] if labels is None else labels, part["camid"], (cfg.data.height, cfg.data.width),
                        cache=cfg.data.cache, progress=rank == 0)
    except OSError as exc:
        split = str(part["split"].iloc[0]) if len(part) and "split" in part else "train"
        fix = "or set data.skip_unreadable=true" if split == "train" else f"and fix or remove it ({split} images are never skipped: data.skip_unreadable covers training images only)"
        raise DatasetError(f"{exc}; run tools/check_dataset.py to list every bad image, {fix}") from None


EVAL_KEYS = {"reid": ("rank1", "mAP"), "class": ("recall@1", "map@r")}  # the metrics a row of metrics.csv keeps
PROTOCOL_NAMES = {"reid": "Market-1501 protocol", "class": "class-level retrieval, every test image against the others"}


def eval_sets(part, protocol: str, cfg: TrainConfig, rank: int) -> tuple[str, dict]:
    """(protocol, {"query", "gallery"} or {"test"}: ImageSets) of a table's evaluation rows."""
    splits = ("query", "gallery") if protocol == "reid" else ("test",)
    return protocol, {s: image_set(split_of(part, s), cfg, rank) for s in splits}


def load_data(cfg: TrainConfig, rank: int) -> SimpleNamespace:
    """Training images (relabelled 0..K-1), the validation split held out of them, and the test split (main process)."""
    df = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.args)
    train = split_of(df, "train")
    if len(train) == 0:
        raise DatasetError(f"{cfg.data.dataset} at {cfg.data.root} has no training images (an evaluation-only set: "
                           "evaluate a checkpoint on it with tools/eval.py --checkpoint CKPT --dataset NAME --data-root PATH)")
    if cfg.data.skip_unreadable:
        train, dropped = drop_unreadable(train, progress=rank == 0)
        for path, reason in dropped:
            print(f"warning: skipping unreadable image {path} ({reason})", file=sys.stderr)
    try:
        protocol = eval_protocol(df)
    except DatasetError:
        protocol = None  # training only
    d = SimpleNamespace(val=None, test=None, num_train=len(train))
    if cfg.data.val_ids:
        val_protocol = protocol or ("reid" if train["camid"].nunique() > 1 else "class")
        train, held = hold_out_identities(train, cfg.data.val_ids, cfg.data.val_seed, val_protocol)
        d.num_train = len(train)
        if rank == 0:
            d.val = eval_sets(held, val_protocol, cfg, rank)
    labels, _ = relabel(train["pid"].to_numpy())
    d.images, d.labels, d.num_classes = image_set(train, cfg, rank, labels=labels), labels, int(labels.max()) + 1
    if rank == 0 and cfg.eval_test and protocol is not None:
        d.test = eval_sets(df, protocol, cfg, rank)
    return d


def evaluate(model, split, device):
    """Metrics of ``model`` on an evaluation split (its protocol's), or None with one line saying why it could not run."""
    protocol, sets = split
    feats = {name: extract_features(model, images, device=device, desc=f"{name} features") for name, images in sets.items()}
    try:
        if protocol == "class":
            return evaluate_class_level(feats["test"], sets["test"].labels.numpy(), nmi_seed=0)
        q, g = sets["query"], sets["gallery"]
        return evaluate_features(feats["query"], feats["gallery"], q.labels, g.labels, q.camids, g.camids)
    except ValueError as exc:
        print(f"warning: evaluation skipped: {exc}", file=sys.stderr)
        return None


def headline(result) -> dict:
    d = result.as_dict()
    return {k: d[k] for k in (EVAL_KEYS["class"] if "map@r" in d else EVAL_KEYS["reid"])}


def htg_starts(cfg: TrainConfig, epoch: int, active_all: float | None) -> bool:
    """HTG starts after ``htg.warmup_epochs``, and (with ``htg.start_active``) once the last epoch's batch-all active fraction is below it."""
    h = cfg.htg
    return epoch >= h.warmup_epochs and (h.start_active is None or (active_all is not None and active_all < h.start_active))


def keep_rows_up_to(path: str, epoch: int, saved_row: list[str] | None = None) -> None:
    """On resume: metrics rows up to the checkpoint's epoch, no further, and no stale temporary checkpoints.

    A kill after an epoch's checkpoint but before its row (during evaluation)
    would lose the row; the checkpoint carries the row's training columns
    (``saved_row``), which are restored then, with the evaluation left empty.
    """
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= epoch]
    if saved_row and not any(int(float(r[0])) == epoch for r in kept[1:]):
        kept.append(saved_row)
    if kept != rows:
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
    folder = os.path.dirname(os.path.abspath(path))
    for name in sorted(os.listdir(folder)):
        if name.startswith("last.pt.tmp"):
            os.remove(os.path.join(folder, name))


def format_row(columns: list[str], row: dict) -> list[str]:
    return [f"{row[c]:.6g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]


def write_row(path: str, columns: list[str], row: dict) -> None:
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow(format_row(columns, row))


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(TrainConfig, args.config, args.overrides)  # a bad value ends the run here, in one line (reid_htg.cli)
    if args.data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data_root))
    out_dir = args.output_dir or os.path.join("runs", cfg.name)
    if int(os.environ.get("RANK", "0")) == 0:
        claim_output_dir(out_dir, args.resume, args.overwrite)
    rank, world, device = setup_distributed(args.device)
    main_proc = rank == 0
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    cuda = device.type == "cuda"
    data = load_data(cfg, rank)
    num_classes, images = data.num_classes, data.images
    try:
        sampler = build_sampler(cfg, data.labels, rank, world)
    except ValueError as exc:
        raise SystemExit(f"error: {exc} (lower data.p, or hold out fewer identities with data.val_ids)") from None
    model = build_model(cfg, num_classes)
    if cfg.model.init_from:  # fine-tuning: every weight but the classifier from the source run (on resume too, to check the file)
        digest = init_from_checkpoint(model, cfg.model.init_from, cfg.model.init_sha256)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_sha256=digest))
        if main_proc:
            print(f"initialised from {cfg.model.init_from} (sha256 {digest[:16]}...; classifier fresh for {num_classes} identities)")
    model = model.to(device)
    if cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    htg = build_htg(cfg, model.dim, num_classes)
    htg = htg.to(device) if htg is not None else None
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    batches = build_batch_assembler(cfg, images, num_classes, device, aug_gen, progress=main_proc)
    steps = len(sampler)
    opt, sched = build_optimization(cfg, model.parameters(), steps)

    start_epoch, htg_start, active_all, saved_row = 0, None, None, None
    ckpt_path = os.path.join(out_dir, "last.pt")
    if args.resume:
        path = ckpt_path if args.resume == "auto" else args.resume
        state = load_checkpoint(path, map_location=device)
        saved, now = dict(state["config"], epochs=None), dict(to_dict(cfg), epochs=None)
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise SystemExit(f"error: {path} was trained with another config (sections {diff} differ); resume with the same config")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        aug_gen.set_state(state["aug_rng"][rank] if rank < len(state["aug_rng"]) else state["aug_rng"][0])
        if htg is not None and state.get("htg") is not None:
            htg.load_state_dict(state["htg"])
        start_epoch, htg_start, active_all = state["epoch"], state.get("htg_start"), state.get("active_all")
        saved_row = state.get("metrics_row")
        if main_proc:
            print(f"resumed from {path} after epoch {start_epoch}")
    if htg is not None and world > 1:
        htg.broadcast_()  # G and D start equal on every process; their steps average gradients
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    run_model = torch.compile(ddp_model) if cfg.compile and cuda else ddp_model

    evaluated = data.val or data.test  # what evaluation during training reads: the validation split when there is one
    eval_columns = [("val_" if data.val else "") + k for k in EVAL_KEYS[evaluated[0]]] if evaluated else []
    columns = COLUMNS + eval_columns + (["htg_on", *HTG.LOG_KEYS] if htg else [])
    csv_path = os.path.join(out_dir, "metrics.csv")
    if main_proc:
        os.makedirs(out_dir, exist_ok=True)
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
        print(f"{cfg.name}: {data.num_train} training images of {num_classes} identities ({cfg.data.dataset}), "
              f"{steps} iterations/epoch x {cfg.epochs} epochs, {world} process(es) on {device}; output {out_dir}")
        if evaluated is None:
            print("note: this dataset has no evaluation split (query + gallery, or test) and data.val_ids=0: training only")
        if start_epoch == 0 or not os.path.isfile(csv_path):
            with open(csv_path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
        else:
            keep_rows_up_to(csv_path, start_epoch, saved_row)

    result = val_result = None
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        if htg is not None and htg_start is None and htg_starts(cfg, epoch, active_all):
            htg_start = epoch
            if main_proc:
                why = f"; the last epoch's batch-all active fraction {active_all:.3f} < {cfg.htg.start_active}" if cfg.htg.start_active is not None else ""
                print(f"HTG starts at epoch {epoch + 1} (after {cfg.htg.warmup_epochs} warm-up epoch(s){why})", flush=True)
        run_model.train()
        sums, n_batches, n_images, t0 = {}, 0, 0, time.perf_counter()
        bar = progress_bar(iterate_batches(images, sampler, cfg.data.workers), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=main_proc)
        for x, y, _, idx in bar:
            y = y.to(device, non_blocking=True)
            x, targets = batches(model, x.to(device, non_blocking=True), y, idx)  # real rows first, then augmenter rows
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
                out = run_model(x)
            emb = out["embedding"][: len(y)].float()
            tri, tri_stats = batch_hard_triplet_loss(emb, y, cfg.loss.margin, cfg.loss.normalize)
            terms = {  # name -> (loss, weight): the embedding network's objective as data
                "softmax": (identity_cross_entropy(out["logits"], targets, cfg.loss.label_smoothing), cfg.loss.softmax),
                "triplet": (tri, cfg.loss.triplet),
            }
            stats = {"tri_active": tri_stats["active"], "tri_gap": tri_stats["gap"], "tri_active_all": tri_stats["active_all"]}
            if htg_start is not None:  # HTG: D step, G step, then G's hard triplets join F's objective
                stats.update(htg.d_step(emb.detach(), y))
                stats.update(htg.g_step(emb.detach(), y, model.classifier, model.neck))
                hard, hard_stats = htg.hard_triplet_loss(emb, y)
                terms["htg_hard"] = (hard, cfg.htg.f_hard)
                stats.update(hard_stats)
            loss = sum(w * v for v, w in terms.values() if w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            stats.update({k: float(v.detach()) for k, (v, _) in terms.items()}, loss=float(loss.detach()))
            stats["train_acc"] = float((out["logits"][: len(y)].argmax(1) == y).float().mean())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches, n_images = n_batches + 1, n_images + len(y)
            if main_proc and n_batches % max(cfg.log_every, 1) == 0:
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.2f}")
        if n_batches == 0:
            raise SystemExit("error: the sampler produced no batch; lower data.p or data.k for this dataset")
        elapsed = time.perf_counter() - t0
        row = {k: v / n_batches for k, v in sums.items()}
        row.update(epoch=epoch + 1, lr=opt.param_groups[0]["lr"], img_per_s=n_images * world / elapsed, time_s=elapsed)
        active_all = row.get("tri_active_all")
        if htg is not None:
            row["htg_on"] = int(htg_start is not None)
        save_run(cfg, out_dir, ckpt_path, epoch, model, opt, sched, htg, htg_start, active_all, aug_gen, world, main_proc, num_classes,
                 format_row(columns, row))
        last = epoch + 1 == cfg.epochs
        if main_proc and evaluated and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            if data.val is not None:  # model selection reads the validation split; the test split waits for the end
                val_result = evaluate(model, data.val, device)
                row.update({f"val_{k}": v for k, v in headline(val_result).items()} if val_result else {})
            else:
                result = evaluate(model, data.test, device)
                row.update(headline(result) if result else {})
        if main_proc:
            write_row(csv_path, columns, row)
            msg = " ".join(f"{k}={row[k]:.4g}" for k in ("loss", "softmax", "triplet", "tri_active", "train_acc", "img_per_s") if k in row)
            evals = "".join(f" {k}={row[k]:.4f}" for k in eval_columns if k in row)
            print(f"epoch {epoch + 1}/{cfg.epochs} {msg}{evals} ({elapsed:.1f}s)", flush=True)
    if world > 1 and not weights_agree(model, htg, world, main_proc):
        return 1
    if main_proc:
        finish(cfg, out_dir, csv_path, model, data, device, result, val_result)
    return 0


def save_run(cfg, out_dir, ckpt_path, epoch, model, opt, sched, htg, htg_start, active_all, aug_gen, world, main_proc, num_classes,
             metrics_row: list[str]) -> None:
    """Write last.pt (atomically) with everything a resume needs (under DDP every process's augmentation RNG state) and the
    epoch's metrics row before evaluation, so a kill during evaluation loses no row."""
    rng_states = [aug_gen.get_state()]
    if world > 1:
        rng_states = [torch.empty_like(rng_states[0]) for _ in range(world)]
        dist.all_gather_object(rng_states, aug_gen.get_state())
    if not main_proc:
        return
    save_checkpoint(
        {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "htg": htg.state_dict() if htg is not None else None, "htg_start": htg_start, "active_all": active_all,
            "aug_rng": rng_states, "epoch": epoch + 1, "config": to_dict(cfg), "model_args": model_args(cfg, num_classes),
            "data_args": dict(dataset=cfg.data.dataset, root=os.path.abspath(cfg.data.root), args=cfg.data.args, height=cfg.data.height, width=cfg.data.width),
            "code_version": code_version(), "versions": package_versions(), "metrics_row": metrics_row,
        },
        ckpt_path,
    )


def weights_agree(model, htg, world: int, main_proc: bool) -> bool:
    """Under DDP: do all processes hold the same F (and G, D)? Printed, then the process group is closed."""
    params = [*model.parameters(), *(htg.parameters() if htg is not None else [])]
    flat = torch.cat([p.detach().float().flatten() for p in params])
    sums_all = [torch.zeros(2) for _ in range(world)]
    dist.all_gather(sums_all, torch.stack([flat.sum(), flat.abs().sum()]).cpu())
    agree = all(torch.allclose(s, sums_all[0]) for s in sums_all)
    if main_proc:
        print(f"ranks agree on the weights{' (F, G and D)' if htg is not None else ''}: {agree}")
    dist.destroy_process_group()
    return agree


def finish(cfg, out_dir, csv_path, model, data, device, result, val_result) -> None:
    """Curves, the validation result (val.json), and the test split, evaluated once (eval.json)."""
    plot_training(csv_path, os.path.join(out_dir, "curves.png"))
    if val_result is not None:
        with open(os.path.join(out_dir, "val.json"), "w") as fh:
            json.dump(dict(val_result.as_dict(), val_ids=cfg.data.val_ids, val_seed=cfg.data.val_seed), fh, indent=2)
        print(f"\n{cfg.name}: validation split ({cfg.data.val_ids} held-out training identities; {PROTOCOL_NAMES[data.val[0]]}, cosine distance)")
        print(val_result.format())
        if data.test is not None:
            result = evaluate(model, data.test, device)
    if result is not None:
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump(result.as_dict(), fh, indent=2)
        print(f"\n{cfg.name} on {cfg.data.dataset} ({PROTOCOL_NAMES[data.test[0]]}, cosine distance)")
        print(result.format())


if __name__ == "__main__":
    sys.exit(run_tool(main))
