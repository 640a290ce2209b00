"""Train a GAN augmenter on a dataset's training images: DCGAN (for LSRO) or CycleGAN between two cameras (for CamStyle).

    python tools/train_gan.py --model dcgan --dataset cuhk03 --data-root ../shared/data/cuhk03 --output-dir runs/gan_dcgan
    python tools/train_gan.py --model cyclegan --dataset cuhk03 --data-root ../shared/data/cuhk03 --output-dir runs/gan_cyclegan
    python tools/train_gan.py --config configs/gan_dcgan_cpu.yaml --data-root ../shared/data/cuhk03 epochs=5 height=128 width=64
    python tools/train_gan.py --output-dir runs/gan_dcgan --resume        # continue an interrupted run

The output folder holds config.yaml, last.pt (written atomically every
``sample_every`` iterations and after each epoch, so an interrupted run loses
at most that much), samples/ (a PNG grid every ``sample_every`` iterations and
after every epoch: DCGAN samples from fixed noise; CycleGAN rows real A,
A->B, A->B->A, real B, B->A, B->A->B), losses.csv and losses.png.
Use the run in re-ID training with ``augmenters.lsro_checkpoint=DIR`` or
``augmenters.camstyle_checkpoint=DIR`` (tools/train_reid.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from torchvision.utils import save_image

from reid_htg.augmenters import DCGAN, CycleGAN, from_uint8
from reid_htg.checkpoint import CheckpointError, code_version, load_checkpoint, package_versions, save_checkpoint
from reid_htg.cli import run_tool
from reid_htg.config import ConfigError, GANConfig, load_config, save_config, to_dict
from reid_htg.data import DatasetError, build_dataset, split_of
from reid_htg.data.dataset import ImageSet
from reid_htg.device import default_device
from reid_htg.runs import MetricsLog, RunFolder, check_same_config
from reid_htg.utils.plots import plot_gan_losses
from reid_htg.utils.progress import progress as progress_bar

RUN_FILES = ("last.pt", "losses.csv", "losses.png")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a YAML file (default: the GANConfig defaults in reid_htg/config.py)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 batch_size=32")
    ap.add_argument("--model", choices=["dcgan", "cyclegan"], help="overrides model=")
    ap.add_argument("--dataset", help="overrides dataset=")
    ap.add_argument("--data-root", help="overrides root=")
    ap.add_argument("--output-dir", help="default: runs/gan_<model>_<dataset>")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    ap.add_argument("--overwrite", action="store_true", help="start afresh in an output folder that already holds a run")
    ap.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    return ap.parse_intermixed_args(argv)


def build_model(cfg: GANConfig):
    if cfg.model == "dcgan":
        args = dict(height=cfg.height, width=cfg.width, nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf, lr=cfg.lr, beta1=cfg.beta1)
        return DCGAN(**args), args
    if cfg.model == "cyclegan":
        args = dict(ngf=cfg.ngf, n_res=cfg.n_res, ndf=cfg.ndf, d_layers=cfg.d_layers, lambda_cycle=cfg.lambda_cycle,
                    lambda_identity=cfg.lambda_identity, lr=cfg.lr, beta1=cfg.beta1, pool_size=cfg.pool_size, seed=cfg.seed)
        return CycleGAN(**args), args
    raise SystemExit(f"error: model must be dcgan or cyclegan, got {cfg.model!r}")


def pick_cameras(cfg: GANConfig, camids: np.ndarray) -> tuple[int, int]:
    present = sorted(int(c) for c in np.unique(camids))
    if cfg.camera_a is not None and cfg.camera_b is not None:
        cams = (cfg.camera_a, cfg.camera_b)
    elif len(present) == 2:
        cams = (present[0], present[1])
    else:
        raise SystemExit(f"error: the training images come from cameras {present}; a CycleGAN translates between two: set camera_a= and camera_b=")
    missing = [c for c in cams if c not in present]
    if missing or cams[0] == cams[1]:
        raise SystemExit(f"error: cameras {cams} must be two different cameras among the training images' {present}")
    return cams


def to_gan_input(x_u8: torch.Tensor, flip: bool, gen: torch.Generator) -> torch.Tensor:
    x = from_uint8(x_u8)
    if flip:
        mask = (torch.rand(len(x), generator=gen, device=x.device) < 0.5).view(-1, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    return x


@torch.no_grad()
def sample_grid(model, cfg, fixed, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if cfg.model == "dcgan":
        was = model.G.training
        model.G.eval()
        imgs = model.G(fixed)
        model.G.train(was)
        save_image(imgs, path, nrow=16, normalize=True, value_range=(-1, 1))
        return
    a, b = fixed
    ab, ba = model.translate(a, "B"), model.translate(b, "A")
    rows = [a, ab, model.translate(ab, "A"), b, ba, model.translate(ba, "B")]
    save_image(torch.cat(rows), path, nrow=len(a), normalize=True, value_range=(-1, 1), padding=1)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
        if not any(o.startswith("name=") for o in overrides):
            overrides.append(f"name={args.model}")
    for flag, key in ((args.dataset, "dataset"), (args.data_root, "root")):
        if flag:
            overrides.append(f"{key}={flag}")
    try:
        cfg = load_config(GANConfig, args.config, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    device = default_device(args.device)
    out_dir = args.output_dir or os.path.join("runs", f"gan_{cfg.model}_{cfg.dataset}")
    with RunFolder(out_dir, RUN_FILES, resume=args.resume, overwrite=args.overwrite) as run:  # refused here, before any work
        return train(args, cfg, device, out_dir, run)


def train(args, cfg: GANConfig, device, out_dir: str, run: RunFolder) -> int:
    torch.manual_seed(cfg.seed)
    try:
        df = build_dataset(cfg.dataset, cfg.root, **cfg.args)
        train = split_of(df, "train")
        if len(train) == 0:
            raise DatasetError(f"{cfg.dataset} at {cfg.root} has no training images")
        images = ImageSet(train["path"], train["pid"], train["camid"], (cfg.height, cfg.width))
    except (DatasetError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        model, model_args = build_model(cfg)
    except ValueError as exc:  # e.g. an image size the DCGAN cannot make
        raise SystemExit(f"error: {exc}") from None
    model.to(device)
    if cfg.model == "cyclegan":  # a size the networks cannot take fails here, before any file is written
        try:
            with torch.no_grad():
                probe = torch.zeros(1, 3, cfg.height, cfg.width, device=device)
                model.D_A(model.translate(probe, "B"))
        except (ValueError, RuntimeError) as exc:
            raise SystemExit(f"error: CycleGAN cannot work at height={cfg.height} width={cfg.width} "
                             f"with d_layers={cfg.d_layers} ({str(exc).splitlines()[0]}); use a size divisible by 4 and large enough "
                             "for the discriminator (64 x 32 with the default d_layers=3), or fewer d_layers") from None
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    if cfg.model == "dcgan":
        pools = [np.arange(len(images))]
        cameras = None
        fixed = model.noise(64, torch.Generator(device=device).manual_seed(cfg.seed + 1), device)
    else:
        cameras = pick_cameras(cfg, images.camids.numpy())
        pools = [np.flatnonzero(images.camids.numpy() == c) for c in cameras]
        fixed = tuple(from_uint8(images.batch(p[rng.choice(len(p), min(8, len(p)), replace=False)])[0]).to(device) for p in pools)
    if min(len(p) for p in pools) < cfg.batch_size:
        raise SystemExit(f"error: batch_size={cfg.batch_size} is larger than the smallest image set ({min(len(p) for p in pools)} images)")
    iters = cfg.iters_per_epoch or max(len(p) for p in pools) // cfg.batch_size

    run.start()  # locked for this process from here on; --overwrite removes the old run only now
    ckpt_path = run.checkpoint
    start_epoch, start_batch, seconds = 0, 0, 0.0
    if args.resume:
        try:
            state = load_checkpoint(ckpt_path, map_location=device)
        except CheckpointError as exc:
            raise SystemExit(f"error: {exc}") from None
        check_same_config(state["config"], to_dict(cfg), ckpt_path)
        model.load_state_dict(state["model_state"])
        model.opt_g.load_state_dict(state["opt_g"])
        model.opt_d.load_state_dict(state["opt_d"])
        gen.set_state(state["rng"])
        start_epoch, start_batch, seconds = state["epoch"], state["batch"], state["train_seconds"]
        print(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, iteration {start_batch} of {iters}")
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    save_config(cfg, os.path.join(out_dir, "config.yaml"))
    print(f"{cfg.model} on {cfg.dataset}: {len(images)} training images at {cfg.height}x{cfg.width}"
          + (f", cameras {cameras[0]} (A: {len(pools[0])}) and {cameras[1]} (B: {len(pools[1])})" if cameras else "")
          + f", {iters} iterations/epoch x {cfg.epochs} epochs on {device}; output {out_dir}", flush=True)
    keys = list(model.LOG_KEYS)
    done = start_epoch * iters + start_batch
    log = MetricsLog(os.path.join(out_dir, "losses.csv"), ["iteration", "epoch", "seconds", *keys], done if args.resume else None)

    def checkpoint(epoch: int, batch: int) -> None:
        save_checkpoint({
            "kind": "gan", "model": cfg.model, "model_args": model_args, "model_state": model.state_dict(),
            "opt_g": model.opt_g.state_dict(), "opt_d": model.opt_d.state_dict(), "rng": gen.get_state(),
            "epoch": epoch, "batch": batch, "train_seconds": seconds, "config": to_dict(cfg),
            "cameras": cameras, "size": (cfg.height, cfg.width), "dataset": cfg.dataset,
            "code_version": code_version(), "versions": package_versions(),
        }, ckpt_path)

    for epoch in range(start_epoch, cfg.epochs):
        erng = np.random.default_rng([cfg.seed, epoch])  # the epoch's batches do not depend on where a run resumed
        orders = [np.concatenate([erng.permutation(p) for _ in range(-(-iters * cfg.batch_size // len(p)))]) for p in pools]
        first = start_batch if epoch == start_epoch else 0
        sums: dict[str, float] = {}
        bar = progress_bar(range(first, iters), desc=f"epoch {epoch + 1}/{cfg.epochs}")
        t0 = time.perf_counter()
        for i in bar:
            batches = [to_gan_input(images.batch(o[i * cfg.batch_size:(i + 1) * cfg.batch_size])[0].to(device), cfg.flip, gen) for o in orders]
            losses = model.step(*batches) if cfg.model == "cyclegan" else model.step(batches[0], gen)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            it = epoch * iters + i + 1
            if it % cfg.log_every == 0:
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                log.append({"iteration": it, "epoch": epoch + 1, "seconds": f"{seconds:.1f}", **{k: f"{losses[k]:.5g}" for k in keys}})
                bar.set_postfix({k: f"{losses[k]:.3f}" for k in keys[:3]})
            if it == 1 and it % cfg.sample_every:  # a first grid at once: a CycleGAN's 100th iteration is ten CPU minutes away
                sample_grid(model, cfg, fixed, os.path.join(out_dir, "samples", f"iter_{it:06d}.png"))
            if it % cfg.sample_every == 0:
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                sample_grid(model, cfg, fixed, os.path.join(out_dir, "samples", f"iter_{it:06d}.png"))
                checkpoint(epoch, i + 1)
        seconds += time.perf_counter() - t0
        n = iters - first
        print(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={sums[k] / max(n, 1):.4g}" for k in keys if k in sums)
              + f" ({seconds:.0f}s trained)", flush=True)
        sample_grid(model, cfg, fixed, os.path.join(out_dir, "samples", f"epoch_{epoch + 1:03d}.png"))
        checkpoint(epoch + 1, 0)
    plot_gan_losses(log.path, os.path.join(out_dir, "losses.png"))
    print(f"done: {ckpt_path}, samples in {os.path.join(out_dir, 'samples')}")
    return 0


def entry() -> None:
    """The console script ``reid-train-gan`` (and ``tools/train_gan.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
