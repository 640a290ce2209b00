"""Mixing augmenter images into re-ID batches: LSRO (DCGAN samples), CamStyle (CycleGAN), FGSM copies.

Each augmenter adds rows to a batch of real images together with target
distributions over the K training identities:

- LSRO (Zheng et al., ICCV 2017): DCGAN samples, target uniform 1/K.
- CamStyle (Zhong et al., CVPR 2018): a training image rendered in the other
  camera's style keeps its identity, with label smoothing.
- FGSM: adversarial copies of training images keep their identity.

The added rows join the identity cross-entropy only; the batch-hard triplet
loss sees the real P x K rows (generated images have no identity, and the
paper versions of CamStyle and FGSM training are classification losses).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from reid_htg.augmenters.cyclegan import CycleGAN
from reid_htg.augmenters.dcgan import DCGAN, from_uint8, to_uint8
from reid_htg.checkpoint import CheckpointError, load_checkpoint
from reid_htg.utils.progress import progress as progress_bar


class GANCheckpointError(ValueError):
    """A file that is not the GAN checkpoint the caller needs."""


def gan_checkpoint_path(path: str) -> str:
    """A run folder of tools/train_gan.py or its last.pt -> the checkpoint file."""
    p = os.path.join(path, "last.pt") if os.path.isdir(path) else path
    if not os.path.isfile(p):
        raise GANCheckpointError(f"GAN checkpoint {p!r} not found; train one with tools/train_gan.py")
    return p


def load_gan(path: str, expect: str | None = None, map_location="cpu"):
    """(model, checkpoint dict) from a tools/train_gan.py checkpoint; ``expect`` is "dcgan" or "cyclegan"."""
    p = gan_checkpoint_path(path)
    try:
        state = load_checkpoint(p, map_location=map_location)
    except CheckpointError as exc:  # damaged, or not a checkpoint at all
        raise GANCheckpointError(str(exc)) from None
    if state.get("kind") != "gan":
        raise GANCheckpointError(f"{p} is not a GAN checkpoint of tools/train_gan.py (a re-ID checkpoint?)")
    if expect is not None and state["model"] != expect:
        raise GANCheckpointError(f"{p} holds a {state['model']}, but a {expect} is needed here")
    cls = DCGAN if state["model"] == "dcgan" else CycleGAN
    model = cls(**state["model_args"])
    model.load_state_dict(state["model_state"])
    return model.eval(), state


def uniform_targets(n: int, num_classes: int, device=None) -> torch.Tensor:
    """LSRO targets: (n, K) rows of 1/K."""
    return torch.full((n, num_classes), 1.0 / num_classes, device=device)


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(n, K) label-smoothed one-hot rows, the same distribution as F.cross_entropy(label_smoothing=...)."""
    t = F.one_hot(labels, num_classes).float() * (1 - smoothing)
    return t + smoothing / num_classes


def _resize_u8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)


class LSROSource:
    """DCGAN samples as uint8 training images at the re-ID input size."""

    def __init__(self, checkpoint: str, size: tuple[int, int], device):
        self.gan, _ = load_gan(checkpoint, expect="dcgan", map_location=device)
        self.gan.to(device)
        self.size, self.device = tuple(size), device

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return _resize_u8(to_uint8(self.gan.sample(n, generator)), self.size)


@torch.no_grad()
def camstyle_images(checkpoint: str, images, device, batch_size: int = 64, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training image rendered in the other camera's style, computed once (as CamStyle does, offline).

    Args:
        checkpoint: a CycleGAN run of tools/train_gan.py.
        images: the training ImageSet (uint8 images, camids).

    Returns:
        (N, 3, H, W) uint8 translations and an (N,) bool mask of the images that have one (those of
        the CycleGAN's two cameras).
    """
    gan, state = load_gan(checkpoint, expect="cyclegan", map_location=device)
    gan.to(device)
    cam_a, cam_b = state["cameras"]
    gan_size = tuple(state["size"])
    n = len(images)
    out = torch.zeros((n, 3, *images.size), dtype=torch.uint8)
    has = (images.camids == cam_a) | (images.camids == cam_b)
    if not bool(has.any()):
        raise GANCheckpointError(f"the CycleGAN in {checkpoint} translates cameras {cam_a} and {cam_b}, and no training image is from either")
    for s in progress_bar(range(0, n, batch_size), desc="CamStyle translations", enabled=progress):
        idx = list(range(s, min(s + batch_size, n)))
        x, _, cams = images.batch(idx)
        x = from_uint8(_resize_u8(x.to(device), gan_size))
        from_a = (cams == cam_a).to(device)
        styled = torch.empty_like(x)
        if from_a.any():
            styled[from_a] = gan.translate(x[from_a], "B")
        if (~from_a).any():
            styled[~from_a] = gan.translate(x[~from_a], "A")
        out[idx] = _resize_u8(to_uint8(styled), images.size).cpu()
    return out, has
