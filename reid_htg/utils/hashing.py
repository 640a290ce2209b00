"""Fingerprints: the SHA-256 of a file, and a short hash of a model's weights (what an index checks queries against)."""
from __future__ import annotations

import hashlib

import numpy as np


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(state_dict) -> str:
    """A short hash of a model's weights (names, shapes and values): embeddings from other weights differ.

    Args:
        state_dict: a ``{name: tensor}`` mapping (``model.state_dict()``).
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        arr = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.asarray(t)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def onnx_weights_sha256(model) -> str:
    """SHA-256 of an ONNX model's weights (its initializers: names, shapes and values, in name order).

    Args:
        model: an ``onnx.ModelProto``.
    """
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        arr = numpy_helper.to_array(init)
        h.update(init.name.encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
