"""Config sections -> objects: the one place that maps a :class:`~reid_htg.config.TrainConfig` to what training uses.

The rest of the library takes plain arguments; this module is the bridge that
``tools/train_reid.py``, the benchmarks and the tests share, so that a config
key means the same thing everywhere.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from reid_htg.augmenters.batches import BatchAssembler, CamStyleRows, FGSMRows, LSRORows
from reid_htg.augmenters.mixing import LSROSource, camstyle_images
from reid_htg.config import TrainConfig
from reid_htg.data import DatasetError, build_dataset, drop_unreadable, eval_protocol, hold_out_identities, relabel, split_of
from reid_htg.data.dataset import ImageSet
from reid_htg.data.sampler import PKSampler
from reid_htg.features import EvalSplit
from reid_htg.htg import HTG
from reid_htg.models import ReIDNet
from reid_htg.optim import build_optimizer, lr_factor
from reid_htg.training import TrainStep, softmax_term, triplet_term


def model_args(cfg: TrainConfig, num_classes: int) -> dict:
    """Keyword arguments of :class:`ReIDNet` for ``cfg.model`` (stored in checkpoints to rebuild the network)."""
    m = cfg.model
    return dict(
        backbone=m.backbone, num_classes=num_classes, global_feature=m.global_feature, keypoint_blocks=tuple(m.keypoint_blocks),
        embed_dim=m.embed_dim, bnneck=m.bnneck, classifier=m.classifier, cosine_scale=m.cosine_scale,
        last_stride=m.last_stride, pretrained_path=m.pretrained or None, eval_feature=m.eval_feature,
    )


def build_model(cfg: TrainConfig, num_classes: int) -> ReIDNet:
    return ReIDNet(**model_args(cfg, num_classes))


def build_htg(cfg: TrainConfig, dim: int, num_classes: int) -> HTG | None:
    """HTG for ``cfg.htg`` (None when disabled); distances normalised as the triplet loss's (``loss.normalize``)."""
    h = cfg.htg
    if not h.enabled:
        return None
    return HTG(
        dim, num_classes, bottleneck=h.bottleneck, d_hidden=h.d_hidden, lr=h.lr, optimizer=h.optimizer, margin=h.margin,
        distance=h.distance, g_target=h.g_target, mining=h.mining, g_triplet=h.g_triplet, g_label=h.g_label, g_close=h.g_close,
        d_fake=h.d_fake, d_gen_identity=h.d_gen_identity, d_steps=h.d_steps, g_steps=h.g_steps, out_relu=h.out_relu,
        scale_free=h.scale_free, normalize=cfg.loss.normalize, g_classifier=h.g_classifier, g_center=h.g_center, g_balance=h.g_balance,
    )


def build_optimization(cfg: TrainConfig, params, steps_per_epoch: int):
    """(optimiser, per-iteration LambdaLR schedule) for ``cfg.optim`` over ``cfg.epochs``."""
    o = cfg.optim
    opt = build_optimizer(o.optimizer.name, param_groups(params, o.norm_bias_decay), **o.optimizer.args)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps_per_epoch, cfg.epochs, o.warmup_epochs, o.schedule, o.milestones, o.gamma)
    )
    return opt, sched


def param_groups(params, norm_bias_decay: bool = True) -> list[dict]:
    """The optimiser's parameter groups: one, or (``norm_bias_decay=False``) the 1-d parameters (BatchNorm weights,
    biases) in a second group with weight decay 0, the usual exclusion for decay on normalisation layers."""
    params = list(params)
    if norm_bias_decay:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_sampler(cfg: TrainConfig, labels, rank: int = 0, world_size: int = 1) -> PKSampler:
    return PKSampler(labels, cfg.data.p, cfg.data.k, seed=cfg.seed, rank=rank, world_size=world_size)


def build_batch_assembler(cfg: TrainConfig, images, num_classes: int, device, generator: torch.Generator, progress: bool = True) -> BatchAssembler:
    """The batch assembly for ``cfg.augmenters`` and ``cfg.data`` augmentation; loads the GANs it needs.

    Raises:
        GANCheckpointError: a GAN checkpoint that is missing or of the wrong kind.
    """
    a = cfg.augmenters  # values were checked when the config was loaded (config.check_train_config)
    sources = []  # one line per augmenter, in row order
    if a.lsro_ratio > 0:
        sources.append(LSRORows(LSROSource(a.lsro_checkpoint, images.size, device), a.lsro_ratio, num_classes))
    if a.camstyle_ratio > 0:
        sources.append(CamStyleRows(camstyle_images(a.camstyle_checkpoint, images, device, progress=progress), images.labels,
                                    a.camstyle_ratio, a.camstyle_smoothing, num_classes))
    if a.fgsm_ratio > 0:
        sources.append(FGSMRows(a.fgsm_eps, a.fgsm_ratio, cfg.loss.label_smoothing, num_classes, amp=device.type == "cuda" and cfg.amp))
    d = cfg.data
    return BatchAssembler(num_classes, generator, label_smoothing=cfg.loss.label_smoothing, flip=d.flip, pad=d.pad, erasing=d.erasing,
                          sources=sources, channels_last=device.type == "cuda" and cfg.channels_last)


def build_train_step(cfg: TrainConfig, model, optimizer, scheduler, htg: HTG | None, device, forward=None) -> TrainStep:
    """F's training step for ``cfg.loss`` (the terms in the order they are computed) and ``cfg.htg`` (``f_hard``)."""
    loss = cfg.loss
    terms = [triplet_term(loss.triplet, loss.margin, loss.normalize), softmax_term(loss.softmax, loss.label_smoothing)]
    return TrainStep(model, optimizer, scheduler, terms, htg=htg, f_hard=cfg.htg.f_hard, grad_clip=cfg.optim.grad_clip,
                     amp=device.type == "cuda" and cfg.amp, forward=forward, g_phase=cfg.htg.g_phase if htg else 0,
                     f_phase=cfg.htg.f_phase if htg else 0)


def image_set(part, cfg: TrainConfig, progress: bool = True, labels=None) -> ImageSet:
    """The images of a table's rows at ``cfg.data``'s size (cached when ``data.cache``); an unreadable one named with the fix."""
    try:
        return ImageSet(part["path"], part["pid"] if labels is None else labels, part["camid"], (cfg.data.height, cfg.data.width),
                        cache=cfg.data.cache, progress=progress)
    except OSError as exc:
        split = str(part["split"].iloc[0]) if len(part) and "split" in part else "train"
        fix = ("or set data.skip_unreadable=true" if split == "train"
               else f"and fix or remove it ({split} images are never skipped: data.skip_unreadable covers training images only)")
        raise DatasetError(f"{exc}; run tools/check_dataset.py to list every bad image, {fix}") from None


def eval_split(part, protocol: str, cfg: TrainConfig, progress: bool = True) -> EvalSplit:
    splits = ("query", "gallery") if protocol == "reid" else ("test",)
    return EvalSplit(protocol, {s: image_set(split_of(part, s), cfg, progress) for s in splits})


@dataclass
class TrainingData:
    """What a training run reads: the training images (labels 0..K-1) and the splits it is evaluated on.

    Attributes:
        images: the training :class:`ImageSet`, with relabelled identities.
        labels: their labels (0..K-1), as the sampler takes them.
        num_classes: K.
        num_train: training images.
        val: the validation split held out of training (``data.val_ids``), or None.
        test: the dataset's own evaluation split (main process, ``eval_test``), or None.
    """

    images: ImageSet
    labels: object
    num_classes: int
    num_train: int
    val: EvalSplit | None
    test: EvalSplit | None


def build_training_data(cfg: TrainConfig, main_process: bool = True) -> TrainingData:
    """The dataset of ``cfg.data``: training images, the validation split held out of them, and the test split.

    Raises:
        DatasetError: no training images (an evaluation-only set), an unreadable image, a layout the reader cannot take.
    """
    df = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.args)
    train = split_of(df, "train")
    if len(train) == 0:
        raise DatasetError(f"{cfg.data.dataset} at {cfg.data.root} has no training images (an evaluation-only set: "
                           "evaluate a checkpoint on it with tools/eval.py --checkpoint CKPT --dataset NAME --data-root PATH)")
    if cfg.data.skip_unreadable:
        train, dropped = drop_unreadable(train, progress=main_process)
        for path, reason in dropped:
            print(f"warning: skipping unreadable image {path} ({reason})", file=sys.stderr)
    try:
        protocol = eval_protocol(df)
    except DatasetError:
        protocol = None  # training only
    val = test = None
    if cfg.data.val_ids:
        val_protocol = protocol or ("reid" if train["camid"].nunique() > 1 else "class")
        train, held = hold_out_identities(train, cfg.data.val_ids, cfg.data.val_seed, val_protocol)
        if main_process:
            val = eval_split(held, val_protocol, cfg, main_process)
    labels, _ = relabel(train["pid"].to_numpy())
    images = image_set(train, cfg, main_process, labels=labels)
    if main_process and cfg.eval_test and protocol is not None:
        test = eval_split(df, protocol, cfg, main_process)
    return TrainingData(images, labels, int(labels.max()) + 1, len(train), val, test)
