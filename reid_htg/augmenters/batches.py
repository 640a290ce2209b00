"""Batch assembly: a P x K batch of real images, augmented, plus the augmenters' extra rows and their identity targets.

The order of the rows is fixed: the B real images first (the batch-hard
triplet loss sees only these), then DCGAN samples (LSRO), then images in the
other camera's style (CamStyle), then FGSM copies of some of the real rows.
Flip, pad-and-crop and random erasing apply to the real, LSRO and CamStyle
rows; the FGSM copies are attacked after augmentation. A new augmenter adds
its rows and targets here.
"""
from __future__ import annotations

import torch

from reid_htg.augmenters.fgsm import fgsm, normalized_bounds, pixel_step
from reid_htg.augmenters.mixing import LSROSource, smoothed_targets, uniform_targets
from reid_htg.data.augment import augment
from reid_htg.losses import identity_cross_entropy


def fgsm_copies(model, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator, n: int, amp: bool = False):
    """FGSM copies of ``n`` random rows of the (augmented, normalised) batch ``x``, attacked on the identity loss.

    The attack's forward pass runs on the whole batch, with the picked rows
    replaced by the attacked ones, so BatchNorm normalises with the same batch
    statistics as training does (and a single picked row still has a batch);
    it runs on copies of the BatchNorm buffers, so it leaves the running
    statistics as they were.

    Returns:
        ((n, 3, H, W) attacked images, (n,) indices of the rows they copy).
    """
    pick = torch.randperm(len(y), generator=gen, device=x.device)[:n]
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def loss_fn(xx):
        full = x.detach().index_put((pick,), xx)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = torch.func.functional_call(model, (params, buffers), (full,))["logits"]
        return identity_cross_entropy(logits[pick], y[pick], 0.0)

    return fgsm(x[pick], loss_fn, pixel_step(eps, x.device), normalized_bounds(x.device)), pick


class BatchAssembler:
    """Turns a sampled batch (uint8 images, labels, dataset indices) into the training batch and its identity targets.

    Args:
        num_classes: training identities K.
        generator: the random generator of augmentation and picking (seeded, checkpointed by the caller).
        label_smoothing: of the real rows' targets.
        flip, pad, erasing: batch augmentation (:func:`reid_htg.data.augment.augment`).
        lsro, lsro_ratio: DCGAN sample source and round(ratio B) samples per batch, uniform targets.
        styled, style_labels, camstyle_ratio, camstyle_smoothing: (N, 3, H, W) CamStyle images with an (N,) mask of
            those that exist, the training labels, round(ratio B) of the batch's images added in style, smoothed targets.
        fgsm_eps, fgsm_ratio: FGSM copies of max(1, round(ratio B)) real rows.
        amp: bf16 autocast for the FGSM attack (CUDA).
        channels_last: return the batch in channels_last memory format.
    """

    def __init__(
        self,
        num_classes: int,
        generator: torch.Generator,
        label_smoothing: float = 0.1,
        flip: bool = True,
        pad: int = 4,
        erasing: float = 0.5,
        lsro: LSROSource | None = None,
        lsro_ratio: float = 0.0,
        styled: tuple[torch.Tensor, torch.Tensor] | None = None,
        style_labels: torch.Tensor | None = None,
        camstyle_ratio: float = 0.0,
        camstyle_smoothing: float = 0.1,
        fgsm_eps: float = 0.0,
        fgsm_ratio: float = 0.0,
        amp: bool = False,
        channels_last: bool = False,
    ):
        self.num_classes, self.generator, self.label_smoothing = num_classes, generator, label_smoothing
        self.flip, self.pad, self.erasing = flip, pad, erasing
        self.lsro, self.lsro_ratio = lsro, lsro_ratio
        self.styled, self.style_labels, self.camstyle_ratio, self.camstyle_smoothing = styled, style_labels, camstyle_ratio, camstyle_smoothing
        self.fgsm_eps, self.fgsm_ratio = fgsm_eps, fgsm_ratio
        self.amp, self.channels_last = amp, channels_last

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training batch (B + extra, 3, H, W), targets): (B,) labels without extra rows, else (B + extra, K) distributions."""
        b, device, gen = len(y), x.device, self.generator
        extra_x, extra_t = [], []
        if self.lsro is not None:
            n = max(1, round(self.lsro_ratio * b))
            extra_x.append(self.lsro.sample(n, gen))
            extra_t.append(uniform_targets(n, self.num_classes, device))
        if self.styled is not None:
            avail = idx[self.styled[1][idx]]
            pick = avail[torch.randperm(len(avail), generator=gen, device=device).cpu()[: round(self.camstyle_ratio * b)]]
            extra_x.append(self.styled[0][pick].to(device))
            extra_t.append(smoothed_targets(self.style_labels[pick].to(device), self.num_classes, self.camstyle_smoothing))
        x = augment(torch.cat([x, *extra_x]), gen, flip=self.flip, pad=self.pad, erasing=self.erasing)
        if self.fgsm_ratio > 0:
            xa, pick = fgsm_copies(model, x[:b], y, self.fgsm_eps, gen, max(1, round(self.fgsm_ratio * b)), self.amp)
            x = torch.cat([x, xa])
            extra_t.append(smoothed_targets(y[pick], self.num_classes, self.label_smoothing))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not extra_t:
            return x, y
        return x, torch.cat([smoothed_targets(y, self.num_classes, self.label_smoothing), *extra_t])
