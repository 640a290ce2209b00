"""Batch assembly: a P x K batch of real images, augmented, plus the augmenters' extra rows and their identity targets.

An augmenter is a **row source** (:class:`RowSource`): given the batch, it
returns extra rows and their target distributions over the K identities. A
source with ``after_augment = False`` adds images that are augmented with the
real ones (flip, pad-and-crop, random erasing: LSRO's DCGAN samples,
CamStyle's translated images); one with ``after_augment = True`` sees the
augmented, normalised real rows (FGSM attacks those). The rows are ordered:
the B real images first (the batch-hard triplet loss sees only these), then
each source's rows in the order the sources are given. A new augmenter is one
class with that protocol and one line in :func:`reid_htg.builders.build_batch_assembler`.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from reid_htg.augmenters.fgsm import fgsm, normalized_bounds, pixel_step
from reid_htg.augmenters.mixing import LSROSource, smoothed_targets, uniform_targets
from reid_htg.data.transforms import augment
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


class RowSource(Protocol):
    """What :class:`BatchAssembler` asks of an augmenter."""

    after_augment: bool  # False: rows joined before batch augmentation; True: rows made from the augmented real rows

    def rows(self, model, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(extra rows (n, 3, H, W), their (n, K) targets) for a batch of real rows ``x`` with labels ``y`` and dataset indices ``idx``."""


class LSRORows:
    """LSRO (Zheng et al., ICCV 2017): round(ratio B) DCGAN samples (at least one), target uniform over the K identities."""

    after_augment = False

    def __init__(self, source: LSROSource, ratio: float, num_classes: int):
        self.source, self.ratio, self.num_classes = source, ratio, num_classes

    def rows(self, model, x, y, idx, gen):
        n = max(1, round(self.ratio * len(y)))
        return self.source.sample(n, gen), uniform_targets(n, self.num_classes, x.device)


class CamStyleRows:
    """CamStyle (Zhong et al., CVPR 2018): round(ratio B) of the batch's images in the other camera's style, own identity smoothed.

    Args:
        styled: ((N, 3, H, W) translated training images, (N,) mask of those that exist), from :func:`camstyle_images`.
        labels: (N,) training labels.
    """

    after_augment = False

    def __init__(self, styled: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, ratio: float, smoothing: float, num_classes: int):
        self.styled, self.labels, self.ratio, self.smoothing, self.num_classes = styled, labels, ratio, smoothing, num_classes

    def rows(self, model, x, y, idx, gen):
        avail = idx[self.styled[1][idx]]
        pick = avail[torch.randperm(len(avail), generator=gen, device=x.device).cpu()[: round(self.ratio * len(y))]]
        return self.styled[0][pick].to(x.device), smoothed_targets(self.labels[pick].to(x.device), self.num_classes, self.smoothing)


class FGSMRows:
    """FGSM copies of max(1, round(ratio B)) augmented real rows, attacked on the identity loss with the current weights."""

    after_augment = True

    def __init__(self, eps: float, ratio: float, label_smoothing: float, num_classes: int, amp: bool = False):
        self.eps, self.ratio, self.label_smoothing, self.num_classes, self.amp = eps, ratio, label_smoothing, num_classes, amp

    def rows(self, model, x, y, idx, gen):
        xa, pick = fgsm_copies(model, x, y, self.eps, gen, max(1, round(self.ratio * len(y))), self.amp)
        return xa, smoothed_targets(y[pick], self.num_classes, self.label_smoothing)


class BatchAssembler:
    """Turns a sampled batch (uint8 images, labels, dataset indices) into the training batch and its identity targets.

    Args:
        num_classes: training identities K.
        generator: the random generator of augmentation and picking (seeded, checkpointed by the caller).
        label_smoothing: of the real rows' targets.
        flip, pad, erasing: batch augmentation (:func:`reid_htg.data.transforms.augment`).
        sources: the augmenters' :class:`RowSource` objects, in row order.
        channels_last: return the batch in channels_last memory format.
    """

    def __init__(self, num_classes: int, generator: torch.Generator, label_smoothing: float = 0.1, flip: bool = True, pad: int = 4,
                 erasing: float = 0.5, sources: Sequence[RowSource] = (), channels_last: bool = False):
        self.num_classes, self.generator, self.label_smoothing = num_classes, generator, label_smoothing
        self.flip, self.pad, self.erasing = flip, pad, erasing
        self.sources, self.channels_last = list(sources), channels_last

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training batch (B + extra, 3, H, W), targets): (B,) labels without extra rows, else (B + extra, K) distributions."""
        b, gen = len(y), self.generator
        extra_x, extra_t = [], []
        for src in self.sources:
            if not src.after_augment:
                rx, rt = src.rows(model, x, y, idx, gen)
                extra_x.append(rx)
                extra_t.append(rt)
        x = augment(torch.cat([x, *extra_x]), gen, flip=self.flip, pad=self.pad, erasing=self.erasing)
        for src in self.sources:
            if src.after_augment:
                rx, rt = src.rows(model, x[:b], y, idx, gen)
                x = torch.cat([x, rx])
                extra_t.append(rt)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not extra_t:
            return x, y
        return x, torch.cat([smoothed_targets(y, self.num_classes, self.label_smoothing), *extra_t])
