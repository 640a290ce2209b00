"""timm ResNet backbones for re-ID, through timm's stable ``features_only`` contract."""
from __future__ import annotations

import os

import timm
from torch import nn

BACKBONE_FAMILIES = ("resnet", "seresnet", "resnext", "wide_resnet", "ecaresnet", "skresnet")  # timm ResNet families (name prefixes)


def check_backbone_name(name: str) -> None:
    """Refuse a name outside the supported timm ResNet families, saying which are supported (what the keypoint
    blocks and ``last_stride`` rely on: the ``layer3``/``layer4`` stages of a ResNet).

    Raises:
        ValueError: naming the families.
    """
    if not name.startswith(BACKBONE_FAMILIES):
        raise ValueError(f"backbone {name!r} is not a supported timm ResNet: the supported families are {', '.join(BACKBONE_FAMILIES)} "
                         "(e.g. resnet18, resnet50, resnet50.a1_in1k, seresnet50, resnext50_32x4d)")


def _set_last_stride_one(model: nn.Module) -> None:
    """Re-ID convention: block 4 keeps block 3's resolution (stride 1 instead of 2).

    timm's ``feature_info`` is updated to match, so that ``reduction()`` stays
    true for every caller that trusts it.
    """
    layer4 = getattr(model, "layer4", None)
    if layer4 is None:
        raise ValueError("last_stride=1 needs a ResNet-style backbone with a 'layer4'")
    first = layer4[0]
    for conv_name in ("conv1", "conv2"):
        conv = getattr(first, conv_name, None)
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)
    down = getattr(first, "downsample", None)
    if down is not None:
        for m in down.modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
            if isinstance(m, nn.AvgPool2d) and m.stride == 2:  # resnet*d variants pool in the shortcut
                m.kernel_size, m.stride = 1, 1
    for info in model.feature_info.info:
        if info["module"].startswith("layer4"):
            info["reduction"] //= 2


def build_backbone(
    name: str,
    out_indices: tuple[int, ...] = (3, 4),
    last_stride: int = 1,
    pretrained_path: str | None = None,
) -> nn.Module:
    """A timm ResNet returning the feature maps of the given blocks.

    Args:
        name: any timm ResNet name (``resnet18``, ``resnet50``, ``resnet50d``, ...),
            with or without a pretrained tag (``resnet50.a1_in1k``).
        out_indices: blocks to return (3 and 4 for the keypoint branches).
        last_stride: 1 (re-ID convention) or 2 (ImageNet).
        pretrained_path: a local weights file (``.pth``, ``.bin`` or
            ``.safetensors``) for the classification model of the same name;
            nothing is ever downloaded.

    Returns:
        A module whose forward returns a list of (B, C_i, H_i, W_i) tensors and
        whose ``feature_info.channels()`` and ``.reduction()`` list C_i and the
        input-to-map stride of each (true after ``last_stride=1``).
    """
    check_backbone_name(name)
    if not timm.is_model(name):  # accepts tagged names (resnet50.a1_in1k)
        raise ValueError(f"timm has no model {name!r}; see timm.list_models('resnet*')")
    kwargs = dict(features_only=True, out_indices=tuple(out_indices))
    if pretrained_path:
        if not os.path.isfile(pretrained_path):
            raise FileNotFoundError(f"pretrained weights {pretrained_path!r} not found; pass a local file or leave it empty")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=os.path.abspath(pretrained_path)))
    model = timm.create_model(name, **kwargs)
    if last_stride == 1:
        _set_last_stride_one(model)
    elif last_stride != 2:
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    return model
