"""The service on Milvus (Milvus Lite, the milvus extra): the same API, filters, and no acknowledged write lost to kill -9."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import run_tool_here  # noqa: E402
from test_serve import ROOT, Server, _checkpoint, kill_mid_stream  # noqa: E402

from reid_htg.retrieval import GalleryIndexError  # noqa: E402
from reid_htg.serve.milvus_store import MilvusGallery, milvus_filter  # noqa: E402


def _gallery(tmp, n=60, d=16, fingerprint=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    meta = pd.DataFrame({"camid": np.arange(n) % 5, "path": [f"g{i}" for i in range(n)], "score": np.linspace(0, 1, n)})
    return x, meta, MilvusGallery.create(str(tmp / "g.db"), x, meta, fingerprint=fingerprint)


def test_filters_become_quoted_expressions_never_raw_strings():
    kinds = {"camid": "int", "site": "text", "t": "float"}
    assert milvus_filter({"camid": {"in": [3, 4]}, "t": {"gte": 1.5}}, kinds) == "(camid in [3, 4]) and (t >= 1.5)"
    assert milvus_filter({"site": 'x" or 1 == 1 or "'}, kinds) == '(site == "x\\" or 1 == 1 or \\"")'
    for bad, word in (({"nope": 1}, "not a metadata column"), ({"camid": "3"}, "not a number"), ({"site": {"gt": "a"}}, "numeric"),
                      ("camid > 3", "a filter is a mapping"), ({"camid": {"like": 1}}, "unknown filter operator")):
        with pytest.raises(GalleryIndexError, match=word):
            milvus_filter(bad, kinds)


def test_the_service_api_on_milvus(tmp_path):
    from fastapi.testclient import TestClient

    from reid_htg.serve.app import create_app

    x, meta, g = _gallery(tmp_path)
    client = TestClient(create_app(g))
    h = client.get("/health").json()
    assert h["count"] == 60 and h["dim"] == 16 and h["index_type"] == "milvus"
    hits = client.post("/search", json={"embeddings": x[:2].tolist(), "k": 3}).json()["results"]
    assert [q[0]["path"] for q in hits] == ["g0", "g1"] and hits[0][0]["distance"] < 1e-5
    got = client.post("/search", json={"embeddings": x[:1].tolist(), "k": 5, "filter": {"camid": {"in": [2, 3]}, "score": {"lt": 0.5}}}).json()
    assert got["results"][0] and all(h["camid"] in (2, 3) and h["score"] < 0.5 for h in got["results"][0])
    # the filter finds the same items as brute force over the passing rows
    keep = np.flatnonzero(np.isin(meta["camid"], [2, 3]) & (meta["score"] < 0.5))
    xs = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = [meta["path"][i] for i in keep[np.argsort(1 - xs[keep] @ xs[0], kind="stable")][:5]]
    assert [h["path"] for h in got["results"][0]] == want
    sneaky = client.post("/search", json={"embeddings": x[:1].tolist(), "k": 5, "filter": {"path": 'x" or camid >= 0 or path == "'}}).json()
    assert sneaky["results"] == [[]]  # the quote stays inside the literal: no path has that value
    ids = client.post("/items", json={"embeddings": x[:1].tolist(), "metadata": [{"camid": 9, "path": "new", "score": 2.0}]}).json()["ids"]
    assert client.get(f"/items/{ids[0]}").json()["path"] == "new"
    assert client.delete(f"/items/{ids[0]}").json() == {"deleted": ids[0]}
    assert client.get(f"/items/{ids[0]}").status_code == 404
    for body, status, word in (({"embeddings": [[0.0] * 7], "k": 3}, 422, "dimension"), ({"embeddings": x[:1].tolist(), "k": 3, "filter": "camid > 1"}, 422, "filter"),
                               ({"embeddings": x[:1].tolist(), "k": 3, "filter": {"path": {"gte": 1}}}, 422, "numeric")):
        res = client.post("/search", json=body)
        assert res.status_code == status and word in res.json()["error"], res.json()
    bad = client.post("/items", json={"embeddings": x[:1].tolist(), "metadata": [{"camid": "nine", "path": "p", "score": 1.0}]})
    assert bad.status_code == 422 and "type" in bad.json()["error"]
    g.close()
    again = MilvusGallery(str(tmp_path / "g.db"))  # a restart: everything acknowledged is there
    assert len(again.index) == 60 and again.columns == ["camid", "path", "score"]
    again.close()
    with pytest.raises(GalleryIndexError, match="already holds"):
        MilvusGallery.create(str(tmp_path / "g.db"), x, meta)


def test_build_index_loads_an_embeddings_file_into_milvus(tmp_path):
    np.savez(tmp_path / "e.npz", embeddings=np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32),
             path=np.array([f"p{i}" for i in range(20)]), fingerprint=np.array("fp1"))
    res = run_tool_here("build_index.py", "--embeddings", tmp_path / "e.npz", "--backend", "milvus", "--uri", tmp_path / "m.db")
    assert "milvus gallery" in res.stdout
    g = MilvusGallery(str(tmp_path / "m.db"))
    assert len(g.index) == 20 and g.index.fingerprint == "fp1"
    g.close()


def test_kill_9_mid_stream_loses_no_acknowledged_write_on_milvus(tmp_path):
    import torch

    from reid_htg.utils.hashing import model_fingerprint

    ckpt = _checkpoint(tmp_path / "last.pt")
    fp = model_fingerprint(torch.load(ckpt, weights_only=True)["model"])
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "e.npz", embeddings=rng.standard_normal((50, 512)).astype(np.float32), path=np.array([f"g{i}" for i in range(50)]),
             fingerprint=np.array(fp))
    # in a process of its own: Milvus Lite runs inside the process that opens the file, and holds it until that process ends
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_index.py"), "--embeddings", str(tmp_path / "e.npz"), "--backend", "milvus",
                    "--uri", str(tmp_path / "k.db")], check=True, capture_output=True, timeout=300)
    server = Server(tmp_path, None, ckpt, "--backend", "milvus", "--uri", str(tmp_path / "k.db")).start()
    kill_mid_stream(server, 50, lambda i: {"path": f"s{i}"}, acks=40)
