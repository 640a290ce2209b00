"""Optional dependencies: which extra brings each one, and the one message that says how to install it.

Every tool runs under :func:`reid_htg.cli.run_tool`, which turns a missing optional module into this message
(one line, exit 2), so no tool or console script ends in a ModuleNotFoundError traceback.
"""
from __future__ import annotations

EXTRAS = {  # top-level module -> the extra that installs it (pyproject.toml's optional-dependencies)
    "onnx": "serve", "onnxruntime": "serve", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve",
    "httpx": "serve", "openvino": "openvino", "pymilvus": "milvus", "milvus_lite": "milvus", "boxmot": "track",
    "motmetrics": "track", "tensorboard": "tensorboard", "mkdocs": "docs",
}


def install_hint(extra: str) -> str:
    """How to install ``extra``, for a wheel user and for a checkout."""
    return f'pip install "reid-htg[{extra}]" (in a checkout: pip install -e ".[{extra}]")'


def missing_extra(exc: ModuleNotFoundError, what: str = "this command") -> str | None:
    """The one-line message for an optional module that is not installed, or None when ``exc`` is about another module."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"{what} needs the {extra} extra ({top} is not installed): {install_hint(extra)}"
