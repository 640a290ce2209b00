"""Rendered multi-person video with ground truth, for tracking: people of the synthetic set walking over a background.

    from reid_htg.data.scenes import render_scene
    scene = render_scene(frames=300, people=8, seed=1)   # seed 0 draws the synthetic training set's first identities
    scene.frames[0]        # (H, W, 3) uint8 RGB
    scene.boxes            # DataFrame: frame, person, x1, y1, x2, y2, visibility, scored, detected

Each person is an identity of :mod:`reid_htg.data.synthetic` (drawn from ``seed``, so with any seed
but the synthetic set's own they are people no model here was trained on), redrawn every frame
(pose, colour noise) and composited onto one static street by its silhouette. They walk left and
right along a ground band, at a depth that sets their size, with a new speed every 20-60 frames
(sometimes standing, sometimes turning back), turning at the frame's edges: paths cross many times,
nearer people hide farther ones, and a tracker cannot tell who is who from motion alone. With ``palette``
the people dress from a few shared colours, and telling them apart takes more than one colour.

``boxes`` has one row per person per frame: the tight box of the silhouette, clipped to the frame,
and the fraction of the silhouette left visible after occlusion. ``detected`` marks the rows a
detector would report (visibility >= ``min_visibility``, minus a random ``miss_rate``); trackers
get those rows as detections (box corners jittered by ``jitter`` of the box size) and are scored
against every row with visibility >= ``min_visibility``. Clearly not real video: figures on it
compare encoders, they say nothing about a real tracker's accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reid_htg.data.synthetic import CAMERAS, _identity, render_person


@dataclass
class Scene:
    """A rendered sequence: ``frames`` (T, H, W, 3) uint8 RGB, ``boxes`` (ground truth) and ``detections``."""

    frames: np.ndarray
    boxes: pd.DataFrame
    detections: pd.DataFrame

    @property
    def ground_truth(self) -> pd.DataFrame:
        """The rows a tracker is scored on (visible enough to be detected)."""
        return self.boxes[self.boxes["scored"]].reset_index(drop=True)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A static street: sky-to-ground gradient, a few buildings, a textured pavement."""
    y = np.linspace(0, 1, h)[:, None, None]
    img = (1 - y) * np.array([150, 160, 175]) + y * np.array([95, 90, 85])
    img = np.broadcast_to(img, (h, w, 3)).copy()
    for _ in range(7):
        x0 = int(rng.integers(0, w - 40))
        bw, bh = int(rng.integers(40, 120)), int(rng.integers(h // 4, h // 2))
        img[max(0, int(h * 0.55) - bh):int(h * 0.55), x0:x0 + bw] = rng.integers(60, 200, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(
    frames: int = 300,
    people: int = 8,
    size: tuple[int, int] = (270, 480),
    seed: int = 0,
    min_visibility: float = 0.3,
    miss_rate: float = 0.05,
    jitter: float = 0.03,
    palette: int | None = None,
) -> Scene:
    """Render ``frames`` frames of ``people`` walking (see the module's docstring); ``size`` is (H, W).

    ``palette``: shirts, trousers and patches are drawn from this many shared colours, so that several people
    dress alike and differ in the combination, the pattern, the bag or the height (a crowd in similar clothes);
    None: every colour is a person's own. The scene is otherwise the same as without it.
    """
    if frames < 1 or people < 1:
        raise ValueError(f"frames and people must be >= 1, got {frames} and {people}")
    h, w = size
    if h < 120 or w < 120:
        raise ValueError(f"size must be at least 120 x 120 pixels, got {size}")
    if not 0 <= min_visibility <= 1 or not 0 <= miss_rate < 1 or jitter < 0:
        raise ValueError("min_visibility in [0, 1], miss_rate in [0, 1) and jitter >= 0, please")
    rng = np.random.default_rng(seed)
    idents = [_identity(rng) for _ in range(people)]
    if palette is not None:
        if palette < 1:
            raise ValueError(f"palette must be >= 1 colours, got {palette}")
        prng = np.random.default_rng([seed, 1])  # apart from the scene's own draws: the same walks, poses and noise
        colours = prng.integers(20, 236, (palette, 3))
        for ident in idents:
            for part in ("shirt", "trousers", "patch"):
                ident[part] = colours[prng.integers(0, palette)]
    background = _background(h, w, rng)
    ground = (0.62 * h, 0.97 * h)  # the band of foot positions, far to near
    tall = (0.32 * h, 0.52 * h)  # a person's height at the far and the near edge of the band
    x = rng.uniform(0.05 * w, 0.95 * w, people)
    foot = rng.uniform(*ground, people)
    vx, vy = np.zeros(people), np.zeros(people)
    next_change = np.zeros(people, int)
    cam = CAMERAS[0]
    out = np.empty((frames, h, w, 3), np.uint8)
    rows = []
    for t in range(frames):
        for i in np.flatnonzero(next_change <= t):  # a new pace: sometimes standing, sometimes turning back
            speed = 0.0 if rng.random() < 0.15 else rng.uniform(0.8, 3.0)
            direction = np.sign(vx[i]) if vx[i] and rng.random() < 0.7 else rng.choice([-1.0, 1.0])
            vx[i], vy[i] = direction * speed, rng.uniform(-0.3, 0.3)
            next_change[i] = t + int(rng.integers(20, 61))
        x += vx
        foot = np.clip(foot + vy, *ground)
        turn = (x < 0.03 * w) | (x > 0.97 * w)
        vx[turn] = np.where(x[turn] < w / 2, 1, -1) * np.abs(vx[turn])
        frame = background.astype(np.float32)
        owner = np.full((h, w), -1, int)
        area = np.zeros(people)
        boxes = np.zeros((people, 4))
        for i in np.argsort(foot):  # far first: nearer people are drawn over them
            ph = int(round(tall[0] + (tall[1] - tall[0]) * (foot[i] - ground[0]) / (ground[1] - ground[0])))
            pw = max(ph // 2, 8)
            sprite, alpha = render_person(idents[i], cam, rng, (ph, pw), with_mask=True)
            top, left = int(round(foot[i])) - ph, int(round(x[i])) - pw // 2
            ys, xs = slice(max(top, 0), min(top + ph, h)), slice(max(left, 0), min(left + pw, w))
            sy, sx = slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left)
            a = alpha[sy, sx, None]
            frame[ys, xs] = a * np.asarray(sprite, np.float32)[sy, sx] + (1 - a) * frame[ys, xs]
            solid = alpha[sy, sx] > 0.5
            owner[ys, xs][solid] = i
            area[i] = (alpha > 0.5).sum()
            rr, cc = np.nonzero(alpha > 0.5)
            boxes[i] = (left + cc.min(), top + rr.min(), left + cc.max() + 1, top + rr.max() + 1) if len(rr) else (left, top, left + pw, top + ph)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
        visible = np.bincount(owner[owner >= 0], minlength=people)
        for i in range(people):
            x1, y1, x2, y2 = np.clip(boxes[i], 0, [w, h, w, h])
            vis = float(visible[i] / area[i]) if area[i] else 0.0
            if x2 - x1 < 2 or y2 - y1 < 2:
                vis = 0.0
            rows.append((t, i, x1, y1, x2, y2, vis))
    boxes = pd.DataFrame(rows, columns=["frame", "person", "x1", "y1", "x2", "y2", "visibility"])
    boxes["scored"] = boxes["visibility"] >= min_visibility
    boxes["detected"] = boxes["scored"] & (rng.random(len(boxes)) >= miss_rate)
    det = boxes[boxes["detected"]].copy()
    bw, bh = (det["x2"] - det["x1"]).to_numpy(), (det["y2"] - det["y1"]).to_numpy()
    noise = rng.normal(0, jitter, (len(det), 4)) * np.stack([bw, bh, bw, bh], axis=1)
    corners = det[["x1", "y1", "x2", "y2"]].to_numpy() + noise
    corners[:, 2] = np.maximum(corners[:, 2], corners[:, 0] + 2)
    corners[:, 3] = np.maximum(corners[:, 3], corners[:, 1] + 2)
    det[["x1", "y1", "x2", "y2"]] = corners
    det["score"] = np.clip(0.9 + rng.normal(0, 0.03, len(det)), 0.5, 1.0)
    return Scene(out, boxes, det[["frame", "person", "x1", "y1", "x2", "y2", "score"]].reset_index(drop=True))
