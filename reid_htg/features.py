"""Feature extraction and evaluation splits: a model over an image set, a checkpoint over image files or over a dataset's evaluation split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reid_htg.checkpoint import load_checkpoint, model_from_checkpoint, require_reid
from reid_htg.data import build_dataset, eval_protocol, split_of
from reid_htg.data.dataset import ImageSet, sequential_batches
from reid_htg.data.transforms import normalize
from reid_htg.device import default_device, flush_denormal
from reid_htg.metrics import evaluate_class_level, evaluate_features
from reid_htg.models import ReIDNet
from reid_htg.utils.progress import progress as progress_bar


@torch.no_grad()
def extract_features(model: ReIDNet, images: ImageSet, batch_size: int = 128, device=None, desc: str = "features", progress: bool = True) -> torch.Tensor:
    """(N, D) float32 CPU features of every image, in order, with a progress bar."""
    device = default_device(device) if not isinstance(device, torch.device) else device
    if device.type == "cpu":
        flush_denormal()  # a decayed network's subnormal weights would slow every CPU forward
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


@dataclass
class EvalSplit:
    """An evaluation split: its protocol and its image sets (``query`` and ``gallery`` for ``reid``, ``test`` for ``class``)."""

    protocol: str
    sets: dict

    @classmethod
    def from_table(cls, df, protocol: str, size: tuple[int, int], cache: bool = True, progress: bool = False) -> EvalSplit:
        """The protocol's splits of a dataset table as image sets at ``size`` (height, width)."""
        splits = ("query", "gallery") if protocol == "reid" else ("test",)
        sets = {}
        for split in splits:
            part = split_of(df, split)
            sets[split] = ImageSet(part["path"], part["pid"], part["camid"], size, cache=cache, progress=progress)
        return cls(protocol, sets)

    def describe(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in self.sets.items())


HEADLINE = {"reid": ("rank1", "mAP"), "class": ("recall@1", "map@r")}  # the two metrics a run reports per evaluation
PROTOCOL_NAMES = {"reid": "Market-1501 protocol", "class": "class-level retrieval, every test image against the others"}


def evaluate_split(model: ReIDNet, split: EvalSplit, device=None, batch_size: int = 128):
    """The model's result on a split under its protocol (a RankResult or ClassLevelResult).

    Raises:
        ValueError: the split cannot be evaluated (e.g. no query with a true match).
    """
    feats = {name: extract_features(model, images, batch_size, device=device, desc=f"{name} features") for name, images in split.sets.items()}
    if split.protocol == "class":
        return evaluate_class_level(feats["test"], split.sets["test"].labels.numpy(), nmi_seed=0)
    q, g = split.sets["query"], split.sets["gallery"]
    return evaluate_features(feats["query"], feats["gallery"], q.labels, g.labels, q.camids, g.camids)


def checkpoint_test_sets(path: str, dataset: str | None = None, data_root: str | None = None, protocol: str | None = None):
    """A checkpoint's model and the split to evaluate it on, on the data it was trained for unless told otherwise.

    Any dataset with an evaluation split works, training split or not
    (cross-dataset testing on an evaluation-only set).

    Returns:
        ``(model, split, description)``: an :class:`EvalSplit` and a line naming the data.
    """
    state = require_reid(load_checkpoint(path))
    data = state["data_args"]
    name = dataset or data["dataset"]
    root = data_root or data["root"]
    args = data.get("args", {}) if name == data["dataset"] else {}
    df = build_dataset(name, root, **args)
    split = EvalSplit.from_table(df, eval_protocol(df, protocol), (data["height"], data["width"]))
    return model_from_checkpoint(state), split, f"{name} ({root}): {split.describe()}"


def features_for_checkpoint(path: str, dataset: str | None = None, data_root: str | None = None, batch_size: int = 128, device=None,
                            protocol: str | None = None) -> dict:
    """Evaluation features of a checkpoint's model, on the data it was trained for unless told otherwise.

    Returns:
        ``{"qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids"}`` (re-ID) or
        ``{"tf", "t_pids"}`` (class-level), plus ``"description"`` and ``"protocol"``.
    """
    model, split, desc = checkpoint_test_sets(path, dataset, data_root, protocol)
    feats = {}
    for name, images in split.sets.items():
        key = name[0]
        feats[f"{key}f"] = extract_features(model, images, batch_size, default_device(device), desc=f"{name} features").numpy()
        feats[f"{key}_pids"] = images.labels.numpy()
        if split.protocol == "reid":
            feats[f"{key}_camids"] = images.camids.numpy()
    feats["description"], feats["protocol"] = desc, split.protocol
    return feats
