"""Datasets as one validated table (``path, pid, camid, split``), readers, checks and loaders."""
from reid_htg.data import readers, synthetic  # noqa: F401 - each registers its datasets
from reid_htg.data.check import (
    check_dataset,
    drop_unreadable,
    find_unreadable,
    queries_without_match,
)
from reid_htg.data.registry import DATASETS, build_dataset
from reid_htg.data.table import (
    COLUMNS,
    PROTOCOLS,
    SPLITS,
    DatasetError,
    eval_protocol,
    hold_out_identities,
    relabel,
    split_of,
    validate_table,
)

__all__ = [
    "COLUMNS",
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "build_dataset",
    "check_dataset",
    "drop_unreadable",
    "find_unreadable",
    "queries_without_match",
    "PROTOCOLS",
    "eval_protocol",
    "hold_out_identities",
    "relabel",
    "split_of",
    "validate_table",
]
