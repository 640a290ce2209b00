"""A re-ID model as a multi-object tracker's appearance encoder: boxmot's ``AppearanceEncoder`` and BoT-SORT's ``inference``.

    from reid_htg.tracking import TrackerEncoder
    encoder = TrackerEncoder.load("runs/synthetic_resnet18/last.pt")   # or model.onnx, model.xml (OpenVINO)

    # boxmot 25 (pip install -e ".[track]"): a tracker that uses appearance, fed by this encoder
    from boxmot import create_tracker
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.trackers.specs import TrackerSpec
    pipeline = TrackingPipeline(detector=None, tracker=create_tracker(TrackerSpec(name="botsort")), reid=encoder)
    result = pipeline.step_detections(frame, detections)            # boxmot Frame (RGB) and Detections

    # BoT-SORT's own interface (FastReIDInterface.inference): a BGR frame, N x 4+ tlbr boxes
    features = encoder.inference(bgr_image, boxes)                  # (N, D) float32, rows of norm 1

Crops: each box (x1, y1, x2, y2 in pixels) is rounded to whole pixels and clipped to the frame; a
box with no pixel left (empty, zero area, wholly outside the frame, not finite) is embedded as a
black crop, as boxmot's own encoders do, so every box gets a finite unit vector. Crops are resized
to the model's training size (bilinear, as training reads images) and all crops of one frame go
through the model in one batched forward. Colour order: boxmot frames are RGB (``[3, H, W]``
uint8 tensors), BoT-SORT's ``inference`` takes OpenCV's BGR (``(H, W, 3)`` uint8); ``encode_rgb``
takes an ``(H, W, 3)`` RGB array.

:func:`track_scene` runs a boxmot tracker over a rendered :class:`reid_htg.data.scenes.Scene`
(ground-truth boxes as detections) and :func:`mot_scores` scores it with py-motmetrics (IDF1,
identity switches, MOTA); both need the ``track`` extra.
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from reid_htg.utils.extras import install_hint

TRACK_EXTRA = "the tracker interface needs the track extra: " + install_hint("track")


def _boxmot():
    try:
        import boxmot  # noqa: F401
    except ImportError:
        raise ImportError(TRACK_EXTRA) from None
    return boxmot


def crop_boxes(image: np.ndarray, boxes, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 crops of ``image`` ((H, W, 3) uint8) at ``boxes`` (N x 4+, x1 y1 x2 y2), resized to ``size`` = (H, W).

    Boxes are rounded and clipped to the frame; a box with no pixel left gives a black crop.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, *size, 3), np.uint8)
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes must be N x 4 (x1, y1, x2, y2, then anything), got shape {boxes.shape}")
    ih, iw = image.shape[:2]
    out = np.zeros((len(boxes), *size, 3), np.uint8)
    for n, (x1, y1, x2, y2) in enumerate(boxes[:, :4]):
        if not np.isfinite([x1, y1, x2, y2]).all():
            continue
        x1, y1 = max(int(round(x1)), 0), max(int(round(y1)), 0)
        x2, y2 = min(int(round(x2)), iw), min(int(round(y2)), ih)
        if x2 > x1 and y2 > y1:
            out[n] = np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((size[1], size[0]), Image.BILINEAR))
    return out


class TrackerEncoder:
    """A re-ID model (checkpoint, ONNX or OpenVINO) embedding a tracker's detections; see the module's docstring."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.size = tuple(embedder.size)

    @classmethod
    def load(cls, path: str, device=None) -> "TrackerEncoder":
        """From a checkpoint of tools/train_reid.py, an ONNX export (``.onnx``) or an OpenVINO IR (``.xml``)."""
        from reid_htg.serve.embedder import Embedder

        return cls(Embedder.load(path, device))

    @property
    def embedding_dim(self) -> int:
        return self.embedder.dim

    @property
    def requirements(self):
        """boxmot's ``EncoderRequirements``: boxes only, no masks."""
        _boxmot()
        from boxmot.reid.protocols import EncoderRequirements

        return EncoderRequirements(masks=False)

    def encode_rgb(self, image: np.ndarray, boxes) -> np.ndarray:
        """(N, D) float32 unit-norm features of ``boxes`` in an (H, W, 3) uint8 RGB ``image``: one forward."""
        crops = crop_boxes(image, boxes, self.size)
        if not len(crops):
            return np.zeros((0, self.embedding_dim), np.float32)
        feats = self.embedder.embed_arrays(crops, batch_size=len(crops)).astype(np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        if not np.isfinite(feats).all() or (norms == 0).any():
            raise ValueError("the model returned a non-finite or zero feature; it cannot be normalised")
        return np.ascontiguousarray(feats / norms, dtype=np.float32)

    def inference(self, image: np.ndarray, boxes) -> np.ndarray:
        """BoT-SORT's interface: ``image`` (H, W, 3) uint8 **BGR** (OpenCV), ``boxes`` N x 4+ tlbr; (N, D) float32."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) BGR, got shape {image.shape}")
        return self.encode_rgb(np.ascontiguousarray(image[:, :, ::-1]), boxes)

    def encode(self, frames, detections) -> list:
        """boxmot's ``AppearanceEncoder.encode``: one float32 CPU ``[N, D]`` tensor per frame, aligned with its detections."""
        import torch

        if len(frames) != len(detections):
            raise ValueError(f"{len(frames)} frames but {len(detections)} detection batches")
        out = []
        for frame, dets in zip(frames, detections):
            if getattr(dets, "is_obb", False):
                raise ValueError("oriented boxes are not supported: a re-ID crop is an axis-aligned box")
            boxes = dets.geometry.values.detach().cpu().numpy()
            image = frame.image.detach().cpu().permute(1, 2, 0).numpy()  # [3, H, W] RGB -> (H, W, 3)
            out.append(torch.from_numpy(self.encode_rgb(image, boxes)).contiguous())
        return out


def track_scene(scene, encoder, tracker: str = "botsort", options: dict | None = None):
    """Run boxmot's ``tracker`` (with ``encoder`` for appearance) over ``scene``'s detections.

    Returns a DataFrame of the tracker's output: frame, track, x1, y1, x2, y2.
    """
    _boxmot()
    import pandas as pd
    import torch
    from boxmot import create_tracker
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.structures import Detections, Frame
    from boxmot.structures.geometry import Boxes
    from boxmot.trackers.specs import TrackerSpec

    spec = TrackerSpec(name=tracker, options=tuple(sorted((options or {}).items())))
    log = logging.getLogger("boxmot")
    level = log.level
    log.setLevel(logging.WARNING)  # boxmot logs every tracker's settings at INFO
    try:
        made = create_tracker(spec)
    finally:
        log.setLevel(level)
    pipeline = TrackingPipeline(detector=None, tracker=made, reid=encoder)
    by_frame = dict(tuple(scene.detections.groupby("frame")))
    rows = []
    for t, image in enumerate(scene.frames):
        sample = f"frame{t:06d}"
        frame = Frame(image=torch.from_numpy(image).permute(2, 0, 1).contiguous(), sample_id=sample, sequence_id="scene", frame_index=t)
        d = by_frame.get(t)
        boxes = np.zeros((0, 4), np.float32) if d is None else np.ascontiguousarray(d[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
        scores = np.zeros(0, np.float32) if d is None else d["score"].to_numpy(np.float32)
        dets = Detections(geometry=Boxes(torch.from_numpy(boxes)), scores=torch.from_numpy(scores),
                          class_ids=torch.zeros(len(boxes), dtype=torch.int64), sample_id=sample)
        tracks = pipeline.step_detections(frame, dets).tracks
        for tid, box in zip(tracks.track_ids.tolist(), tracks.geometry.values.tolist()):
            rows.append((t, int(tid), *box))
    return pd.DataFrame(rows, columns=["frame", "track", "x1", "y1", "x2", "y2"])


def iou_distances(gt: np.ndarray, hyp: np.ndarray, max_distance: float = 0.5) -> np.ndarray:
    """1 - IoU between x1 y1 x2 y2 boxes, NaN where IoU < 1 - ``max_distance`` (py-motmetrics' convention for "no match").

    Computed here because motmetrics 1.4's ``iou_matrix`` calls ``np.asfarray``, gone in NumPy 2.
    """
    gt, hyp = np.asarray(gt, np.float64).reshape(-1, 4), np.asarray(hyp, np.float64).reshape(-1, 4)
    lt = np.maximum(gt[:, None, :2], hyp[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], hyp[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    union = area(gt)[:, None] + area(hyp)[None, :] - inter
    d = 1 - np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    d[d > max_distance] = np.nan
    return d


def mot_scores(ground_truth, tracks) -> dict:
    """IDF1, identity switches, MOTA (py-motmetrics, IoU >= 0.5 to match) of ``tracks`` against ``ground_truth``.

    ``ground_truth``: frame, person, x1..y2 (e.g. ``Scene.ground_truth``); ``tracks``: frame, track, x1..y2.
    """
    try:
        import motmetrics as mm
    except ImportError:
        raise ImportError(TRACK_EXTRA) from None
    acc = mm.MOTAccumulator(auto_id=True)
    gt_by, hyp_by = dict(tuple(ground_truth.groupby("frame"))), dict(tuple(tracks.groupby("frame")))
    cols = ["x1", "y1", "x2", "y2"]
    for t in sorted(set(gt_by) | set(hyp_by)):
        g, h = gt_by.get(t), hyp_by.get(t)
        gids = [] if g is None else g["person"].tolist()
        hids = [] if h is None else h["track"].tolist()
        dist = iou_distances(np.zeros((0, 4)) if g is None else g[cols].to_numpy(), np.zeros((0, 4)) if h is None else h[cols].to_numpy())
        acc.update(gids, hids, dist)
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota", "num_frames"], name="scene")
    row = summary.iloc[0]
    return {"idf1": float(row["idf1"]), "id_switches": int(row["num_switches"]), "mota": float(row["mota"]), "frames": int(row["num_frames"])}
