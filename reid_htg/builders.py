"""Config sections -> objects: the one place that maps a :class:`~reid_htg.config.TrainConfig` to what training uses.

The rest of the library takes plain arguments; this module is the bridge that
``tools/train_reid.py``, the benchmarks and the tests share, so that a config
key means the same thing everywhere.
"""
from __future__ import annotations

import torch

from reid_htg.augmenters.batches import BatchAssembler
from reid_htg.augmenters.mixing import LSROSource, camstyle_images
from reid_htg.config import TrainConfig
from reid_htg.data.sampler import PKSampler
from reid_htg.htg import HTG
from reid_htg.models import ReIDNet
from reid_htg.optim import build_optimizer, lr_factor


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
        scale_free=h.scale_free, normalize=cfg.loss.normalize,
    )


def build_optimization(cfg: TrainConfig, params, steps_per_epoch: int):
    """(optimiser, per-iteration LambdaLR schedule) for ``cfg.optim`` over ``cfg.epochs``."""
    o = cfg.optim
    opt = build_optimizer(o.optimizer.name, params, **o.optimizer.args)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps_per_epoch, cfg.epochs, o.warmup_epochs, o.schedule, o.milestones, o.gamma)
    )
    return opt, sched


def build_sampler(cfg: TrainConfig, labels, rank: int = 0, world_size: int = 1) -> PKSampler:
    return PKSampler(labels, cfg.data.p, cfg.data.k, seed=cfg.seed, rank=rank, world_size=world_size)


def build_batch_assembler(cfg: TrainConfig, images, num_classes: int, device, generator: torch.Generator, progress: bool = True) -> BatchAssembler:
    """The batch assembly for ``cfg.augmenters`` and ``cfg.data`` augmentation; loads the GANs it needs.

    Raises:
        GANCheckpointError: a GAN checkpoint that is missing or of the wrong kind.
    """
    a = cfg.augmenters  # values were checked when the config was loaded (config.check_train_config)
    lsro = LSROSource(a.lsro_checkpoint, images.size, device) if a.lsro_ratio > 0 else None
    styled = camstyle_images(a.camstyle_checkpoint, images, device, progress=progress) if a.camstyle_ratio > 0 else None
    d = cfg.data
    return BatchAssembler(
        num_classes, generator, label_smoothing=cfg.loss.label_smoothing, flip=d.flip, pad=d.pad, erasing=d.erasing,
        lsro=lsro, lsro_ratio=a.lsro_ratio, styled=styled, style_labels=images.labels, camstyle_ratio=a.camstyle_ratio,
        camstyle_smoothing=a.camstyle_smoothing, fgsm_eps=a.fgsm_eps, fgsm_ratio=a.fgsm_ratio,
        amp=device.type == "cuda" and cfg.amp, channels_last=device.type == "cuda" and cfg.channels_last,
    )
