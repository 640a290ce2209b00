"""The dataset registry: names -> readers, and :func:`build_dataset`.

A reader is a function ``read_x(root, **options) -> DataFrame`` returning the
one validated table (:mod:`reid_htg.data.table`). The folder readers
(:mod:`reid_htg.data.readers`) and the synthetic set
(:mod:`reid_htg.data.synthetic`) each register theirs here, and
``reid_htg.data`` imports both, so every name is known once the package is
imported; neither module imports the other's registration.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

import pandas as pd

from reid_htg.data.table import DatasetError

DATASETS: dict[str, Callable[..., pd.DataFrame]] = {}
_ROOT_IS_FOLDER: dict[str, bool] = {}


def register(name: str, reader: Callable[..., pd.DataFrame], root_is_folder: bool = True) -> None:
    """Add ``reader`` under ``name``; ``root_is_folder=False`` for readers whose root is a file or is created on first use."""
    if name in DATASETS and DATASETS[name] is not reader:
        raise ValueError(f"dataset name {name!r} is already registered to {DATASETS[name].__name__}")
    DATASETS[name] = reader
    _ROOT_IS_FOLDER[name] = root_is_folder


def build_dataset(name: str, root: str, **kwargs) -> pd.DataFrame:
    """Read dataset ``name`` from ``root`` (for ``csv``, ``root`` is the CSV file; ``synthetic`` is generated into it on first use)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    if _ROOT_IS_FOLDER[name] and not os.path.isdir(root):
        raise DatasetError(f"{name}: data root {root!r} not found; pass --data-root pointing at the dataset")
    params = list(inspect.signature(DATASETS[name]).parameters)[1:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(inspect.signature(DATASETS[name]).parameters[p].kind == inspect.Parameter.VAR_KEYWORD for p in params):
        raise DatasetError(f"{name} takes no option(s) {unknown} (data.args); its options: {params or 'none'}")
    return DATASETS[name](root, **kwargs)
