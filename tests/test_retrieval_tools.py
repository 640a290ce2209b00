"""tools/embed.py -> tools/build_index.py -> tools/search.py on a tiny synthetic set with an untrained model."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_tool_here

from reid_htg.checkpoint import save_checkpoint
from reid_htg.data.synthetic import read_synthetic
from reid_htg.models import ReIDNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tool, *args, check=True):
    return run_tool_here(tool, *args, check=check)  # in this process (tests/conftest.py)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ret")
    root = str(tmp / "syn")
    read_synthetic(root, num_train_ids=4, num_test_ids=6, images_per_cam=2, num_cams=2)
    torch.manual_seed(0)
    args = dict(backbone="resnet18", num_classes=4, keypoint_blocks=())
    model = ReIDNet(**args)
    ckpt = str(tmp / "m.pt")
    save_checkpoint({"model": model.state_dict(), "model_args": args, "config": {},
                     "data_args": dict(dataset="synthetic", root=root, args={}, height=32, width=16)}, ckpt)
    return tmp, root, ckpt


def test_embed_build_search(setup):
    tmp, root, ckpt = setup
    g, q, idx = str(tmp / "g.npz"), str(tmp / "q.npz"), str(tmp / "idx")
    run("embed.py", "--checkpoint", ckpt, "--dataset", "synthetic", "--data-root", root, "--split", "gallery", "--out", g)
    run("embed.py", "--checkpoint", ckpt, "--dataset", "synthetic", "--data-root", root, "--split", "query", "--out", q)
    data = np.load(g)
    assert data["embeddings"].shape == (12, 512) and data["embeddings"].dtype == np.float32
    assert {"path", "pid", "camid", "fingerprint"} <= set(data.files)
    run("build_index.py", "--embeddings", g, "--out", idx, "--index", "flat")
    out = run("search.py", "--index", idx, "--embeddings", q, "--k", "3", "--csv", str(tmp / "t.csv"), "--png", str(tmp / "t.png"))
    table = pd.read_csv(tmp / "t.csv")
    assert list(table.columns[:4]) == ["query", "rank", "gallery_id", "distance"] and len(table) == 6 * 3
    assert (table.groupby("query")["distance"].apply(lambda d: d.is_monotonic_increasing)).all()
    assert os.path.getsize(tmp / "t.png") > 1000 and "picture" in out.stdout
    # queries straight from images with the same checkpoint
    qdir = os.path.join(root, "query")
    run("search.py", "--index", idx, "--images", qdir, "--checkpoint", ckpt, "--k", "2")


def test_search_refuses_other_model(setup):
    tmp, root, ckpt = setup
    g, idx = str(tmp / "g2.npz"), str(tmp / "idx2")
    run("embed.py", "--checkpoint", ckpt, "--images", os.path.join(root, "bounding_box_test"), "--out", g)
    run("build_index.py", "--embeddings", g, "--out", idx)
    other = ReIDNet(backbone="resnet18", num_classes=4, keypoint_blocks=())
    ck2 = str(tmp / "other.pt")
    save_checkpoint({"model": other.state_dict(), "model_args": dict(backbone="resnet18", num_classes=4, keypoint_blocks=()), "config": {},
                     "data_args": dict(dataset="synthetic", root=root, args={}, height=32, width=16)}, ck2)
    res = run("search.py", "--index", idx, "--images", os.path.join(root, "query"), "--checkpoint", ck2, check=False)
    assert res.returncode != 0 and "built from model" in res.stderr


def test_embed_files_evaluate_as_the_checkpoint_does(setup, tmp_path):
    """One features format: a dataset's query and gallery embeddings files give eval.py the checkpoint's own numbers."""
    import json

    _, root, ckpt = setup
    files = {}
    for split in ("query", "gallery"):
        files[split] = str(tmp_path / f"{split}.npz")
        run("embed.py", "--checkpoint", ckpt, "--dataset", "synthetic", "--data-root", root, "--split", split, "--out", files[split])
    run("eval.py", "--query", files["query"], "--gallery", files["gallery"], "--json", tmp_path / "a.json")
    run("eval.py", "--checkpoint", ckpt, "--json", tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["num_query"] == b["num_query"] == 6 and a["mAP"] == pytest.approx(b["mAP"], abs=1e-6) and a["rank1"] == b["rank1"]
    res = run("eval.py", "--query", files["query"], check=False)
    assert res.returncode == 2 and "needs both --query and --gallery" in res.stderr
    res = run("eval.py", "--features", files["query"], check=False)
    assert res.returncode == 2 and "--query" in res.stderr  # an embeddings file given as a features file says how to read it
    run("embed.py", "--checkpoint", ckpt, "--images", os.path.join(root, "query"), "--out", str(tmp_path / "paths.npz"))
    res = run("eval.py", "--query", str(tmp_path / "paths.npz"), "--gallery", files["gallery"], check=False)
    assert res.returncode == 2 and "'pid'" in res.stderr
