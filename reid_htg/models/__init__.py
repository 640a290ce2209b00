"""Networks: timm backbones, keypoint blocks, heads, the re-ID network."""
from reid_htg.models.backbone import build_backbone
from reid_htg.models.heads import BiaslessClassifier, BNNeck
from reid_htg.models.keypoint import KeypointBlock
from reid_htg.models.reid_net import ReIDNet

__all__ = ["BNNeck", "BiaslessClassifier", "KeypointBlock", "ReIDNet", "build_backbone"]
