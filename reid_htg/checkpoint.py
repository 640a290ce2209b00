"""Checkpoints: atomic writes with the config, code version and package versions that made them; loading, the model inside, the newest run."""
from __future__ import annotations

import glob
import os
import platform
import subprocess

import torch

from reid_htg.models import ReIDNet
from reid_htg.utils.hashing import file_sha256


class CheckpointError(ValueError):
    """A file that is not a checkpoint this code can load safely, or not the kind the caller needs."""


def code_version() -> str:
    """``git describe`` of the package's repository, or the package version when not in a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True, text=True, timeout=5
        )
        described = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):  # no git on this machine: fall back to the package version
        described = ""
    if described:
        return described
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "reid-htg " + version("reid-htg")
    except PackageNotFoundError:
        return "unknown"


def package_versions() -> dict[str, str]:
    import numpy
    import timm

    return {"python": platform.python_version(), "torch": str(torch.__version__), "timm": str(timm.__version__), "numpy": str(numpy.__version__)}


def save_checkpoint(state: dict, path: str) -> None:
    """Write ``state`` to ``path`` atomically: an interrupted save leaves the previous file intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, with an error naming a missing or damaged file.

    Loading is ``weights_only``: tensors and plain Python types only, so a
    file whose pickle would run code is refused instead of executed.
    """
    if os.path.isdir(path):
        hint = f"; did you mean {os.path.join(path, 'last.pt')}?" if os.path.isfile(os.path.join(path, "last.pt")) else ""
        raise CheckpointError(f"checkpoint {path!r} is a folder, not a checkpoint file{hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found")
    try:
        # TorchVersion (a str) is what checkpoints written before versions were stored as strings hold
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"checkpoint {path!r} cannot be read safely ({type(exc).__name__}: {first}); "
                           "it is damaged, not a checkpoint, or holds objects other than tensors and plain types") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path!r} is not a reid-htg checkpoint (no model or config inside)")
    return state


def latest_checkpoint(runs_dir: str = "runs") -> str:
    """The most recently written ``last.pt`` under ``runs_dir``."""
    found = sorted(glob.glob(os.path.join(runs_dir, "**", "last.pt"), recursive=True), key=lambda p: (os.path.getmtime(p), p))
    if not found:
        raise FileNotFoundError(
            f"no checkpoint under {runs_dir!r}; train one with `python tools/train_reid.py`, "
            "or pass --checkpoint or --features"
        )
    return found[-1]


def require_reid(state: dict) -> dict:
    """``state`` if it holds a re-ID model of tools/train_reid.py, else a :class:`CheckpointError` saying what it is."""
    if state.get("kind") == "gan":
        raise CheckpointError("this is a GAN checkpoint of tools/train_gan.py, not a re-ID model; pass a checkpoint of tools/train_reid.py")
    if "model_args" not in state or "data_args" not in state:
        raise CheckpointError("this checkpoint holds no re-ID model (no model_args/data_args); pass a checkpoint of tools/train_reid.py")
    return state


def model_from_checkpoint(state: dict) -> ReIDNet:
    """Rebuild the network a checkpoint was saved from and load its weights."""
    require_reid(state)
    model = ReIDNet(**state["model_args"])
    model.load_state_dict(state["model"])
    return model


FRESH_PREFIXES = ("classifier.",)  # what fine-tuning never takes from the source: the identity classifier (new identities)


def init_from_checkpoint(model: ReIDNet, path: str, sha256: str = "") -> str:
    """Start ``model`` from a reid-htg checkpoint: every weight and buffer but the identity classifier; never the optimiser.

    The backbone, keypoint blocks, projection and BNNeck (running statistics
    included) are copied; the classifier keeps its fresh initialisation, since
    the new data has other identities. The two architectures must match key
    for key and shape for shape, except for the classifier.

    Args:
        model: the new network (any number of identities).
        path: a ``last.pt`` of ``tools/train_reid.py``.
        sha256: the expected SHA-256 of the file; empty: not checked.

    Returns:
        The file's SHA-256 (what a run's config records).

    Raises:
        CheckpointError: not a re-ID checkpoint, another file than ``sha256`` names, or another architecture
            (the message names the first differing key and its shapes).
    """
    state = require_reid(load_checkpoint(path))
    digest = file_sha256(path)
    if sha256 and sha256 != digest:
        raise CheckpointError(f"model.init_from={path!r} has sha256 {digest[:16]}..., not the {sha256[:16]}... that "
                              "model.init_sha256 expects (another file); clear model.init_sha256 to accept it")
    source = {k: v for k, v in state["model"].items() if not k.startswith(FRESH_PREFIXES)}
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(FRESH_PREFIXES)}
    for key in [*target, *(k for k in source if k not in target)]:  # the model's order first: the first difference a reader meets
        have, want = source.get(key), target.get(key)
        if have is None or want is None or tuple(have.shape) != tuple(want.shape):
            def shape(t):
                return "absent" if t is None else tuple(t.shape)
            raise CheckpointError(
                f"model.init_from={path!r} is another architecture: {key} is {shape(have)} there and {shape(want)} here "
                f"(source model: {state['model_args'].get('backbone')}, keypoint_blocks {list(state['model_args'].get('keypoint_blocks', ()))}, "
                f"embed_dim {state['model_args'].get('embed_dim')}); match its model.* settings")
    model.load_state_dict(source, strict=False)
    return digest


def training_state(*, model, optimizer, scheduler, htg, htg_start, active_all, aug_rng: list, epoch: int, config: dict,
                   model_args: dict, data_args: dict, metrics_row: list[str]) -> dict:
    """What ``tools/train_reid.py`` writes to ``last.pt`` after each epoch: all a resume needs, and what evaluation reads.

    Keys: ``model``, ``optimizer``, ``scheduler``, ``htg`` (G, D and their optimisers, or None), ``htg_start`` (the
    epoch HTG started, or None), ``active_all`` (the epoch's batch-all active fraction), ``aug_rng`` (every process's
    augmentation generator state), ``epoch`` (epochs done), ``config``, ``model_args`` (:class:`ReIDNet` keywords),
    ``data_args`` (dataset, root, reader args, image size), ``metrics_row`` (the epoch's training columns),
    ``code_version`` and ``versions``.
    """
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "htg": htg.state_dict() if htg is not None else None, "htg_start": htg_start, "active_all": active_all,
        "aug_rng": aug_rng, "epoch": epoch, "config": config, "model_args": model_args, "data_args": data_args,
        "code_version": code_version(), "versions": package_versions(), "metrics_row": metrics_row,
    }


RESUME_KEYS = ("model", "optimizer", "scheduler", "aug_rng", "epoch", "config")


def check_resumable(state: dict, path: str = "the checkpoint") -> dict:
    """``state`` if it holds everything a resumed run needs, else a :class:`CheckpointError` naming what is missing.

    A checkpoint without optimiser or schedule state (an exported or trimmed file) can still start a new run:
    ``model.init_from=PATH`` takes its weights.
    """
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} cannot be resumed: it holds no {', '.join(missing)}; "
                              f"start a new run from its weights with model.init_from={path} instead")
    return state


def restore_training(state: dict, model, optimizer, scheduler, htg, aug_gen: torch.Generator, rank: int = 0) -> dict:
    """Load a :func:`training_state` into the objects of a resumed run; returns ``epoch``, ``htg_start``, ``active_all``, ``metrics_row``."""
    check_resumable(state)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    aug_gen.set_state(state["aug_rng"][rank] if rank < len(state["aug_rng"]) else state["aug_rng"][0])
    if htg is not None and state.get("htg") is not None:
        htg.load_state_dict(state["htg"])
    return {"epoch": state["epoch"], "htg_start": state.get("htg_start"), "active_all": state.get("active_all"),
            "metrics_row": state.get("metrics_row")}
