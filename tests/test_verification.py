"""Open-set verification (reid_htg.metrics.verification) against scikit-learn and by hand."""
import os

import numpy as np
import pytest

from reid_htg.metrics.verification import FARS, evaluate_verification, roc, summarise_roc, verification_pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_equals_sklearn_with_ties(seed):
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    d = np.round(rng.random(3000), 2)  # about 100 distinct values: many ties
    genuine = rng.random(3000) < 0.1
    far, tar, thr = roc(d, genuine)
    fpr, tpr, sk_thr = roc_curve(genuine, -d, drop_intermediate=False)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_allclose(thr[1:], -sk_thr[1:])  # scikit-learn's first threshold is +inf in score terms


def test_summaries_by_hand():
    # genuine 0.1 0.3 0.5; impostor 0.2 0.4 0.6 0.8 0.9 1.0 1.1 1.2 1.3
    d = np.array([0.1, 0.3, 0.5, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3])
    g = np.array([True] * 3 + [False] * 9)
    res = summarise_roc(*roc(d, g), 3, 9, fars=(0.2, 0.0))
    # FAR <= 0.2 allows one impostor (1/9): the largest such threshold is 0.3 (0.1, 0.2, 0.3 accepted): TAR 2/3
    assert res.threshold_at[0.2] == pytest.approx(0.3) and res.tar_at[0.2] == pytest.approx(2 / 3)
    assert res.threshold_at[0.0] == pytest.approx(0.1) and res.tar_at[0.0] == pytest.approx(1 / 3)
    # |FAR - FRR| at 0.1, 0.2, 0.3, 0.4, 0.5: |0 - 2/3|, |1/9 - 2/3|, |1/9 - 1/3|, |2/9 - 1/3|, |2/9 - 0|: closest at 0.4
    assert res.eer == pytest.approx((2 / 9 + 1 / 3) / 2)


def test_pairs_follow_the_protocols():
    qf = np.array([[1.0, 0.0], [0.0, 1.0]])
    gf = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    d, genuine = verification_pairs(qf, gf, q_pids=[1, 2], g_pids=[1, 2, -1, 1], q_camids=[0, 0], g_camids=[1, 0, 1, 1])
    # query 0 (id 1, cam 0): gallery 0 (id 1, cam 1) genuine, 1 impostor, 2 junk dropped, 3 genuine; query 1 (id 2, cam 0):
    # gallery 1 is id 2 in cam 0: dropped (same identity and camera), 0 and 3 impostors, 2 junk
    assert genuine.tolist() == [True, False, True, False, False] and len(d) == 5
    tf = np.eye(3)[[0, 0, 1, 2]]
    d, genuine = verification_pairs(tf, q_pids=[5, 5, 6, 7])
    assert len(d) == 6 and genuine.sum() == 1 and d[genuine][0] == pytest.approx(0.0)


def test_separable_features_verify_perfectly_and_refusals():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 16))
    pid = np.repeat(np.arange(10), 4)
    x = centers[pid] + 0.01 * rng.standard_normal((40, 16))
    res = evaluate_verification(x, q_pids=pid)
    assert res.eer == 0 and all(res.tar_at[f] == 1 for f in FARS)
    with pytest.raises(ValueError, match="genuine and impostor"):
        roc([0.1, 0.2], [True, True])


def test_calibrate_save_and_answer_unknown(tmp_path):
    """eval.py --verify --save-threshold, then search.py and the service say which queries are nobody in the gallery."""
    import json

    import pandas as pd
    import torch
    from conftest import run_tool_here

    from reid_htg.checkpoint import save_checkpoint
    from reid_htg.data.synthetic import read_synthetic
    from reid_htg.models import ReIDNet

    root = str(tmp_path / "syn")
    read_synthetic(root, num_train_ids=4, num_test_ids=6, images_per_cam=2, num_cams=2)
    torch.manual_seed(0)
    args = dict(backbone="resnet10t", num_classes=4, keypoint_blocks=())
    ckpt = str(tmp_path / "m.pt")
    save_checkpoint({"model": ReIDNet(**args).state_dict(), "model_args": args, "config": {},
                     "data_args": dict(dataset="synthetic", root=root, args={}, height=32, width=16)}, ckpt)
    run_tool_here("embed.py", "--checkpoint", ckpt, "--dataset", "synthetic", "--data-root", root, "--split", "gallery", "--out", tmp_path / "g.npz")
    run_tool_here("embed.py", "--checkpoint", ckpt, "--dataset", "synthetic", "--data-root", root, "--split", "query", "--out", tmp_path / "q.npz")
    run_tool_here("build_index.py", "--embeddings", tmp_path / "g.npz", "--out", tmp_path / "idx")
    res = run_tool_here("eval.py", "--checkpoint", ckpt, "--verify", "--far", "0.1", "--save-threshold", tmp_path / "idx",
                        "--json", tmp_path / "v.json", "--plot", tmp_path / "roc.png")
    assert "TAR@FAR=0.01" in res.stdout and "EER" in res.stdout and os.path.getsize(tmp_path / "roc.png") > 1000
    saved = json.loads((tmp_path / "idx" / "threshold.json").read_text())
    reported = json.loads((tmp_path / "v.json").read_text())["verification"]
    assert saved["far"] == 0.1 and saved["distance"] == reported["threshold@far=0.1"]
    run_tool_here("search.py", "--index", tmp_path / "idx", "--embeddings", tmp_path / "q.npz", "--k", "2", "--csv", tmp_path / "t.csv")
    table = pd.read_csv(tmp_path / "t.csv")
    best = table.groupby("query")["distance"].min()
    assert (table.groupby("query")["unknown"].first() == (best > saved["distance"])).all()
    run_tool_here("search.py", "--index", tmp_path / "idx", "--embeddings", tmp_path / "q.npz", "--k", "1", "--threshold", "-1",
                  "--csv", tmp_path / "t2.csv")
    assert pd.read_csv(tmp_path / "t2.csv")["unknown"].all()  # nothing is within a negative distance

    from fastapi.testclient import TestClient

    from reid_htg.serve.app import create_app
    from reid_htg.serve.store import DurableGallery

    g = DurableGallery(str(tmp_path / "svc"), str(tmp_path / "idx"))
    client = TestClient(create_app(g, threshold=saved["distance"]))
    q = np.load(tmp_path / "q.npz")["embeddings"][:3].tolist()
    body = client.post("/search", json={"embeddings": q, "k": 1}).json()
    assert body["threshold"] == saved["distance"]
    assert body["unknown"] == [hits[0]["distance"] > saved["distance"] for hits in body["results"]]
    assert client.post("/search", json={"embeddings": q, "k": 1, "threshold": 10.0}).json()["unknown"] == [False] * 3
    bad = client.post("/search", json={"embeddings": q, "k": 1, "threshold": "near"})
    assert bad.status_code == 422 and "threshold" in bad.json()["error"]
    g.close()
