"""The one dataset table every reader produces, and its validation.

A dataset is a :class:`pandas.DataFrame` with one row per image and the
columns ``path, pid, camid, split``:

- ``path``: absolute path of the image file (str);
- ``pid``: integer identity. In re-ID test splits ``-1`` marks junk images and
  ``0`` distractors (Market-1501 convention); train pids are the dataset's own
  numbers and are relabelled to ``0..K-1`` by :func:`relabel` for training;
- ``camid``: integer camera index;
- ``split``: one of ``train``, ``query``, ``gallery`` (re-ID: each query
  against the gallery, Market-1501 rule) or ``test`` (class-level retrieval:
  every test image is a query against all the other test images, itself
  excluded; CUB-200 / Cars196 / SOP protocol). A dataset may lack ``train``
  (an evaluation-only set) or have no evaluation split (training only).

Extra columns are allowed and carried along.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

COLUMNS = ("path", "pid", "camid", "split")
SPLITS = ("train", "query", "gallery", "test")


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

    Examples:
        >>> labels, mapping = relabel(np.array([7, 3, 7, 9]))
        >>> labels.tolist(), mapping
        ([1, 0, 1, 2], {3: 0, 7: 1, 9: 2})
    """
    uniq = np.unique(pids)
    mapping = {int(p): i for i, p in enumerate(uniq)}
    return np.searchsorted(uniq, pids).astype(np.int64), mapping


PROTOCOLS = ("reid", "class")  # query/gallery with the Market-1501 rule; a test split, every image against the others


def eval_protocol(df: pd.DataFrame, forced: str | None = None) -> str:
    """The evaluation protocol a table supports: ``reid`` (query + gallery) or ``class`` (a ``test`` split).

    With both present, ``reid`` unless ``forced``. Raises :class:`DatasetError`
    when the table has nothing to evaluate, or not what ``forced`` asks for.
    """
    has = {"reid": bool((df["split"] == "query").any() and (df["split"] == "gallery").any()), "class": bool((df["split"] == "test").any())}
    if forced is not None:
        if forced not in PROTOCOLS:
            raise DatasetError(f"unknown protocol {forced!r}; use one of {list(PROTOCOLS)}")
        if not has[forced]:
            need = "query and gallery splits" if forced == "reid" else "a test split"
            raise DatasetError(f"{df.attrs.get('name', 'dataset')}: protocol {forced!r} needs {need}, and this dataset has none")
        return forced
    if has["reid"]:
        return "reid"
    if has["class"]:
        return "class"
    raise DatasetError(f"{df.attrs.get('name', 'dataset')}: nothing to evaluate (no query + gallery, no test split)")


def hold_out_identities(train: pd.DataFrame, n: int, seed: int = 0, protocol: str = "reid") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation set out of the training identities (classes).

    ``n`` identities, drawn with ``seed`` (not the run's seed: paired runs share
    one validation set), leave the training split. With ``protocol="reid"`` the
    first image (by path) of every (identity, camera) becomes a query and the
    rest the gallery, as in Market-1501's query construction; with the
    Market-1501 rule a query then matches that identity's images from the
    *other* cameras. With ``protocol="class"`` every held-out image goes to a
    ``test`` split (each against all the others).

    Args:
        train: training rows of a dataset table.
        n: identities to hold out (0 < n < number of training identities).
        seed: which identities.
        protocol: ``reid`` or ``class``.

    Returns:
        ``(train, held_out)``, index reset; the held-out rows carry their new split names.

    Raises:
        DatasetError: ``n`` out of range, or a re-ID split whose held-out
            identities are each seen by a single camera (no cross-camera match could exist).
    """
    ids = np.unique(train["pid"].to_numpy())
    if not 0 < n < len(ids):
        raise DatasetError(f"data.val_ids={n} must be between 1 and {len(ids) - 1} (the training split has {len(ids)} identities)")
    held = np.sort(np.random.default_rng(seed).choice(ids, size=n, replace=False))
    is_val = train["pid"].isin(held)
    val = train[is_val].sort_values("path", kind="stable")
    if protocol == "class":
        val = val.assign(split="test")
    else:
        if (val.groupby("pid")["camid"].nunique() < 2).all():
            raise DatasetError("data.val_ids: the held-out identities are each seen by one camera, so no query has a cross-camera match; "
                               "this dataset has no camera structure for a re-ID validation split")
        first = ~val.duplicated(["pid", "camid"])
        val = val.assign(split=np.where(first, "query", "gallery"))
    return train[~is_val].reset_index(drop=True), val.reset_index(drop=True)


def split_of(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split, index reset."""
    return df[df["split"] == split].reset_index(drop=True)


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a directory, else raise a :class:`DatasetError` naming it."""
    if not os.path.isdir(path):
        raise DatasetError(f"{what}: folder {path!r} not found; pass --data-root pointing at the dataset")
    return path
