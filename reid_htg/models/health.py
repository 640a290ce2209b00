"""Is the network still all there? Dead convolution filters (weights decayed to nothing) and silent channels.

Adam with L2 weight decay in a ReLU + BatchNorm network kills filters: once a filter's BN-ReLU output is zero
for every input it gets no data gradient, only the decay's, and Adam's normalised step drives its weights to
zero, through subnormal floats that x86 CPUs compute very slowly (Mehta et al., "On Implicit Filter Level
Sparsity in Convolutional Neural Networks", CVPR 2019). Two measures, by stage of the network:

- **dead filters** (from the weights alone, any checkpoint): the share of convolution output channels whose
  weights are all below ``DEAD_THRESHOLD`` in magnitude. A filter that small contributes nothing a float32
  BatchNorm can recover, and it never comes back.
- **silent channels** (needs images): the share of the channels after each ReLU that follows a convolution
  and its BatchNorm (a residual block's first ReLU, the stem's) that are zero for every position of every
  image given, the network in eval mode. A decoupled decay (AdamW) leaves a dead filter's weights in place,
  so only this measure sees it die.

Stages: ``stem`` (the first convolution), ``layer1`` ... ``layer4`` (the ResNet stages), ``head`` (every other
convolution: keypoint blocks).

Reference:
    Mehta, Kim, Ramakrishnan, "On Implicit Filter Level Sparsity in Convolutional Neural Networks", CVPR 2019.
"""
from __future__ import annotations

import torch
from torch import nn

DEAD_THRESHOLD = 1e-20  # max |w| of a dead filter; trained weights are >= 1e-6, decayed ones go through 1e-38 to 0
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")


def stage_of(name: str) -> str:
    """The stage of a module by its name in a :class:`reid_htg.models.ReIDNet` (``backbone.layer3.1.conv1`` -> ``layer3``)."""
    parts = name.split(".")
    if parts[0] == "backbone":
        return parts[1] if len(parts) > 1 and parts[1] in STAGES else "stem"
    return "head"


def _shares(counts: dict[str, list[int]]) -> dict[str, float]:
    out = {s: d / n for s, (d, n) in counts.items() if n}
    total = [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())]
    out["all"] = total[0] / total[1] if total[1] else 0.0
    return out


def dead_filters(model: nn.Module, threshold: float = DEAD_THRESHOLD) -> dict[str, float]:
    """Share of dead convolution filters (output channels with max |w| < ``threshold``) per stage and overall (``all``).

    Examples:
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> with torch.no_grad():
        ...     conv.weight[1:3] = 0.0
        >>> dead_filters(nn.Sequential(conv))
        {'head': 0.5, 'all': 0.5}
    """
    counts: dict[str, list[int]] = {}
    for name, conv in per_filter(model):
        dead = int((conv.weight.detach().abs().flatten(1).amax(1) < threshold).sum())
        c = counts.setdefault(stage_of(name), [0, 0])
        c[0] += dead
        c[1] += conv.out_channels
    return _shares(counts)


def per_filter(model: nn.Module):
    """(name, convolution) of every Conv2d in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def dead_filters_by_layer(model: nn.Module, threshold: float = DEAD_THRESHOLD) -> list[tuple[str, int, int]]:
    """(name, dead filters, filters) of every convolution, in module order."""
    return [(n, int((m.weight.detach().abs().flatten(1).amax(1) < threshold).sum()), m.out_channels) for n, m in per_filter(model)]


def _post_bn_relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ReLUs that directly follow a BatchNorm of a convolution: a timm ResNet block's ``act1``, the stem's ``act1``."""
    out = []
    for name, mod in model.named_modules():
        for child_name, child in mod.named_children():
            if child_name == "act1" and isinstance(child, nn.ReLU):
                out.append((f"{name}.{child_name}" if name else child_name, child))
    return out


@torch.no_grad()
def silent_channels(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Share of channels after each conv-BN-ReLU that are zero everywhere on the images ``x``, per stage and overall.

    Args:
        model: a network with timm ResNet blocks (their ``act1`` ReLUs are hooked); run in eval mode here.
        x: (N, 3, H, W) normalised images (a few dozen training images are enough: a live channel fires on most).

    Returns:
        {stage: share, ..., "all": share}; {"all": 0.0} when the model has no such ReLU.
    """
    relus = _post_bn_relus(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=n: seen.__setitem__(name, out.detach().amax(dim=(0, 2, 3)) > 0)) for n, m in relus]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    counts: dict[str, list[int]] = {}
    for name, alive in seen.items():
        c = counts.setdefault(stage_of(name), [0, 0])
        c[0] += int((~alive).sum())
        c[1] += alive.numel()
    return _shares(counts)


def health_columns(model: nn.Module) -> list[str]:
    """metrics.csv columns for ``model``: ``dead_filters``, ``dead_<stage>``..., ``silent_channels``, ``silent_<stage>``...."""
    conv = {stage_of(n) for n, _ in per_filter(model)}
    relu = {stage_of(n) for n, _ in _post_bn_relus(model)}
    return (["dead_filters", *[f"dead_{s}" for s in STAGES if s in conv]]
            + ["silent_channels", *[f"silent_{s}" for s in STAGES if s in relu]])


def health_row(model: nn.Module, probe: torch.Tensor | None = None) -> dict[str, float]:
    """One metrics row of :func:`dead_filters` (and, with ``probe`` images, :func:`silent_channels`), keyed as :func:`health_columns`."""
    d = dead_filters(model)
    row = {"dead_filters": d.pop("all"), **{f"dead_{s}": v for s, v in d.items()}}
    if probe is not None:
        s = silent_channels(model, probe)
        row.update({"silent_channels": s.pop("all"), **{f"silent_{k}": v for k, v in s.items()}})
    return row
