"""The one check of embeddings wherever they enter: evaluation, search, index builds and the service.

Embeddings are (N, D) real numbers with D >= 1, finite, and no row all zero (a zero vector has no direction:
cosine distance to it is undefined, and a search or a score built on it means nothing). Each failure is one
message naming what was given and where.
"""
from __future__ import annotations

import numpy as np


class EmbeddingsError(ValueError):
    """Embeddings that cannot be searched or scored, with what is wrong and where."""


def check_embeddings(x, what: str = "embeddings", dim: int | None = None) -> np.ndarray:
    """``x`` as a (N, D) float32 array, or an :class:`EmbeddingsError` naming the first problem.

    Args:
        x: (N, D) numbers (a (D,) vector is one row).
        what: how the message names them ("query embeddings in q.npz").
        dim: the dimension they must have (a gallery's), or None.

    Examples:
        >>> check_embeddings([[0.0, 1.0]]).shape
        (1, 2)
        >>> check_embeddings([[0.0, 0.0], [1.0, 0.0]])
        Traceback (most recent call last):
        ...
        reid_htg.retrieval.checks.EmbeddingsError: embeddings: 1 row(s) are all zero (first: row 0); a zero vector has no direction to search or score
    """
    arr = np.asarray(x)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        raise EmbeddingsError(f"{what}: expected real numbers, got {arr.dtype} values")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise EmbeddingsError(f"{what}: expected an N x D matrix, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise EmbeddingsError(f"{what}: {arr.shape[0]} embeddings of dimension 0 (zero width); embed with a model")
    if dim is not None and arr.shape[1] != dim:
        raise EmbeddingsError(f"{what} have dimension {arr.shape[1]}, but {dim}-d embeddings are expected here; were they made by another model?")
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        raise EmbeddingsError(f"{what}: NaN or inf in {int(bad.sum())} row(s) (first: row {int(np.flatnonzero(bad)[0])})")
    zero = ~arr.any(1)
    if zero.any():
        raise EmbeddingsError(f"{what}: {int(zero.sum())} row(s) are all zero (first: row {int(np.flatnonzero(zero)[0])}); "
                              "a zero vector has no direction to search or score")
    return arr
