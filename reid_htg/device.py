"""Which device to run on: the one asked for, or CUDA when this machine has it, with an error naming what is missing."""
from __future__ import annotations

import torch


def default_device(device: str | None = None) -> torch.device:
    """``device`` as a torch device (default: cuda when available); a ValueError naming it when this machine lacks it."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} but this machine has no CUDA device; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
