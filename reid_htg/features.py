"""Feature extraction: a model over an image set, a checkpoint over image files or over a dataset's query and gallery."""
from __future__ import annotations

import numpy as np
import torch

from reid_htg.checkpoint import load_checkpoint, model_from_checkpoint, require_reid
from reid_htg.data import build_dataset, eval_protocol, split_of
from reid_htg.data.augment import normalize
from reid_htg.data.dataset import ImageSet, sequential_batches
from reid_htg.models import ReIDNet
from reid_htg.utils.progress import progress as progress_bar


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


@torch.no_grad()
def extract_features(model: ReIDNet, images: ImageSet, batch_size: int = 128, device=None, desc: str = "features", progress: bool = True) -> torch.Tensor:
    """(N, D) float32 CPU features of every image, in order, with a progress bar."""
    device = default_device(device) if not isinstance(device, torch.device) else device
    was_training = model.training
    model.eval().to(device)
    out = []
    batches = sequential_batches(len(images), batch_size)
    for idx in progress_bar(batches, desc=desc, enabled=progress):
        x, _, _ = images.batch(idx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model.extract(normalize(x.to(device, non_blocking=True))).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.dim)


def embed_images(state: dict, paths, batch_size: int = 128, device=None, desc: str = "embedding") -> np.ndarray:
    """(N, D) float32 retrieval features of image files with a checkpoint's model, at its training size."""
    model = model_from_checkpoint(state)  # refuses a GAN checkpoint before data_args is read
    size = (state["data_args"]["height"], state["data_args"]["width"])
    images = ImageSet(list(paths), np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int64), size, cache=False)
    return extract_features(model, images, batch_size, default_device(device), desc=desc).numpy()


def checkpoint_test_sets(path: str, dataset: str | None = None, data_root: str | None = None, protocol: str | None = None):
    """A checkpoint's model and the image sets to evaluate it on, on the data it was trained for unless told otherwise.

    Any dataset with an evaluation split works, training split or not
    (cross-dataset testing on an evaluation-only set).

    Returns:
        ``(model, sets, description, protocol)``: ``sets`` is ``{"query", "gallery"}``
        (protocol ``reid``) or ``{"test"}`` (``class``) of :class:`ImageSet`.
    """
    state = require_reid(load_checkpoint(path))
    data = state["data_args"]
    name = dataset or data["dataset"]
    root = data_root or data["root"]
    args = data.get("args", {}) if name == data["dataset"] else {}
    df = build_dataset(name, root, **args)
    protocol = eval_protocol(df, protocol)
    size = (data["height"], data["width"])
    sets = {}
    for split in ("query", "gallery") if protocol == "reid" else ("test",):
        part = split_of(df, split)
        sets[split] = ImageSet(part["path"], part["pid"], part["camid"], size, cache=True, progress=False)
    desc = f"{name} ({root}): " + ", ".join(f"{len(v)} {k}" for k, v in sets.items())
    return model_from_checkpoint(state), sets, desc, protocol


def features_for_checkpoint(path: str, dataset: str | None = None, data_root: str | None = None, batch_size: int = 128, device=None,
                            protocol: str | None = None) -> dict:
    """Evaluation features of a checkpoint's model, on the data it was trained for unless told otherwise.

    Returns:
        ``{"qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids"}`` (re-ID) or
        ``{"tf", "t_pids"}`` (class-level), plus ``"description"`` and ``"protocol"``.
    """
    model, sets, desc, protocol = checkpoint_test_sets(path, dataset, data_root, protocol)
    feats = {}
    for split, images in sets.items():
        key = split[0]
        feats[f"{key}f"] = extract_features(model, images, batch_size, default_device(device), desc=f"{split} features").numpy()
        feats[f"{key}_pids"] = images.labels.numpy()
        if protocol == "reid":
            feats[f"{key}_camids"] = images.camids.numpy()
    feats["description"], feats["protocol"] = desc, protocol
    return feats
