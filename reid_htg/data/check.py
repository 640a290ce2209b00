"""Checks of a dataset table against the files on disk and the re-ID protocol."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image

from reid_htg.data.table import SPLITS
from reid_htg.utils.hashing import file_sha256
from reid_htg.utils.progress import progress as progress_bar


def _open_error(path: str) -> str | None:
    """None if the image decodes fully, else the reason it does not."""
    if not os.path.isfile(path):
        return "file not found"
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: verify() misses truncated JPEG data
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        return f"{type(exc).__name__}: {exc}"
    return None


def find_unreadable(paths, workers: int = 4, progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image and return ``(path, reason)`` for those that fail, in input order.

    Pillow releases the GIL while decoding, so a few threads use all cores.
    """
    paths = list(paths)
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(progress_bar(pool.map(_open_error, paths), total=len(paths), desc="decoding images", enabled=progress))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def queries_without_match(df: pd.DataFrame) -> pd.DataFrame:
    """Query rows whose identity has no gallery image from another camera.

    Under the Market-1501 protocol such a query has no true match: it cannot be
    scored. Junk queries (pid -1) are included.
    """
    q = df[df["split"] == "query"]
    g = df[df["split"] == "gallery"]
    pairs = set(zip(g["pid"].to_numpy().tolist(), g["camid"].to_numpy().tolist()))
    gallery_cams: dict[int, set[int]] = {}
    for pid, cam in pairs:
        gallery_cams.setdefault(pid, set()).add(cam)
    ok = np.array([pid != -1 and bool(gallery_cams.get(pid, set()) - {cam}) for pid, cam in zip(q["pid"], q["camid"])], bool)
    return q[~ok]


def _some(ids, n: int = 10) -> str:
    """The first ``n`` ids, comma-separated, with an ellipsis when there are more."""
    return ", ".join(map(str, ids[:n])) + (", ..." if len(ids) > n else "")


def single_image_classes(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the class-level ``test`` split whose class has no other test image (no possible match)."""
    t = df[df["split"] == "test"]
    counts = t["pid"].map(t["pid"].value_counts())
    return t[counts == 1]


def missing_files(paths) -> list[str]:
    """The paths that are not a readable file (missing, a folder, a broken symlink), in input order."""
    return [p for p in paths if not os.path.isfile(p)]


def train_test_leaks(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(training path, evaluation path) pairs that are the same image: the same file (a link) or the same bytes.

    Only files of equal size are hashed, so a clean dataset costs one ``stat`` per image.
    """
    train = [p for p in df.loc[df["split"] == "train", "path"] if os.path.isfile(p)]
    held = [p for p in df.loc[df["split"] != "train", "path"] if os.path.isfile(p)]
    if not train or not held:
        return []
    sizes: dict[int, list[str]] = {}
    for p in train:
        sizes.setdefault(os.path.getsize(p), []).append(p)
    leaks, digests = [], {}
    for q in held:
        for p in sizes.get(os.path.getsize(q), []):
            same = os.path.realpath(p) == os.path.realpath(q)
            if not same:
                for f in (p, q):
                    if f not in digests:
                        digests[f] = file_sha256(f)
                same = digests[p] == digests[q]
            if same:
                leaks.append((p, q))
                break
    return leaks


def _split_counts(df: pd.DataFrame) -> dict:
    return {
        s: {
            "images": int((df["split"] == s).sum()),
            "ids": int(df.loc[(df["split"] == s) & (df["pid"] != -1), "pid"].nunique()),
            "cams": int(df.loc[df["split"] == s, "camid"].nunique()),
        }
        for s in SPLITS
    }


def _file_problems(df: pd.DataFrame, decode: bool, progress: bool) -> list[dict]:
    """Missing files (also without decoding), unreadable images (with it) and training images in an evaluation split."""
    problems = []
    missing = missing_files(df["path"])
    if missing:
        problems.append({"kind": "missing", "message": f"{len(missing)} image path(s) are not files (missing, or a broken link); "
                         "fix or remove them", "paths": missing})
    if decode:
        gone = set(missing)
        bad = find_unreadable([p for p in df["path"] if p not in gone], progress=progress)
        if bad:
            problems.append({"kind": "unreadable", "message": f"{len(bad)} image(s) cannot be read; fix or remove them "
                             "(training can skip them with data.skip_unreadable=true)", "paths": [p for p, _ in bad],
                             "reasons": [r for _, r in bad]})
    leaks = train_test_leaks(df)
    if leaks:
        problems.append({"kind": "leak", "message": f"{len(leaks)} evaluation image(s) are training images (the same file or the "
                         f"same bytes, first: {leaks[0][1]} = {leaks[0][0]}): scores on them are not held out; remove them from one side",
                         "paths": [q for _, q in leaks]})
    return problems


def check_dataset(df: pd.DataFrame, decode: bool = True, progress: bool = True) -> dict:
    """Everything wrong with a dataset, as a report.

    A dataset can be used for training (a ``train`` split), for evaluation (a
    re-ID ``query`` + ``gallery`` pair, or a class-level ``test`` split), or
    both; data with no training split is an evaluation-only set (cross-dataset
    testing).

    Args:
        df: a dataset table.
        decode: open every image (slow on big sets, but the only way to find
            truncated files).
        progress: show a progress bar while decoding.

    Returns:
        ``{"splits": {split: {"images", "ids", "cams"}}, "problems": [...], "usable": bool, "usable_for": [...]}``
        with ``usable_for`` a subset of ``["training", "evaluation"]``. Each
        problem is a dict with ``kind``, ``message`` and, where it applies,
        ``paths``. Missing or unreadable images, evaluation images that are
        training images (a link or a byte-for-byte copy), a query split without
        a gallery (or the reverse), and data that can neither train nor evaluate make a dataset
        unusable; queries without a true match and test images alone in their
        class are reported (evaluation counts them) and make it unusable for
        evaluation only when nothing is left to score.
    """
    problems = []
    splits = _split_counts(df)
    n = {s: splits[s]["images"] for s in SPLITS}
    blocked = False
    if bool(n["query"]) != bool(n["gallery"]):
        have, lack = ("query", "gallery") if n["query"] else ("gallery", "query")
        problems.append({"kind": "empty_split", "message": f"split {have!r} has images but {lack!r} has none; "
                         "re-ID evaluation needs both (a class-level set puts its test images in a 'test' split)"})
        blocked = True
    reid_eval = bool(n["query"] and n["gallery"])
    class_eval = bool(n["test"])
    if n["query"] and n["gallery"]:
        lonely = queries_without_match(df)
        if len(lonely):
            ids = sorted(set(lonely["pid"].tolist()))
            problems.append(
                {
                    "kind": "query_without_match",
                    "message": f"{len(lonely)} query image(s) of {len(ids)} identit{'y' if len(ids) == 1 else 'ies'} "
                    f"({_some(ids)}) have no gallery image "
                    "of the same identity from another camera; evaluation counts and skips them",
                    "paths": lonely["path"].tolist(),
                }
            )
            reid_eval = len(lonely) < n["query"]
    if n["test"]:
        single = single_image_classes(df)
        if len(single):
            ids = sorted(set(single["pid"].tolist()))
            problems.append(
                {
                    "kind": "class_without_match",
                    "message": f"{len(ids)} test class(es) ({_some(ids)}) "
                    "have a single test image, which has no possible match; it counts as a miss in Recall@K and is skipped by MAP@R",
                    "paths": single["path"].tolist(),
                }
            )
            class_eval = len(single) < n["test"]
    files = _file_problems(df, decode, progress)
    problems += files
    blocked = blocked or bool(files)
    usable_for = (["training"] if n["train"] else []) + (["evaluation"] if reid_eval or class_eval else [])
    if not usable_for:
        problems.append({"kind": "nothing_to_do", "message": "no training split and nothing to evaluate "
                         "(needs 'train', or 'query' + 'gallery', or 'test' with two images of a class)"})
    return {"splits": splits, "problems": problems, "usable": bool(usable_for) and not blocked, "usable_for": usable_for}


def drop_unreadable(df: pd.DataFrame, progress: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The table without its unreadable images, and the ``(path, reason)`` of those dropped."""
    bad = find_unreadable(df["path"], progress=progress)
    if not bad:
        return df, []
    bad_paths = {p for p, _ in bad}
    return df[~df["path"].isin(bad_paths)].reset_index(drop=True), bad
