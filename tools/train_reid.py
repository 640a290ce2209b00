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

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from reid_htg.augmenters import LSROSource, camstyle_images, fgsm, normalized_bounds, pixel_step, smoothed_targets, uniform_targets
from reid_htg.augmenters.mixing import GANCheckpointError
from reid_htg.config import ConfigError, TrainConfig, load_config, save_config, to_dict
from reid_htg.data import DatasetError, build_dataset, drop_unreadable, hold_out_identities, relabel, split_of
from reid_htg.data.augment import augment
from reid_htg.data.dataset import ImageSet, iterate_batches
from reid_htg.data.sampler import PKSampler
from reid_htg.engine.checkpoint import code_version, load_checkpoint, package_versions, save_checkpoint
from reid_htg.engine.extract import extract_features
from reid_htg.engine.optim import build_optimizer, lr_factor
from reid_htg.htg import HTG
from reid_htg.losses import batch_hard_triplet_loss, identity_cross_entropy
from reid_htg.metrics import evaluate_features
from reid_htg.models import ReIDNet
from reid_htg.utils.plots import plot_training


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a YAML file from configs/ (default: the built-in synthetic run)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.optimizer.args.lr=1e-3")
    ap.add_argument("--data-root", help="dataset folder (overrides data.root)")
    ap.add_argument("--output-dir", help="default: runs/<config name>/")
    ap.add_argument("--resume", nargs="?", const="auto", help="continue from OUTPUT_DIR/last.pt, or from the given checkpoint")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return ap.parse_intermixed_args(argv)


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
    return 0, 1, torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_train_set(cfg: TrainConfig, rank: int):
    df = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.args)
    train = split_of(df, "train")
    if len(train) == 0:
        raise DatasetError(f"{cfg.data.dataset} at {cfg.data.root} has no training images")
    if cfg.data.skip_unreadable:
        train, dropped = drop_unreadable(train, progress=rank == 0)
        for path, reason in dropped:
            print(f"warning: skipping unreadable image {path} ({reason})", file=sys.stderr)
    return df, train


def image_set(part, size, cfg, rank, labels=None):
    try:
        return ImageSet(part["path"], part["pid"] if labels is None else labels, part["camid"], size, cache=cfg.data.cache, progress=rank == 0)
    except OSError as exc:
        raise DatasetError(f"{exc}; run tools/check_dataset.py to list every bad image, or set data.skip_unreadable=true") from None


def build_augmenters(cfg: TrainConfig, images: ImageSet, device, rank: int):
    """(LSRO source or None, (CamStyle images, mask) or None), checking the augmenters' settings."""
    a = cfg.augmenters
    for key in ("lsro_ratio", "camstyle_ratio", "fgsm_ratio", "fgsm_eps", "camstyle_smoothing"):
        if getattr(a, key) < 0:
            raise SystemExit(f"error: augmenters.{key} must be >= 0, got {getattr(a, key)}")
    for kind, ratio, ckpt in (("lsro", a.lsro_ratio, a.lsro_checkpoint), ("camstyle", a.camstyle_ratio, a.camstyle_checkpoint)):
        if ratio > 0 and not ckpt:
            raise SystemExit(f"error: augmenters.{kind}_ratio={ratio} needs augmenters.{kind}_checkpoint (a run of tools/train_gan.py)")
    if a.fgsm_ratio > 0 and a.fgsm_eps == 0:
        raise SystemExit("error: augmenters.fgsm_ratio > 0 needs augmenters.fgsm_eps > 0 (e.g. 0.03)")
    try:
        lsro = LSROSource(a.lsro_checkpoint, images.size, device) if a.lsro_ratio > 0 else None
        styled = camstyle_images(a.camstyle_checkpoint, images, device, progress=rank == 0) if a.camstyle_ratio > 0 else None
    except GANCheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None
    return lsro, styled


def fgsm_copies(model, x, y, eps: float, gen, n: int, amp: bool):
    """FGSM copies of ``n`` random rows of the augmented batch, attacked on the identity loss.

    The attack's forward pass runs on copies of the BatchNorm buffers, so it
    leaves the running statistics as they were.
    """
    pick = torch.randperm(len(y), generator=gen, device=x.device)[:n]
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def loss_fn(xx):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = torch.func.functional_call(model, (params, buffers), (xx,))["logits"]
        return identity_cross_entropy(logits, y[pick], 0.0)

    return fgsm(x[pick], loss_fn, pixel_step(eps, x.device), normalized_bounds(x.device)), pick


def evaluate(model, query, gallery, device):
    net = model.module if hasattr(model, "module") else model
    qf = extract_features(net, query, device=device, desc="query features")
    gf = extract_features(net, gallery, device=device, desc="gallery features")
    return evaluate_features(qf, gf, query.labels, gallery.labels, query.camids, gallery.camids)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data_root))
    rank, world, device = setup_distributed(args.device)
    main_proc = rank == 0
    out_dir = args.output_dir or os.path.join("runs", cfg.name)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    cuda = device.type == "cuda"

    try:
        df, train = load_train_set(cfg, rank)
        size = (cfg.data.height, cfg.data.width)
        val_q = val_g = query = gallery = None
        if cfg.data.val_ids:
            train, val_q, val_g = hold_out_identities(train, cfg.data.val_ids, cfg.data.val_seed)
            if main_proc:
                val_q, val_g = image_set(val_q, size, cfg, rank), image_set(val_g, size, cfg, rank)
        labels, _ = relabel(train["pid"].to_numpy())
        images = image_set(train, size, cfg, rank, labels=labels)
        if main_proc and cfg.eval_test and (df["split"] == "gallery").any():
            query, gallery = image_set(split_of(df, "query"), size, cfg, rank), image_set(split_of(df, "gallery"), size, cfg, rank)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    num_classes = int(labels.max()) + 1
    sampler = PKSampler(labels, cfg.data.p, cfg.data.k, seed=cfg.seed, rank=rank, world_size=world)

    m = cfg.model
    model_args = dict(
        backbone=m.backbone, num_classes=num_classes, global_feature=m.global_feature, keypoint_blocks=tuple(m.keypoint_blocks),
        embed_dim=m.embed_dim, bnneck=m.bnneck, classifier=m.classifier, cosine_scale=m.cosine_scale,
        last_stride=m.last_stride, pretrained_path=m.pretrained or None, eval_feature=m.eval_feature,
    )
    model = ReIDNet(**model_args).to(device)
    if cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    h = cfg.htg
    htg = HTG(
        model.dim, num_classes, bottleneck=h.bottleneck, d_hidden=h.d_hidden, lr=h.lr, optimizer=h.optimizer, margin=h.margin,
        distance=h.distance, g_target=h.g_target, mining=h.mining, g_triplet=h.g_triplet, g_label=h.g_label, g_close=h.g_close,
        d_fake=h.d_fake, d_gen_identity=h.d_gen_identity, d_steps=h.d_steps, g_steps=h.g_steps, out_relu=h.out_relu,
        scale_free=h.scale_free, normalize=cfg.loss.normalize,
    ).to(device) if h.enabled else None
    htg_start = None  # the epoch (0-based) HTG started at
    lsro, styled = build_augmenters(cfg, images, device, rank)
    aug = cfg.augmenters
    opt = build_optimizer(cfg.optim.optimizer.name, model.parameters(), **cfg.optim.optimizer.args)
    steps = len(sampler)
    o = cfg.optim
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, cfg.epochs, o.warmup_epochs, o.schedule, o.milestones, o.gamma)
    )
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)

    start_epoch, prev_active_all = 0, None
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
        start_epoch = state["epoch"]
        htg_start = state.get("htg_start")
        prev_active_all = state.get("active_all")
        if main_proc:
            print(f"resumed from {path} after epoch {start_epoch}")
    if htg is not None and world > 1:
        htg.broadcast_()  # G and D start equal on every process; their steps average gradients
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    run_model = torch.compile(ddp_model) if cfg.compile and cuda else ddp_model

    if main_proc:
        os.makedirs(out_dir, exist_ok=True)
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
        print(f"{cfg.name}: {len(train)} training images of {num_classes} identities ({cfg.data.dataset}), "
              f"{steps} iterations/epoch x {cfg.epochs} epochs, {world} process(es) on {device}; output {out_dir}")
    columns = ["epoch", "lr", "loss", "softmax", "triplet", "tri_active", "tri_gap", "tri_active_all", "train_acc", "img_per_s", "time_s"]
    columns += ["val_rank1", "val_mAP"] if val_q is not None else ["rank1", "mAP"]
    if htg is not None:
        columns += ["htg_on", *HTG.LOG_KEYS]
    csv_path = os.path.join(out_dir, "metrics.csv")
    if main_proc and (start_epoch == 0 or not os.path.isfile(csv_path)):
        with open(csv_path, "w", newline="") as fh:
            csv.writer(fh).writerow(columns)

    result = val_result = None
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        if htg is not None and htg_start is None and epoch >= h.warmup_epochs and (
            h.start_active is None or (prev_active_all is not None and prev_active_all < h.start_active)
        ):
            htg_start = epoch
            if main_proc:
                why = f", the last epoch's batch-all active fraction {prev_active_all:.3f} < {h.start_active}" if h.start_active is not None else ""
                print(f"HTG starts at epoch {epoch + 1} (after {h.warmup_epochs} warm-up epoch(s){why})", flush=True)
        run_model.train()
        sums, n_batches, n_images, t0 = {}, 0, 0, time.perf_counter()
        bar = tqdm(iterate_batches(images, sampler, cfg.data.workers), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if main_proc else True, leave=False)
        for x, y, _, idx in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            b = len(y)
            extra_x, extra_t = [], []  # augmenter images joining the identity loss, and their target distributions
            if lsro is not None:  # DCGAN samples, uniform targets
                n = max(1, round(aug.lsro_ratio * b))
                extra_x.append(lsro.sample(n, aug_gen))
                extra_t.append(uniform_targets(n, num_classes, device))
            if styled is not None:  # the batch's images in the other camera's style, same identity
                avail = idx[styled[1][idx]]
                pick = avail[torch.randperm(len(avail), generator=aug_gen, device=device).cpu()[:round(aug.camstyle_ratio * b)]]
                extra_x.append(styled[0][pick].to(device))
                extra_t.append(smoothed_targets(images.labels[pick].to(device), num_classes, aug.camstyle_smoothing))
            x = augment(torch.cat([x, *extra_x]), aug_gen, flip=cfg.data.flip, pad=cfg.data.pad, erasing=cfg.data.erasing)
            if aug.fgsm_ratio > 0:  # adversarial copies of some of the real images
                xa, pick = fgsm_copies(model, x[:b], y, aug.fgsm_eps, aug_gen, max(1, round(aug.fgsm_ratio * b)), cuda and cfg.amp)
                x = torch.cat([x, xa])
                extra_t.append(smoothed_targets(y[pick], num_classes, cfg.loss.label_smoothing))
            if cuda and cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            adversarial = htg_start is not None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
                out = run_model(x)
            emb_real = out["embedding"][:b].float()
            tri, tri_stats = batch_hard_triplet_loss(emb_real, y, cfg.loss.margin, cfg.loss.normalize)
            if extra_t:
                targets = torch.cat([smoothed_targets(y, num_classes, cfg.loss.label_smoothing), *extra_t])
                softmax = identity_cross_entropy(out["logits"], targets)
            else:
                softmax = identity_cross_entropy(out["logits"], y, cfg.loss.label_smoothing)
            terms = {  # name -> (loss, weight): the embedding network's objective as data
                "softmax": (softmax, cfg.loss.softmax),
                "triplet": (tri, cfg.loss.triplet),
            }
            stats = {"tri_active": tri_stats["active"], "tri_gap": tri_stats["gap"], "tri_active_all": tri_stats["active_all"]}
            if adversarial:  # HTG: D step, G step, then G's hard triplets join F's objective
                emb = emb_real
                stats.update(htg.d_step(emb.detach(), y))
                stats.update(htg.g_step(emb.detach(), y, model.classifier, model.neck))
                hard, hard_stats = htg.hard_triplet_loss(emb, y)
                terms["htg_hard"] = (hard, cfg.htg.f_hard)
                stats.update(hard_stats)
            loss = sum(w * v for v, w in terms.values() if w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            stats.update({k: float(v.detach()) for k, (v, _) in terms.items()}, loss=float(loss.detach()))
            stats["train_acc"] = float((out["logits"][:b].argmax(1) == y).float().mean())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
            n_images += b
            if main_proc and n_batches % max(cfg.log_every, 1) == 0:
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.2f}")
        if n_batches == 0:
            raise SystemExit("error: the sampler produced no batch; lower data.p or data.k for this dataset")
        elapsed = time.perf_counter() - t0
        row = {k: v / n_batches for k, v in sums.items()}
        row.update(epoch=epoch + 1, lr=opt.param_groups[0]["lr"], img_per_s=n_images * world / elapsed, time_s=elapsed)
        prev_active_all = row.get("tri_active_all")
        if htg is not None:
            row["htg_on"] = int(htg_start is not None)
        last = epoch + 1 == cfg.epochs
        if main_proc and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            if val_q is not None:  # model selection reads the validation split; the test split waits for the end
                val_result = evaluate(model, val_q, val_g, device)
                row.update(val_rank1=val_result.rank(1), val_mAP=val_result.mAP)
            elif query is not None:
                result = evaluate(model, query, gallery, device)
                row.update(rank1=result.rank(1), mAP=result.mAP)
        if main_proc:
            with open(csv_path, "a", newline="") as fh:
                csv.writer(fh).writerow([f"{row[c]:.6g}" if isinstance(row.get(c), float) else row.get(c, "") for c in columns])
            msg = " ".join(f"{k}={row[k]:.4g}" for k in ("loss", "softmax", "triplet", "tri_active", "train_acc", "img_per_s") if k in row)
            evals = f" rank1={row['rank1']:.4f} mAP={row['mAP']:.4f}" if "rank1" in row else ""
            print(f"epoch {epoch + 1}/{cfg.epochs} {msg}{evals} ({elapsed:.1f}s)", flush=True)
        rng_states = [aug_gen.get_state()]
        if world > 1:
            rng_states = [torch.empty_like(rng_states[0]) for _ in range(world)]
            dist.all_gather_object(rng_states, aug_gen.get_state())
        if main_proc:
            save_checkpoint(
                {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "htg": htg.state_dict() if htg is not None else None, "htg_start": htg_start, "active_all": prev_active_all,
                    "aug_rng": rng_states, "epoch": epoch + 1,
                    "config": to_dict(cfg), "model_args": model_args,
                    "data_args": dict(dataset=cfg.data.dataset, root=os.path.abspath(cfg.data.root), args=cfg.data.args, height=cfg.data.height, width=cfg.data.width),
                    "code_version": code_version(), "versions": package_versions(),
                },
                ckpt_path,
            )
    if world > 1:
        params = [*model.parameters(), *(htg.parameters() if htg is not None else [])]
        flat = torch.cat([p.detach().float().flatten() for p in params])
        sums_all = [torch.zeros(2) for _ in range(world)]
        dist.all_gather(sums_all, torch.stack([flat.sum(), flat.abs().sum()]).cpu())
        agree = all(torch.allclose(s, sums_all[0]) for s in sums_all)
        if main_proc:
            print(f"ranks agree on the weights{' (F, G and D)' if htg is not None else ''}: {agree}")
        dist.destroy_process_group()
        if not agree:
            return 1
    if main_proc:
        plot_training(csv_path, os.path.join(out_dir, "curves.png"))
    if main_proc and val_result is not None:
        with open(os.path.join(out_dir, "val.json"), "w") as fh:
            json.dump(dict(val_result.as_dict(), val_ids=cfg.data.val_ids, val_seed=cfg.data.val_seed), fh, indent=2)
        print(f"\n{cfg.name}: validation split ({cfg.data.val_ids} held-out training identities, Market-1501 protocol, cosine distance)")
        print(val_result.format())
        if query is not None:  # the test split, once
            result = evaluate(model, query, gallery, device)
    if main_proc and result is not None:
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump(result.as_dict(), fh, indent=2)
        print(f"\n{cfg.name} on {cfg.data.dataset} (Market-1501 protocol, cosine distance)")
        print(result.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
