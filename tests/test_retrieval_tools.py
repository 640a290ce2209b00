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


def test_two_processes_embed_shards_equal_to_one_process(setup, tmp_path):
    """torchrun with two gloo processes: shards merged in order equal a one-process run; a rerun keeps the shards it finds."""
    import subprocess
    import sys

    _, root, ckpt = setup
    images = os.path.join(root, "bounding_box_test")
    run("embed.py", "--checkpoint", ckpt, "--images", images, "--out", str(tmp_path / "one.npz"), "--batch-size", "5")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531", os.path.join(ROOT, "tools", "embed.py"),
           "--checkpoint", ckpt, "--images", images, "--out", str(tmp_path / "two.npz"), "--batch-size", "5", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert list(a["path"]) == list(b["path"]) and np.array_equal(a["embeddings"], b["embeddings"])
    assert not list(tmp_path.glob("two.shard-*"))  # merged, then removed
    # an interrupted run: rank 1's shard is there (with a marker value), rank 0's is not; the rerun keeps rank 1's
    np.savez(tmp_path / "three.shard-1-of-2.npz", embeddings=np.full((2, 2), 7.0, np.float32), key=np.array("other"), lo=np.array(0), hi=np.array(0))
    res = subprocess.run([*cmd[:-6], "--checkpoint", ckpt, "--images", images, "--out", str(tmp_path / "three.npz"), "--batch-size", "5",
                          "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0 and np.array_equal(np.load(tmp_path / "three.npz")["embeddings"], a["embeddings"])  # a stale shard is redone


def test_sharded_embedding_resumes_from_the_shards_it_has(setup, tmp_path):
    import hashlib
    import subprocess
    import sys

    from reid_htg.data.readers import list_images
    from reid_htg.utils.hashing import model_fingerprint

    _, root, ckpt = setup
    images = os.path.join(root, "bounding_box_test")
    paths = list_images(images)
    fp = model_fingerprint(torch.load(ckpt, weights_only=True)["model"])
    key = hashlib.sha256(("\n".join(paths) + fp + "5").encode()).hexdigest()[:16]
    n, per = len(paths), 10  # 12 images, batches of 5: rank 0 takes batches 0-1 (10 images), rank 1 the last 2
    np.savez(tmp_path / "g.shard-1-of-2.npz", embeddings=np.full((n - per, 512), 7.0, np.float32), key=np.array(key), lo=np.array(per),
             hi=np.array(n))  # what an interrupted run left: rank 1 done
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                          os.path.join(ROOT, "tools", "embed.py"), "--checkpoint", ckpt, "--images", images, "--out", str(tmp_path / "g.npz"),
                          "--batch-size", "5", "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0 and "kept" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    emb = np.load(tmp_path / "g.npz")["embeddings"]
    assert emb.shape == (n, 512) and (emb[per:] == 7.0).all() and not (emb[:per] == 7.0).any()
