"""Datasets as one validated table (``path, pid, camid, split``), readers, checks and loaders."""
from reid_htg.data.check import check_dataset, drop_unreadable, find_unreadable, queries_without_match, require_readable
from reid_htg.data.readers import DATASETS, build_dataset
from reid_htg.data.table import COLUMNS, SPLITS, DatasetError, hold_out_identities, relabel, split_of, validate_table

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
    "hold_out_identities",
    "relabel",
    "require_readable",
    "split_of",
    "validate_table",
]
