"""A deterministic synthetic re-ID set, generated on the fly: clearly not real data.

Each identity is a stick person with its own shirt and trouser colours, a
shirt pattern (plain, stripes, a chest patch), a bag on one side or none, and a
height. Each camera changes colour balance, light, blur, scale and
background, so that matching across cameras has to look past the camera to the
person, as in real re-ID. The set is written in the Market-1501 layout
(``bounding_box_train/``, ``query/``, ``bounding_box_test/``, names
``PPPP_cC_NNNNNN.png``) and read back with :func:`reid_htg.data.readers.read_market1501`,
so it goes through exactly the code paths of a real dataset.

It exists so that ``python tools/train_reid.py`` runs with no download in a
few minutes on a CPU, and so that tests have images a small model can learn.
Numbers measured on it say nothing about real re-ID accuracy.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from reid_htg.data.readers import read_market1501
from reid_htg.data.registry import register

# Per-camera look: RGB gain, brightness, blur radius, person scale, background.
CAMERAS = (
    dict(gain=(1.0, 1.0, 1.0), light=1.0, blur=0.0, scale=1.0, bg=(110, 110, 105)),
    dict(gain=(1.15, 1.0, 0.8), light=0.8, blur=0.8, scale=0.85, bg=(70, 80, 95)),
    dict(gain=(0.85, 1.0, 1.2), light=1.2, blur=0.4, scale=0.92, bg=(140, 130, 110)),
    dict(gain=(1.0, 0.9, 1.0), light=0.65, blur=1.2, scale=0.8, bg=(60, 60, 60)),
)


def _identity(rng: np.random.Generator) -> dict:
    return dict(
        shirt=rng.integers(20, 236, 3),
        trousers=rng.integers(20, 236, 3),
        pattern=int(rng.integers(0, 3)),
        patch=rng.integers(20, 236, 3),
        bag=int(rng.integers(0, 3)),  # none, left, right
        height=float(rng.uniform(0.85, 1.0)),
        skin=rng.integers(150, 230, 3),
    )


def render_person(ident: dict, cam: dict, rng: np.random.Generator, size: tuple[int, int] = (64, 32), with_mask: bool = False):
    """One image of ``ident`` seen by camera ``cam``; ``size`` is (height, width).

    ``with_mask=True`` also returns the person's silhouette, an (H, W) float32 alpha in [0, 1] (for
    compositing the person onto a scene); the image itself, and every draw from ``rng``, are the same.
    """
    h, w = size
    big_h, big_w = h * 2, w * 2  # draw at 2x and downsample for smooth edges
    bg = np.array(cam["bg"]) + rng.integers(-15, 16, 3)
    img = Image.new("RGB", (big_w, big_h), tuple(int(c) for c in np.clip(bg, 0, 255)))
    mask = Image.new("L", (big_w, big_h), 0) if with_mask else None
    d = _Both(ImageDraw.Draw(img), ImageDraw.Draw(mask) if with_mask else None)
    s = cam["scale"] * ident["height"] * float(rng.uniform(0.93, 1.05))
    ph = big_h * 0.92 * s
    cx = big_w / 2 + rng.uniform(-0.08, 0.08) * big_w
    top = big_h - ph - rng.uniform(0, 0.05) * big_h
    bw = big_w * 0.42 * s

    def col(c):
        return tuple(int(v) for v in np.clip(np.asarray(c) + rng.integers(-10, 11, 3), 0, 255))

    head_r = ph * 0.08
    d.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=col(ident["skin"]))
    t0, t1 = top + 2 * head_r, top + ph * 0.55
    d.rectangle([cx - bw / 2, t0, cx + bw / 2, t1], fill=col(ident["shirt"]))
    if ident["pattern"] == 1:
        for y in np.arange(t0, t1, (t1 - t0) / 5)[1::2]:
            d.rectangle([cx - bw / 2, y, cx + bw / 2, y + (t1 - t0) / 10], fill=col(ident["patch"]))
    elif ident["pattern"] == 2:
        d.rectangle([cx - bw / 5, t0 + (t1 - t0) * 0.2, cx + bw / 5, t0 + (t1 - t0) * 0.55], fill=col(ident["patch"]))
    spread = rng.uniform(0.05, 0.2) * bw
    leg_w = bw * 0.4
    for side in (-1, 1):
        x = cx + side * (bw / 4 + spread / 2)
        d.rectangle([x - leg_w / 2, t1, x + leg_w / 2, top + ph], fill=col(ident["trousers"]))
    if ident["bag"]:
        side = -1 if ident["bag"] == 1 else 1
        x = cx + side * (bw / 2 + bw * 0.15)
        d.rectangle([x - bw * 0.15, t0 + (t1 - t0) * 0.4, x + bw * 0.15, t1 + (t1 - t0) * 0.2], fill=col((60, 40, 30)))
    if cam["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(cam["blur"] * 2))
    img = img.resize((w, h), Image.BILINEAR)
    a = np.asarray(img).astype(np.float32) * np.asarray(cam["gain"]) * cam["light"] * rng.uniform(0.9, 1.1)
    a += rng.normal(0, 4, a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if not with_mask:
        return out
    return out, np.asarray(mask.resize((w, h), Image.BILINEAR), np.float32) / 255.0


class _Both:
    """Draws each shape on the image and, when there is one, in white on the mask (the silhouette)."""

    def __init__(self, image_draw, mask_draw):
        self.image_draw, self.mask_draw = image_draw, mask_draw

    def ellipse(self, box, fill):
        self.image_draw.ellipse(box, fill=fill)
        if self.mask_draw is not None:
            self.mask_draw.ellipse(box, fill=255)

    def rectangle(self, box, fill):
        self.image_draw.rectangle(box, fill=fill)
        if self.mask_draw is not None:
            self.mask_draw.rectangle(box, fill=255)


def generate_synthetic(
    root: str,
    num_train_ids: int = 100,
    num_test_ids: int = 50,
    num_cams: int = 3,
    images_per_cam: int = 3,
    size: tuple[int, int] = (64, 32),
    seed: int = 0,
) -> None:
    """Write the synthetic set under ``root`` (Market-1501 layout).

    Training identities get ``images_per_cam`` images in each camera. Test
    identities get one query image in camera 0 and ``images_per_cam`` gallery
    images in each other camera.
    """
    if not 2 <= num_cams <= len(CAMERAS):
        raise ValueError(f"num_cams must be in [2, {len(CAMERAS)}], got {num_cams}")
    rng = np.random.default_rng(seed)
    idents = [_identity(rng) for _ in range(num_train_ids + num_test_ids)]
    folders = {k: os.path.join(root, k) for k in ("bounding_box_train", "query", "bounding_box_test")}
    for f in folders.values():
        os.makedirs(f, exist_ok=True)
    n = 0
    for i, ident in enumerate(idents):
        pid = i + 1
        test = i >= num_train_ids
        for c in range(num_cams):
            shots = [("query", 1)] if (test and c == 0) else [("bounding_box_test" if test else "bounding_box_train", images_per_cam)]
            for folder, count in shots:
                for _ in range(count):
                    n += 1
                    im = render_person(ident, CAMERAS[c], rng, size)
                    im.save(os.path.join(folders[folder], f"{pid:04d}_c{c + 1}_{n:06d}.png"))


def read_synthetic(root: str, **params) -> pd.DataFrame:
    """The synthetic set under ``root``, generated there first if absent.

    ``params`` are :func:`generate_synthetic`'s. An existing set is read as it
    is when no parameter is given, and refused when the given ones differ from
    those it was made with.
    """
    if "size" in params:
        params["size"] = list(params["size"])
    os.makedirs(root, exist_ok=True)
    with _exclusive(os.path.join(root, ".synthetic.lock")):  # several processes (torchrun ranks) on one root: one generates
        _make_synthetic(root, params)
    df = read_market1501(root, name="synthetic")
    df.attrs["name"] = "synthetic"
    return df


@contextlib.contextmanager
def _exclusive(path: str):
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; without fcntl, no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_synthetic(root: str, params: dict) -> None:
    manifest = os.path.join(root, "synthetic.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            made = json.load(fh)
        differ = {k: v for k, v in params.items() if made.get(k) != v}
        if differ:
            raise ValueError(
                f"synthetic set at {root!r} was generated with {made}, not {differ}; delete the folder or pick another --data-root"
            )
    else:
        made = {k: v.default for k, v in inspect.signature(generate_synthetic).parameters.items() if k != "root"}
        made["size"] = list(made["size"])
        unknown = set(params) - set(made)
        if unknown:
            raise ValueError(f"unknown synthetic parameter(s) {sorted(unknown)}; valid: {sorted(made)}")
        made.update(params)
        generate_synthetic(root, **{**made, "size": tuple(made["size"])})
        tmp = f"{manifest}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(made, fh)
        os.replace(tmp, manifest)  # written last: a half-generated folder is regenerated


register("synthetic", read_synthetic, root_is_folder=False)  # generated into its root on first use
