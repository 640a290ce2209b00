"""The one dataset table every reader produces, and its validation.

A dataset is a :class:`pandas.DataFrame` with one row per image and the
columns ``path, pid, camid, split``:

- ``path``: absolute path of the image file (str);
- ``pid``: integer identity. In re-ID test splits ``-1`` marks junk images and
  ``0`` distractors (Market-1501 convention); train pids are the dataset's own
  numbers and are relabelled to ``0..K-1`` by :func:`relabel` for training;
- ``camid``: integer camera index;
- ``split``: one of ``train``, ``query``, ``gallery``.

Extra columns are allowed and carried along.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

COLUMNS = ("path", "pid", "camid", "split")
SPLITS = ("train", "query", "gallery")


class DatasetError(ValueError):
    """A dataset that cannot be used as it stands; the message says why and how to fix it."""


def make_table(rows: list[tuple[str, int, int, str]], name: str) -> pd.DataFrame:
    """Build and validate a dataset table from ``(path, pid, camid, split)`` rows."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["path"] = [os.path.abspath(p) for p in df["path"]]
    df["pid"] = df["pid"].astype(np.int64)
    df["camid"] = df["camid"].astype(np.int64)
    df.attrs["name"] = name
    return validate_table(df, name=name)


def validate_table(df: pd.DataFrame, name: str = "dataset", require: tuple[str, ...] = ()) -> pd.DataFrame:
    """Check that ``df`` is a well-formed dataset table and return it.

    Checks the columns and their types, the split names, duplicate paths, and
    that every split listed in ``require`` is non-empty. File contents are not
    opened here (see :func:`reid_htg.data.check.find_unreadable`).

    Args:
        df: the table.
        name: dataset name used in error messages.
        require: splits that must hold at least one image.

    Returns:
        ``df`` itself, unchanged.

    Raises:
        DatasetError: naming the problem and the fix.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{name}: table lacks column(s) {missing}; a dataset table needs {list(COLUMNS)}")
    for col in ("pid", "camid"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise DatasetError(f"{name}: column {col!r} must hold integers, got dtype {df[col].dtype}")
    bad = sorted(set(df["split"].unique()) - set(SPLITS))
    if bad:
        raise DatasetError(f"{name}: unknown split name(s) {bad}; use one of {list(SPLITS)}")
    dup = df["path"][df["path"].duplicated()]
    if len(dup):
        raise DatasetError(f"{name}: {len(dup)} path(s) listed twice, first {dup.iloc[0]!r}")
    for split in require:
        if not (df["split"] == split).any():
            raise DatasetError(f"{name}: split {split!r} is empty; check --data-root points at the dataset's top folder")
    return df


def relabel(pids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Map arbitrary identity numbers to ``0..K-1`` in sorted order.

    >>> labels, mapping = relabel(np.array([7, 3, 7, 9]))
    >>> labels.tolist(), mapping
    ([1, 0, 1, 2], {3: 0, 7: 1, 9: 2})
    """
    uniq = np.unique(pids)
    mapping = {int(p): i for i, p in enumerate(uniq)}
    return np.searchsorted(uniq, pids).astype(np.int64), mapping


def hold_out_identities(train: pd.DataFrame, n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Carve a validation query/gallery out of the training identities.

    ``n`` identities, drawn with ``seed`` (not the run's seed: paired runs share
    one validation set), leave the training split. Of their images, the first
    (by path) of every (identity, camera) is a query and the rest form the
    gallery, as in Market-1501's query construction; with the Market-1501 rule
    a query matches that identity's images from the *other* cameras.

    Args:
        train: training rows of a dataset table.
        n: identities to hold out (0 < n < number of training identities).
        seed: which identities.

    Returns:
        ``(train, query, gallery)``, each index reset; query/gallery rows
        carry their split names.

    Raises:
        DatasetError: ``n`` out of range, or held-out identities seen by a
            single camera (no cross-camera match could exist).
    """
    ids = np.unique(train["pid"].to_numpy())
    if not 0 < n < len(ids):
        raise DatasetError(f"data.val_ids={n} must be between 1 and {len(ids) - 1} (the training split has {len(ids)} identities)")
    held = np.sort(np.random.default_rng(seed).choice(ids, size=n, replace=False))
    is_val = train["pid"].isin(held)
    val = train[is_val].sort_values("path", kind="stable")
    cams = val.groupby("pid")["camid"].nunique()
    if (cams < 2).all():
        raise DatasetError("data.val_ids: the held-out identities are each seen by one camera, so no query has a cross-camera match; "
                           "this dataset has no camera structure for a re-ID validation split")
    first = ~val.duplicated(["pid", "camid"])
    query = val[first].assign(split="query").reset_index(drop=True)
    gallery = val[~first].assign(split="gallery").reset_index(drop=True)
    return train[~is_val].reset_index(drop=True), query, gallery


def split_of(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split, index reset."""
    return df[df["split"] == split].reset_index(drop=True)


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a directory, else raise a :class:`DatasetError` naming it."""
    if not os.path.isdir(path):
        raise DatasetError(f"{what}: folder {path!r} not found; pass --data-root pointing at the dataset")
    return path
