"""The re-ID embedding network: backbone, global feature, keypoint blocks, BNNeck, biasless classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_htg.models.backbone import build_backbone
from reid_htg.models.heads import BiaslessClassifier, BNNeck
from reid_htg.models.keypoint import KeypointBlock


class ReIDNet(nn.Module):
    """Embedding network F of HTG, every part switchable for ablations.

    The embedding concatenates the global average-pooled feature of block 4
    (``global_feature``) with the density-pooled local features of the keypoint
    blocks on blocks 3 and/or 4 (``keypoint_blocks``), optionally projected to
    ``embed_dim``. A BNNeck (optional) feeds the biasless classifier.

    ``forward`` returns a dict:

    - ``embedding`` (B, D): the feature before the BNNeck, for the triplet loss;
    - ``bn_feature`` (B, D): after the BNNeck (the embedding itself without one);
    - ``logits`` (B, K): identity logits (training only, when ``num_classes`` > 0).

    ``extract`` returns the retrieval feature (``eval_feature``: ``bn`` or ``pre``).

    Args:
        backbone: timm ResNet name.
        num_classes: training identities K (0: no classifier).
        global_feature: use the pooled block-4 feature.
        keypoint_blocks: blocks with a keypoint branch, a subset of (3, 4).
        embed_dim: project the concatenation to this size (0: no projection).
        bnneck: BatchNorm before the classifier.
        classifier: ``biasless`` or ``cosine``.
        cosine_scale: logit scale of the cosine classifier.
        last_stride: 1 or 2.
        pretrained_path: local backbone weights, or None.
        eval_feature: ``bn`` (after the BNNeck) or ``pre``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 0,
        global_feature: bool = True,
        keypoint_blocks: tuple[int, ...] = (),
        embed_dim: int = 0,
        bnneck: bool = True,
        classifier: str = "biasless",
        cosine_scale: float = 16.0,
        last_stride: int = 1,
        pretrained_path: str | None = None,
        eval_feature: str = "bn",
    ):
        super().__init__()
        keypoint_blocks = tuple(sorted(keypoint_blocks))
        if not global_feature and not keypoint_blocks:
            raise ValueError("the embedding needs the global feature or at least one keypoint block")
        if set(keypoint_blocks) - {3, 4}:
            raise ValueError(f"keypoint_blocks must be a subset of (3, 4), got {keypoint_blocks}")
        if classifier not in ("biasless", "cosine"):
            raise ValueError(f"classifier must be 'biasless' or 'cosine', got {classifier!r}")
        if eval_feature not in ("bn", "pre"):
            raise ValueError(f"eval_feature must be 'bn' or 'pre', got {eval_feature!r}")
        self.backbone = build_backbone(backbone, out_indices=(3, 4), last_stride=last_stride, pretrained_path=pretrained_path)
        c3, c4 = self.backbone.feature_info.channels()
        channels = {3: c3, 4: c4}
        self.global_feature = global_feature
        self.keypoint_blocks = keypoint_blocks
        self.keypoints = nn.ModuleDict({str(b): KeypointBlock(channels[b]) for b in keypoint_blocks})
        dim = (c4 if global_feature else 0) + sum(channels[b] for b in keypoint_blocks)
        self.project = nn.Linear(dim, embed_dim, bias=False) if embed_dim else nn.Identity()
        self.dim = embed_dim or dim
        self.neck = BNNeck(self.dim) if bnneck else nn.Identity()
        self.num_classes = num_classes
        self.classifier = BiaslessClassifier(self.dim, num_classes, cosine=classifier == "cosine", scale=cosine_scale) if num_classes else None
        self.eval_feature = eval_feature

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x3, x4 = self.backbone(x)
        parts = []
        if self.global_feature:
            parts.append(F.adaptive_avg_pool2d(x4, 1).flatten(1))
        maps = {3: x3, 4: x4}
        for b in self.keypoint_blocks:
            parts.append(self.keypoints[str(b)](maps[b]))
        emb = self.project(torch.cat(parts, dim=1))
        bn = self.neck(emb)
        out = {"embedding": emb, "bn_feature": bn}
        if self.classifier is not None and self.training:
            out["logits"] = self.classifier(bn)
        return out

    def retrieval_feature(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) retrieval features (``eval_feature``), differentiable in ``x`` (attacks use it)."""
        out = self(x)
        return out["bn_feature"] if self.eval_feature == "bn" else out["embedding"]

    @torch.no_grad()
    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) retrieval features, float32, without autograd."""
        return self.retrieval_feature(x).float()
