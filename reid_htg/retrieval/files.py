"""Embeddings files (``.npz``, written by tools/embed.py) and the evaluation features read from them.

An embeddings file holds ``embeddings`` (N x D float32), one array per
metadata column (``path``; ``pid``, ``camid``, ``split`` for a dataset) and
``fingerprint`` (the hash of the model's weights). Evaluation reads features
as a dict: ``qf, gf, q_pids, g_pids, q_camids, g_camids`` (re-ID) or ``tf,
t_pids`` (class-level), from a query and a gallery embeddings file (or one
test file), or from one features ``.npz`` holding those arrays.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from reid_htg.retrieval.checks import EmbeddingsError, check_embeddings


class EmbeddingsFileError(ValueError):
    """An embeddings file that cannot be used, with the reason."""


def load_embeddings(path: str) -> tuple[np.ndarray, pd.DataFrame, str | None]:
    """Embeddings, their metadata table and the model fingerprint (None if absent) from an embeddings file."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EmbeddingsFileError(f"cannot read embeddings file {path!r}: {exc}") from None
    if "embeddings" not in data.files:
        raise EmbeddingsFileError(f"{path} has no 'embeddings' array; make it with tools/embed.py")
    emb = data["embeddings"]
    cols = {k: data[k] for k in data.files if k not in ("embeddings", "fingerprint")}
    if emb.ndim != 2:
        raise EmbeddingsFileError(f"{path}: 'embeddings' must be N x D, got shape {emb.shape}")
    for k, v in cols.items():
        if v.ndim != 1:
            raise EmbeddingsFileError(f"{path}: column {k!r} must be one value per embedding (1-d), got shape {v.shape}")
        if len(v) != len(emb):
            raise EmbeddingsFileError(f"{path}: column {k!r} has {len(v)} entries for {len(emb)} embeddings")
    if len(emb):  # the values, once the structure is right
        try:
            emb = check_embeddings(emb, f"embeddings in {path}")
        except EmbeddingsError as exc:
            raise EmbeddingsFileError(str(exc)) from None
    fp = str(data["fingerprint"]) if "fingerprint" in data.files else None
    return emb, pd.DataFrame(cols), fp


FEATURE_KEYS = {"reid": ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids"), "class": ("tf", "t_pids")}


def load_features(path: str) -> dict:
    """The arrays of a features ``.npz`` (re-ID or class-level) and its ``protocol``, with an error naming what is missing."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EmbeddingsFileError(f"cannot read features file {path!r}: {exc}") from None
    need = f"a features file needs {list(FEATURE_KEYS['reid'])} (re-ID) or {list(FEATURE_KEYS['class'])} (class-level)"
    if not hasattr(data, "files"):
        raise EmbeddingsFileError(f"{path} is a plain array, not an .npz of named arrays; {need}")
    if "embeddings" in data.files:
        raise EmbeddingsFileError(f"{path} is an embeddings file of tools/embed.py; evaluate it with --query {path} --gallery G.npz "
                                  f"(re-ID) or --test {path} (class-level)")
    protocol = "class" if set(FEATURE_KEYS["class"]) <= set(data.files) else "reid"
    missing = [k for k in FEATURE_KEYS[protocol] if k not in data.files]
    if missing:
        raise EmbeddingsFileError(f"{path} lacks array(s) {missing}; {need}")
    feats = {k: data[k] for k in FEATURE_KEYS[protocol]}
    for key in ("qf", "gf", "tf"):
        if key in feats:
            try:
                feats[key] = check_embeddings(feats[key], f"{key} in {path}")
            except EmbeddingsError as exc:
                raise EmbeddingsFileError(str(exc)) from None
    return {**feats, "protocol": protocol}


def features_from_embeddings(query: str | None = None, gallery: str | None = None, test: str | None = None) -> dict:
    """Evaluation features from embeddings files of tools/embed.py: a query and a gallery file (re-ID), or a test file
    (class-level); identities (and cameras) from their ``pid`` (``camid``) columns.

    Raises:
        EmbeddingsFileError: a file without the columns the protocol needs, or files from different models.
    """
    if test is not None:
        emb, meta, _ = load_embeddings(test)
        if "pid" not in meta:
            raise EmbeddingsFileError(f"{test} has no 'pid' column; embed a dataset split (tools/embed.py --dataset NAME --split test)")
        return {"tf": emb, "t_pids": meta["pid"].to_numpy(), "protocol": "class"}
    if query is None or gallery is None:
        raise EmbeddingsFileError("re-ID evaluation from embeddings files needs both --query and --gallery")
    (qe, qm, qfp), (ge, gm, gfp) = load_embeddings(query), load_embeddings(gallery)
    for path, meta in ((query, qm), (gallery, gm)):
        missing = [c for c in ("pid", "camid") if c not in meta]
        if missing:
            raise EmbeddingsFileError(f"{path} has no {missing} column(s); embed a dataset split (tools/embed.py --dataset NAME --split query|gallery)")
    if qfp and gfp and qfp != gfp:
        raise EmbeddingsFileError(f"{query} (model {qfp}) and {gallery} (model {gfp}) were embedded by different models")
    if qe.shape[1] != ge.shape[1]:
        raise EmbeddingsFileError(f"{query} has dimension {qe.shape[1]}, {gallery} {ge.shape[1]}")
    return {"qf": qe, "gf": ge, "q_pids": qm["pid"].to_numpy(), "g_pids": gm["pid"].to_numpy(),
            "q_camids": qm["camid"].to_numpy(), "g_camids": gm["camid"].to_numpy(), "protocol": "reid"}


def read_threshold(index_dir: str) -> dict | None:
    """The verification threshold saved beside an index (``threshold.json`` of ``tools/eval.py --save-threshold``), or None."""
    path = os.path.join(index_dir, "threshold.json")
    if not os.path.isfile(path):
        return None
    import json

    try:
        with open(path) as fh:
            record = json.load(fh)
        distance = float(record["distance"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingsFileError(f"{path} cannot be read as a threshold ({exc}); write it again with tools/eval.py --save-threshold") from None
    if not np.isfinite(distance):
        raise EmbeddingsFileError(f"{path}: the threshold {distance} is not a finite distance")
    return dict(record, distance=distance)


def check_threshold(value) -> float:
    """A distance threshold given by a user: a finite number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise EmbeddingsFileError(f"threshold must be a finite number, got {value!r}")
    return float(value)
