"""Feature extraction: a model over an image set, and a checkpoint over its test split."""
from __future__ import annotations

import glob
import os

import numpy as np
import torch
from tqdm import tqdm

from reid_htg.data import build_dataset, split_of
from reid_htg.data.augment import normalize
from reid_htg.data.dataset import ImageSet, sequential_batches
from reid_htg.engine.checkpoint import load_checkpoint
from reid_htg.models import ReIDNet


def default_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.no_grad()
def extract_features(model: ReIDNet, images: ImageSet, batch_size: int = 128, device=None, desc: str = "features", progress: bool = True) -> torch.Tensor:
    """(N, D) float32 CPU features of every image, in order, with a progress bar."""
    device = default_device(device) if not isinstance(device, torch.device) else device
    was_training = model.training
    model.eval().to(device)
    out = []
    batches = sequential_batches(len(images), batch_size)
    for idx in tqdm(batches, desc=desc, disable=None if progress else True, leave=False):
        x, _, _ = images.batch(idx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model.extract(normalize(x.to(device, non_blocking=True))).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.dim)


def embed_images(state: dict, paths, batch_size: int = 128, device=None, desc: str = "embedding") -> np.ndarray:
    """(N, D) float32 retrieval features of image files with a checkpoint's model, at its training size."""
    model = model_from_checkpoint(state)
    size = (state["data_args"]["height"], state["data_args"]["width"])
    images = ImageSet(list(paths), np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int64), size, cache=False)
    return extract_features(model, images, batch_size, default_device(device), desc=desc).numpy()


def latest_checkpoint(runs_dir: str = "runs") -> str:
    """The most recently written ``last.pt`` under ``runs_dir``."""
    found = sorted(glob.glob(os.path.join(runs_dir, "**", "last.pt"), recursive=True), key=lambda p: (os.path.getmtime(p), p))
    if not found:
        raise FileNotFoundError(
            f"no checkpoint under {runs_dir!r}; train one with `python tools/train_reid.py`, "
            "or pass --checkpoint or --features"
        )
    return found[-1]


def model_from_checkpoint(state: dict) -> ReIDNet:
    """Rebuild the network a checkpoint was saved from and load its weights."""
    model = ReIDNet(**state["model_args"])
    model.load_state_dict(state["model"])
    return model


def checkpoint_test_sets(path: str, dataset: str | None = None, data_root: str | None = None):
    """(model, {"query": ImageSet, "gallery": ImageSet}, description) for a checkpoint, on the data it was trained for unless told otherwise."""
    state = load_checkpoint(path)
    data = state["data_args"]
    name = dataset or data["dataset"]
    root = data_root or data["root"]
    args = data.get("args", {}) if name == data["dataset"] else {}
    df = build_dataset(name, root, **args)
    size = (data["height"], data["width"])
    sets = {}
    for split in ("query", "gallery"):
        part = split_of(df, split)
        if len(part) == 0:
            raise ValueError(f"{name} at {root} has no {split} images to evaluate on")
        sets[split] = ImageSet(part["path"], part["pid"], part["camid"], size, cache=True, progress=False)
    desc = f"{name} ({root}): {len(sets['query'])} query, {len(sets['gallery'])} gallery"
    return model_from_checkpoint(state), sets, desc


def features_for_checkpoint(path: str, dataset: str | None = None, data_root: str | None = None, batch_size: int = 128, device=None) -> dict:
    """Query and gallery features of a checkpoint's model, on the data it was trained for unless told otherwise.

    Returns:
        ``{"qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids", "description"}``.
    """
    model, sets, desc = checkpoint_test_sets(path, dataset, data_root)
    feats = {}
    for split, key in (("query", "q"), ("gallery", "g")):
        images = sets[split]
        feats[f"{key}f"] = extract_features(model, images, batch_size, default_device(device), desc=f"{split} features").numpy()
        feats[f"{key}_pids"] = images.labels.numpy()
        feats[f"{key}_camids"] = images.camids.numpy()
    feats["description"] = desc
    return feats
