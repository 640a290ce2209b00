"""The tracker appearance encoder (boxmot's AppearanceEncoder, BoT-SORT's inference), the rendered scenes and the MOT scores."""
import numpy as np
import pandas as pd
import pytest
import torch

from reid_htg.checkpoint import save_checkpoint
from reid_htg.data.scenes import render_scene
from reid_htg.models import ReIDNet
from reid_htg.tracking import TrackerEncoder, crop_boxes, iou_distances


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    args = dict(backbone="resnet10t", num_classes=5)
    model = ReIDNet(**args)
    model.train()
    with torch.no_grad():  # BatchNorm statistics off their defaults
        for _ in range(3):
            model(torch.rand(8, 3, 64, 32) * 3)
    path = str(tmp_path_factory.mktemp("enc") / "model.pt")  # the encoder's checkpoint: encoder.path
    save_checkpoint({"model": model.state_dict(), "config": {}, "model_args": args,
                     "data_args": {"dataset": "synthetic", "root": "x", "args": {}, "height": 64, "width": 32}}, path)
    enc = TrackerEncoder.load(path)
    enc.path = path
    return enc


def _frame(seed=0, h=120, w=160):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_crops_are_clipped_to_the_frame_and_empty_boxes_are_black():
    img = _frame()
    boxes = np.array([[-20, -10, 40, 60], [150, 100, 400, 300], [30, 30, 30, 80], [500, 500, 600, 600], [np.nan, 0, 10, 10], [10.4, 20.6, 50.5, 99.5]])
    crops = crop_boxes(img, boxes, (64, 32))
    assert crops.shape == (6, 64, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], crop_boxes(img, [[0, 0, 40, 60]], (64, 32))[0])  # the part inside the frame
    np.testing.assert_array_equal(crops[1], crop_boxes(img, [[150, 100, 160, 120]], (64, 32))[0])
    assert not crops[2].any() and not crops[3].any() and not crops[4].any()  # zero area, outside, NaN: black
    np.testing.assert_array_equal(crops[5], crop_boxes(img, [[10, 21, 50, 100]], (64, 32))[0])  # rounded to whole pixels
    assert crop_boxes(img, np.zeros((0, 4)), (64, 32)).shape == (0, 64, 32, 3)
    with pytest.raises(ValueError, match="N x 4"):
        crop_boxes(img, [[1, 2, 3]], (64, 32))
    with pytest.raises(ValueError, match="uint8"):
        crop_boxes(img.astype(np.float32), boxes, (64, 32))


def test_inference_is_bgr_unit_norm_and_each_row_its_own_crop(encoder):
    rgb = _frame(1)
    boxes = np.array([[10, 10, 50, 100, 0.9, 0], [60, 5, 100, 110, 0.8, 0], [0, 0, 0, 0, 0.5, 0]])  # BoT-SORT passes score, class too
    feats = encoder.inference(rgb[:, :, ::-1].copy(), boxes)
    assert feats.shape == (3, encoder.embedding_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(feats, encoder.encode_rgb(rgb, boxes), atol=1e-6)
    alone = encoder.embedder.embed_arrays(crop_boxes(rgb, boxes[1:2], encoder.size))
    np.testing.assert_allclose(feats[1], alone[0] / np.linalg.norm(alone[0]), atol=1e-5)  # batching does not mix rows
    assert not np.allclose(encoder.inference(rgb, boxes), feats, atol=1e-3)  # the colour order matters
    assert encoder.inference(rgb, np.zeros((0, 4))).shape == (0, encoder.embedding_dim)


def test_boxmot_protocol_one_forward_per_frame(encoder):
    boxmot = pytest.importorskip("boxmot")  # noqa: F841
    from boxmot.reid.protocols import AppearanceEncoder, EncoderRequirements
    from boxmot.structures import Detections, Frame
    from boxmot.structures.geometry import Boxes

    assert isinstance(encoder, AppearanceEncoder)
    assert isinstance(encoder.requirements, EncoderRequirements) and not encoder.requirements.masks
    frames, dets = [], []
    for t, n in enumerate([3, 0, 2]):
        img = torch.from_numpy(_frame(t)).permute(2, 0, 1).contiguous()
        frames.append(Frame(image=img, sample_id=f"f{t}"))
        boxes = torch.tensor([[5.0 + 10 * i, 5.0, 45.0 + 10 * i, 100.0] for i in range(n)]).reshape(-1, 4)
        dets.append(Detections(geometry=Boxes(boxes), scores=torch.full((n,), 0.9), class_ids=torch.zeros(n, dtype=torch.int64), sample_id=f"f{t}"))
    calls = []
    run = encoder.embedder._run
    encoder.embedder._run = lambda batch: calls.append(len(batch)) or run(batch)
    try:
        out = encoder.encode(frames, dets)
    finally:
        encoder.embedder._run = run
    assert calls == [3, 2]  # one batched forward per frame with detections
    assert [tuple(o.shape) for o in out] == [(3, encoder.embedding_dim), (0, encoder.embedding_dim), (2, encoder.embedding_dim)]
    for o, f, d in zip(out, frames, dets):
        assert o.dtype == torch.float32 and o.device.type == "cpu" and o.is_contiguous()
        np.testing.assert_allclose(o.numpy(), encoder.encode_rgb(f.image.permute(1, 2, 0).numpy(), d.geometry.values.numpy()), atol=1e-6)
    with pytest.raises(ValueError, match="frames but"):
        encoder.encode(frames, dets[:2])


def test_scene_is_deterministic_with_occlusion_and_ground_truth():
    a, b = render_scene(frames=30, people=5, seed=3), render_scene(frames=30, people=5, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.detections, b.detections)
    assert a.frames.shape == (30, 270, 480, 3) and a.frames.dtype == np.uint8
    assert len(a.boxes) == 30 * 5 and a.boxes["visibility"].between(0, 1).all()
    assert (a.boxes["visibility"] < 0.99).any()  # somebody is partly hidden
    assert not (a.boxes["detected"] & ~a.boxes["scored"]).any()
    assert (a.detections["x2"] > a.detections["x1"]).all() and a.detections["score"].between(0, 1).all()
    assert not np.array_equal(render_scene(frames=2, people=5, seed=4).frames[0], a.frames[0])
    with pytest.raises(ValueError, match="frames and people"):
        render_scene(frames=0)
    alike = render_scene(frames=30, people=5, seed=3, palette=2)
    pd.testing.assert_frame_equal(alike.boxes, a.boxes)  # the same walks: only the clothes change
    assert not np.array_equal(alike.frames, a.frames)


def test_iou_distances_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    hyp = np.array([[0, 0, 10, 5], [0, 0, 10, 10], [100, 100, 110, 110]])
    d = iou_distances(gt, hyp)
    assert d[0, 0] == pytest.approx(0.5) and d[0, 1] == 0
    assert np.isnan(d[1]).all() and np.isnan(d[0, 2])
    assert iou_distances(np.zeros((0, 4)), hyp).shape == (0, 3)


def test_mot_scores_count_switches():
    pytest.importorskip("motmetrics")
    from reid_htg.tracking import mot_scores

    gt = render_scene(frames=20, people=3, seed=0).ground_truth
    perfect = gt.rename(columns={"person": "track"})[["frame", "track", "x1", "y1", "x2", "y2"]]
    s = mot_scores(gt, perfect)
    assert s["idf1"] == 1 and s["id_switches"] == 0 and s["mota"] == 1 and s["frames"] == 20
    swapped = perfect.copy()
    late = swapped["frame"] >= 10
    swapped.loc[late, "track"] = swapped.loc[late, "track"].map({0: 1, 1: 0, 2: 2})  # 0 and 1 trade identities halfway
    s = mot_scores(gt, swapped)
    assert s["id_switches"] == 2 and s["idf1"] < 0.9 and s["mota"] < 1


def test_a_real_tracker_follows_a_short_scene(encoder):
    pytest.importorskip("boxmot")
    pytest.importorskip("motmetrics")
    from reid_htg.tracking import mot_scores, track_scene

    scene = render_scene(frames=40, people=3, seed=2)
    for name in ("botsort", "strongsort"):
        tracks = track_scene(scene, encoder, name)
        assert set(tracks.columns) == {"frame", "track", "x1", "y1", "x2", "y2"} and len(tracks)
        s = mot_scores(scene.ground_truth, tracks)
        assert s["mota"] > 0.5 and s["idf1"] > 0.5, (name, s)  # boxes followed; the benchmark compares encoders


def test_an_onnx_encoder_gives_the_checkpoints_features(encoder, tmp_path):
    pytest.importorskip("onnxruntime")
    from reid_htg.serve.export import export_onnx

    export_onnx(encoder.path, str(tmp_path / "m.onnx"))
    onnx = TrackerEncoder.load(str(tmp_path / "m.onnx"))
    rgb, boxes = _frame(5), np.array([[3, 4, 60, 110], [70, 0, 150, 119], [-5, -5, 2, 2]])
    a, b = encoder.encode_rgb(rgb, boxes), onnx.encode_rgb(rgb, boxes)
    assert onnx.embedding_dim == encoder.embedding_dim and np.abs(a - b).max() <= 1e-4 and (a * b).sum(1).min() >= 0.99999
