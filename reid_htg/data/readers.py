"""Dataset readers: each turns a folder on disk into the one validated table.

Every reader is a small function ``read_x(root, **options) -> DataFrame`` that
sorts what it globs, so the table never depends on file-system order. Each registers
itself in :mod:`reid_htg.data.registry`, whose :func:`build_dataset` looks
them up with an error that lists the valid names.
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np
import pandas as pd

from reid_htg.data.registry import register
from reid_htg.data.table import (
    COLUMNS,
    DatasetError,
    make_table,
    require_dir,
    validate_table,
)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _images(folder: str) -> list[str]:
    """Sorted image files directly inside ``folder``."""
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)
    )


def list_images(folder: str) -> list[str]:
    """Every image file under ``folder`` (recursively), sorted."""
    require_dir(folder, "images")
    found = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.lower().endswith(IMAGE_EXTS)]
    if not found:
        raise DatasetError(f"no image files under {folder!r}")
    return sorted(found)


_MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")


def read_market1501(root: str, name: str = "market1501") -> pd.DataFrame:
    """Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

    File names look like ``0002_c1s1_000451_03.jpg``: identity 2, camera 1.
    Identity -1 marks junk and 0 distractors; both stay in the table (the
    evaluator drops junk and keeps distractors as negatives). Cameras are
    stored 0-based. DukeMTMC-reID uses the same layout and names.

    Args:
        root: the folder holding the three sub-folders (a ``Market-1501-v15.09.15``
            sub-folder is also accepted).
        name: dataset name for messages.
    """
    if not os.path.isdir(os.path.join(root, "bounding_box_train")):
        subs = sorted(glob.glob(os.path.join(root, "*", "bounding_box_train")))
        if len(subs) == 1:
            root = os.path.dirname(subs[0])
    rows = []
    for split, sub in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        folder = require_dir(os.path.join(root, sub), name)
        for path in _images(folder):
            m = _MARKET_RE.match(os.path.basename(path))
            if m is None:
                raise DatasetError(
                    f"{name}: cannot parse identity and camera from {path!r}; "
                    "expected names like 0002_c1s1_000451_03.jpg"
                )
            pid, cam = int(m.group(1)), int(m.group(2)) - 1
            if split == "train" and pid <= 0:
                continue  # junk and distractors carry no identity to learn
            rows.append((path, pid, cam, split))
    return make_table(rows, name)


def read_dukemtmc(root: str) -> pd.DataFrame:
    """DukeMTMC-reID: the Market-1501 layout (``0001_c2_f0046182.jpg``)."""
    return read_market1501(root, name="dukemtmc")


_CUHK03_RE = re.compile(r"^(\d+)_(\d+)\.\w+$")


def read_cuhk03(root: str) -> pd.DataFrame:
    """CUHK03 camera pair 1 as laid out in ``shared/data/cuhk03``.

    ``train/`` and ``val/`` hold ``PPPP_II.jpg``; slots ``II`` 00-04 are camera
    A (camid 0), 05-09 camera B (camid 1). Protocol "CUHK03-pair1": train on all
    of ``train/``; query = ``val/`` camera A, gallery = ``val/`` camera B.
    Identity numbers are per folder (train's 0000 and val's 0000 are different
    people), which is harmless because training and test never meet.
    """
    rows = []
    for sub in ("train", "val"):
        folder = require_dir(os.path.join(root, sub), "cuhk03")
        for path in _images(folder):
            m = _CUHK03_RE.match(os.path.basename(path))
            if m is None:
                raise DatasetError(f"cuhk03: cannot parse {path!r}; expected PPPP_II.jpg (identity, slot 00-09)")
            pid, slot = int(m.group(1)), int(m.group(2))
            cam = 0 if slot < 5 else 1
            split = "train" if sub == "train" else ("query" if cam == 0 else "gallery")
            rows.append((path, pid, cam, split))
    return make_table(rows, "cuhk03")


def _split_ids(ids: np.ndarray, num_train: int, split_seed: int | None) -> set[int]:
    """The training identities: the first ``num_train`` in sorted order, or a seeded random choice."""
    ids = np.sort(ids)
    if split_seed is not None:
        ids = np.random.default_rng(split_seed).permutation(ids)
    return set(int(i) for i in ids[:num_train])


_CUHK01_RE = re.compile(r"^(\d{4})(\d{3})\.\w+$")


def read_cuhk01(root: str, num_train: int = 485, split_seed: int | None = None) -> pd.DataFrame:
    """CUHK01: ``campus/NNNNMMM.png``, 971 identities x 4 images.

    Images 001-002 are camera A, 003-004 camera B. The usual split is 485
    training and 486 test identities: by default the first 485 in sorted order
    (``split_seed`` draws a random split instead). Test: query = camera A,
    gallery = camera B.
    """
    folder = os.path.join(root, "campus") if os.path.isdir(os.path.join(root, "campus")) else root
    require_dir(folder, "cuhk01")
    parsed = []
    for path in _images(folder):
        m = _CUHK01_RE.match(os.path.basename(path))
        if m is None:
            raise DatasetError(f"cuhk01: cannot parse {path!r}; expected NNNNMMM.png (identity, image 001-004)")
        parsed.append((path, int(m.group(1)), 0 if int(m.group(2)) <= 2 else 1))
    train_ids = _split_ids(np.array(sorted({p for _, p, _ in parsed})), num_train, split_seed)
    rows = [
        (path, pid, cam, "train" if pid in train_ids else ("query" if cam == 0 else "gallery"))
        for path, pid, cam in parsed
    ]
    return make_table(rows, "cuhk01")


def read_msmt17(root: str) -> pd.DataFrame:
    """MSMT17 from its list files.

    Expects ``train/``, ``test/`` and ``list_train.txt``, ``list_val.txt``,
    ``list_query.txt``, ``list_gallery.txt`` (lines ``0000/0000_000_01_0303morning_0015_0.jpg 0``).
    Training uses train + val lists, as is customary. The camera is the third
    field of the file name (1-based on disk, stored 0-based).
    """
    lists = (
        ("train", "train", "list_train.txt"),
        ("train", "train", "list_val.txt"),
        ("query", "test", "list_query.txt"),
        ("gallery", "test", "list_gallery.txt"),
    )
    rows = []
    for split, sub, list_name in lists:
        list_path = os.path.join(root, list_name)
        if not os.path.isfile(list_path):
            raise DatasetError(f"msmt17: list file {list_path!r} not found; --data-root must hold the list_*.txt files")
        with open(list_path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rel, label = line.split()
                    pid = int(label)
                    cam = int(os.path.basename(rel).split("_")[2]) - 1
                except (ValueError, IndexError):
                    raise DatasetError(f"msmt17: {list_path}:{lineno}: cannot parse {line!r}") from None
                rows.append((os.path.join(root, sub, rel), pid, cam, split))
    return make_table(rows, "msmt17")


def read_viper(root: str, num_train: int = 316, split_seed: int | None = None) -> pd.DataFrame:
    """VIPeR: ``cam_a/`` and ``cam_b/``, one image per identity and camera.

    The identity is the number before the first ``_`` of the file name
    (``000_45.bmp``). 632 identities split 316/316: by default the first 316
    in sorted order train (``split_seed`` draws a random split). Test: query =
    camera A, gallery = camera B.
    """
    parsed = []
    for cam, sub in enumerate(("cam_a", "cam_b")):
        for path in _images(require_dir(os.path.join(root, sub), "viper")):
            stem = os.path.basename(path).split("_")[0]
            if not stem.isdigit():
                raise DatasetError(f"viper: cannot parse identity from {path!r}; expected NNN_angle.bmp")
            parsed.append((path, int(stem), cam))
    train_ids = _split_ids(np.array(sorted({p for _, p, _ in parsed})), num_train, split_seed)
    rows = [
        (path, pid, cam, "train" if pid in train_ids else ("query" if cam == 0 else "gallery"))
        for path, pid, cam in parsed
    ]
    return make_table(rows, "viper")


def read_image_folder(root: str, train_fraction: float = 0.5) -> pd.DataFrame:
    """A folder per identity (``root/<identity>/<image>``), for class-level retrieval.

    Classes in sorted name order: the first ``train_fraction`` of them are
    ``train``, the rest ``test`` (the zero-shot protocol of CUB-200 / Cars196 /
    SOP, classes disjoint; ``train_fraction=0`` gives an evaluation-only set).
    Class-level evaluation ranks every test image against all the others, the
    query excluded (:func:`reid_htg.metrics.evaluate_class_level`). The
    identity is the class's position in sorted order; the camera is 0.
    """
    require_dir(root, "image_folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DatasetError(f"image_folder: {root!r} holds no class folders; expected root/<identity>/<image>")
    if not 0.0 <= train_fraction < 1.0:
        raise DatasetError(f"image_folder: train_fraction must be in [0, 1), got {train_fraction}")
    n_train = int(round(train_fraction * len(classes)))
    rows = []
    for pid, cls in enumerate(classes):
        for path in _images(os.path.join(root, cls)):
            rows.append((path, pid, 0, "train" if pid < n_train else "test"))
    if not rows:
        raise DatasetError(f"image_folder: no images in {root!r}/<class>/ (expected root/<class>/<image>; found the folder(s) "
                           f"{classes[:3]}{' ...' if len(classes) > 3 else ''}; if the classes sit one level down, point --data-root there)")
    return make_table(rows, "image_folder")


def read_csv_table(path: str) -> pd.DataFrame:
    """A CSV with the columns ``path, pid, camid, split``; relative paths are taken from the CSV's folder."""
    if not os.path.isfile(path):
        raise DatasetError(f"csv: file {path!r} not found")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"csv: {path} is empty (0 bytes); it needs the header {','.join(COLUMNS)} and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"csv: {path} is not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if len(df) == 0:
        raise DatasetError(f"csv: {path} has a header but no rows; add one row per image ({','.join(COLUMNS)})")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"csv: {path} lacks column(s) {missing}; it needs {list(COLUMNS)}")
    base = os.path.dirname(os.path.abspath(path))
    df["path"] = [p if os.path.isabs(p) else os.path.join(base, p) for p in df["path"].astype(str)]
    df.attrs["name"] = "csv"
    return validate_table(df, name=f"csv {path}")


for _name, _reader in {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "cuhk03": read_cuhk03,
    "cuhk01": read_cuhk01,
    "msmt17": read_msmt17,
    "viper": read_viper,
    "image_folder": read_image_folder,
}.items():
    register(_name, _reader)
register("csv", read_csv_table, root_is_folder=False)
