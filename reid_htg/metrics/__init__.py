"""Evaluation metrics: re-ID ranking (CMC, mAP, mINP) and class-level retrieval."""
from reid_htg.metrics.distance import pairwise_distance
from reid_htg.metrics.rank import (
    AP_FORMULAS,
    RankResult,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_reference,
)
from reid_htg.metrics.retrieval import (
    ClassLevelResult,
    class_level_reference,
    evaluate_class_level,
    map_at_r,
    nmi,
    recall_at_k,
)

__all__ = [
    "AP_FORMULAS",
    "ClassLevelResult",
    "RankResult",
    "class_level_reference",
    "evaluate_class_level",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_rank_reference",
    "map_at_r",
    "nmi",
    "pairwise_distance",
    "recall_at_k",
]
