"""Regressions of the tools and index probe: each input once lost data, mixed runs or answered wrongly without a word.

Table-driven where the shape allows: the input, the exit code (or exception), a word the message must contain,
and what must be left (or not be written).
"""
import errno
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_tool_here

from reid_htg.config import ConfigError, TrainConfig, load_config
from reid_htg.metrics import evaluate_class_level, evaluate_features
from reid_htg.retrieval import GalleryIndex, GalleryIndexError


def _emb(tmp, n=30, d=8, **cols):
    np.savez(tmp / "emb.npz", embeddings=np.random.default_rng(0).standard_normal((n, d)).astype(np.float32),
             path=np.array([f"{i}.jpg" for i in range(n)]), fingerprint=np.array("abc"), **cols)
    return str(tmp / "emb.npz")


@pytest.mark.parametrize("params,word", [
    (["hnsw_m=0"], "hnsw_m=0 must be a whole number from 2"),  # FAISS aborted the process
    (["hnsw_m=-1"], "hnsw_m=-1"),  # FAISS hung
    (["ef_search=0"], "ef_search=0"),  # FAISS answered one wrong result per query
    (["nprobe=abc"], "nprobe='abc'"),
    (["ef_construction=2.5"], "ef_construction=2.5"),
])
def test_index_parameters_are_checked_before_faiss(tmp_path, params, word):
    res = run_tool_here("build_index.py", "--embeddings", _emb(tmp_path), "--out", tmp_path / "idx", "--index", "hnsw", *params, check=False)
    assert res.returncode == 2 and word in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "idx").exists()


def test_gallery_ids_are_whole_numbers_or_refused(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(GalleryIndexError, match=r"whole numbers, got \[1.5\]"):
        GalleryIndex.build(x, pd.DataFrame({"gallery_id": [1.0, 1.5, 3.0]}))
    with pytest.raises(GalleryIndexError, match="whole numbers"):
        GalleryIndex.build(x, pd.DataFrame({"gallery_id": ["a", "b", "c"]}))
    idx = GalleryIndex.build(x, pd.DataFrame({"gallery_id": [10.0, 11.0, 12.0]}))  # whole floats are ids as they are
    assert idx.meta["gallery_id"].tolist() == [10, 11, 12]
    with pytest.raises(GalleryIndexError, match="whole numbers"):
        idx.delete([10.7])


def test_text_metadata_round_trips_with_its_type(tmp_path, rng):
    x = rng.standard_normal((4, 4)).astype(np.float32)
    meta = pd.DataFrame({"camera": ["007", "1e3", "nan", ""], "pid": [1, 2, 3, 4], "score": [0.5, 1.0, 2.5, 3.0]})
    GalleryIndex.build(x, meta).save(str(tmp_path / "idx"))
    back = GalleryIndex.load(str(tmp_path / "idx")).meta
    assert back["camera"].tolist() == ["007", "1e3", "nan", ""]
    assert back["pid"].tolist() == [1, 2, 3, 4] and back["score"].tolist() == [0.5, 1.0, 2.5, 3.0]


@pytest.mark.parametrize("column", ["query", "rank", "distance"])
def test_metadata_columns_that_a_search_result_uses_are_refused(rng, column):
    with pytest.raises(GalleryIndexError, match="names a search result uses"):
        GalleryIndex.build(rng.standard_normal((3, 4)).astype(np.float32), pd.DataFrame({column: [1, 2, 3]}))


@pytest.mark.parametrize("scale", [1e20, 1e-20])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_evaluation_works_for_every_finite_scale(rng, scale, metric):
    qf, gf = rng.standard_normal((20, 8)).astype(np.float32), rng.standard_normal((60, 8)).astype(np.float32)
    qp, gp = rng.integers(0, 5, 20), rng.integers(0, 5, 60)
    ref = evaluate_features(qf, gf, qp, gp, np.zeros(20, int), np.ones(60, int), metric=metric)
    for dtype in (torch.float32, torch.float64):  # a float32 squared norm of 1e20-sized features overflowed
        got = evaluate_features(qf * scale, gf * scale, qp, gp, np.zeros(20, int), np.ones(60, int), metric=metric, dtype=dtype)
        assert got.mAP == ref.mAP and np.array_equal(got.cmc, ref.cmc)
    tf, tp = rng.standard_normal((40, 8)).astype(np.float32), rng.integers(0, 4, 40)
    a, b = evaluate_class_level(tf, tp, metric=metric), evaluate_class_level(tf * scale, tp, metric=metric)
    assert a.as_dict()["recall@1"] == b.as_dict()["recall@1"] and a.as_dict()["map@r"] == pytest.approx(b.as_dict()["map@r"])


def test_eval_tool_on_huge_features(tmp_path, rng):
    qf, gf = rng.standard_normal((10, 4)) * 1e20, rng.standard_normal((30, 4)) * 1e20
    np.savez(tmp_path / "f.npz", qf=qf.astype(np.float32), gf=gf.astype(np.float32), q_pids=rng.integers(0, 3, 10),
             g_pids=rng.integers(0, 3, 30), q_camids=np.zeros(10, int), g_camids=np.ones(30, int))
    res = run_tool_here("eval.py", "--features", tmp_path / "f.npz", "--metric", "euclidean", "--json", tmp_path / "r.json")
    assert 0 <= json.loads((tmp_path / "r.json").read_text())["mAP"] <= 1 and res.returncode == 0


def test_duplicate_and_malformed_config_keys_are_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("epochs: 2\ndata:\n  p: 4\n  p: 8\n")
    with pytest.raises(ConfigError, match="'p' is given twice"):
        load_config(TrainConfig, str(tmp_path / "dup.yaml"))
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML at line"):
        load_config(TrainConfig, str(tmp_path / "bad.yaml"))
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="bin.yaml: not a text file"):
        load_config(TrainConfig, str(tmp_path / "bin.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, None, ["model.keypoint_blocks=[3,4"])
    res = run_tool_here("train_reid.py", "--config", tmp_path / "dup.yaml", "--output-dir", tmp_path / "r", check=False)
    assert res.returncode == 2 and "given twice" in res.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,word", [
    (["--batch-size", "-3"], "must be >= 1"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--batch-size", "many"], "not a whole number"),
])
def test_counts_are_checked_where_they_enter(tmp_path, args, word):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (16, 32)).save(tmp_path / f"{i}.png")
    res = run_tool_here("embed.py", "--checkpoint", tmp_path / "x.pt", "--images", tmp_path, "--out", tmp_path / "e.npz", *args, check=False)
    assert res.returncode == 2 and word in res.stderr and not (tmp_path / "e.npz").exists()
    res = run_tool_here("eval.py", "--features", tmp_path / "f.npz", "--max-rank", "0", check=False)
    assert res.returncode == 2 and "must be >= 1" in res.stderr


def test_export_onto_a_full_disk_keeps_the_working_model(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from reid_htg.checkpoint import save_checkpoint
    from reid_htg.models import ReIDNet

    args = dict(backbone="resnet10t", num_classes=3, keypoint_blocks=())
    save_checkpoint({"model": ReIDNet(**args).state_dict(), "model_args": args, "config": {},
                     "data_args": dict(dataset="synthetic", root=".", args={}, height=32, width=16)}, str(tmp_path / "m.pt"))
    run_tool_here("export.py", "--checkpoint", tmp_path / "m.pt", "--out", tmp_path / "m.onnx")
    good = (tmp_path / "m.onnx").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.onnx.tmp"))

    monkeypatch.setattr("onnx.save", full)
    res = run_tool_here("export.py", "--checkpoint", tmp_path / "m.pt", "--out", tmp_path / "m.onnx", check=False)
    assert res.returncode == 2 and "No space left on device" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "m.onnx").read_bytes() == good  # the working model is untouched
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.pt"]  # and no temporary file is left


def test_queries_from_class_folders_are_named_by_their_path(tmp_path):
    from PIL import Image

    from reid_htg.checkpoint import save_checkpoint
    from reid_htg.models import ReIDNet

    for cls in ("a", "b"):
        (tmp_path / "q" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 32), (40 * i, 100, 200 if cls == "a" else 0)).save(tmp_path / "q" / cls / f"{i}.png")
    args = dict(backbone="resnet10t", num_classes=3, keypoint_blocks=())
    save_checkpoint({"model": ReIDNet(**args).state_dict(), "model_args": args, "config": {},
                     "data_args": dict(dataset="synthetic", root=".", args={}, height=32, width=16)}, str(tmp_path / "m.pt"))
    run_tool_here("embed.py", "--checkpoint", tmp_path / "m.pt", "--images", tmp_path / "q", "--out", tmp_path / "g.npz")
    run_tool_here("build_index.py", "--embeddings", tmp_path / "g.npz", "--out", tmp_path / "idx")
    run_tool_here("search.py", "--index", tmp_path / "idx", "--images", tmp_path / "q", "--checkpoint", tmp_path / "m.pt", "--k", "1",
                  "--csv", tmp_path / "t.csv")
    names = pd.read_csv(tmp_path / "t.csv")["query"]
    assert sorted(names) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]


@pytest.mark.parametrize("override,word", [
    ("seed=100000000000000000000000", "seed="),
    ("data.height=100000000000000000000000", "data.height"),
    ("epochs=10000000", "epochs="),
    ("name=../../elsewhere", "plain folder name"),
])
def test_config_numbers_and_names_are_checked_where_they_enter(override, word):
    with pytest.raises(ConfigError, match=word):
        load_config(TrainConfig, None, [override])


def test_paths_of_the_wrong_kind_are_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    res = run_tool_here("eval.py", "--checkpoint", tmp_path / "run", check=False)
    assert res.returncode == 2 and "did you mean" in res.stderr and "last.pt" in res.stderr
    from reid_htg.data.decode import read_rgb

    (tmp_path / "x.png").mkdir()
    with pytest.raises(OSError, match="is a folder"):
        read_rgb(str(tmp_path / "x.png"), (32, 16))


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    from PIL import Image

    from reid_htg.data.decode import MAX_PIXELS, read_rgb

    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # a few KB on disk, 81 megapixels unpacked
    assert os.path.getsize(tmp_path / "bomb.png") < 200_000 and 9000 * 9000 > MAX_PIXELS
    with pytest.raises(OSError, match="over the limit"):
        read_rgb((tmp_path / "bomb.png").read_bytes(), (32, 16))


def test_embeddings_files_with_columns_of_the_wrong_shape_are_refused(tmp_path):
    from reid_htg.retrieval.files import EmbeddingsFileError, load_embeddings

    np.savez(tmp_path / "a.npz", embeddings=np.zeros((3, 4), np.float32), path=np.array("one"))
    with pytest.raises(EmbeddingsFileError, match="one value per embedding"):
        load_embeddings(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", embeddings=np.zeros((3, 4), np.float32), pid=np.zeros((3, 2)))
    with pytest.raises(EmbeddingsFileError, match="one value per embedding"):
        load_embeddings(str(tmp_path / "b.npz"))


def test_service_metadata_must_round_trip(tmp_path):
    from reid_htg.serve.store import DurableGallery

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    GalleryIndex.build(x, pd.DataFrame({"note": ["a", "b", "c", "d"]})).save(str(tmp_path / "idx"))
    g = DurableGallery(str(tmp_path / "svc"), str(tmp_path / "idx"))
    for bad in (float("nan"), [1, 2], {"a": 1}, 2**70):
        with pytest.raises(ValueError, match="a field must be"):
            g.add(x[:1], [{"note": bad}])
    assert len(g.index) == 4 and g.log_length() == 0  # nothing written
    g.close()
