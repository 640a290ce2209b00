"""Embeddings files (``.npz``, written by tools/embed.py): ``embeddings`` (N x D float32), one array per metadata column, ``fingerprint``."""
from __future__ import annotations

import numpy as np
import pandas as pd


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
    for k, v in cols.items():
        if len(v) != len(emb):
            raise EmbeddingsFileError(f"{path}: column {k!r} has {len(v)} entries for {len(emb)} embeddings")
    fp = str(data["fingerprint"]) if "fingerprint" in data.files else None
    return emb, pd.DataFrame(cols), fp
