"""The Milvus backend's own parts (Milvus Lite, the milvus extra): filters as quoted expressions, the store, loading a gallery.

The service suite itself (API, bad requests, another model's gallery, kill -9, one service per gallery) runs on
both backends in tests/test_serve.py."""

import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import run_tool_here  # noqa: E402

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


def test_bad_milvus_starts_are_one_line(tmp_path):
    """No --uri, a gallery-less Milvus Lite folder, a gallery another process holds, a second load over a gallery: one line each."""
    import subprocess
    import sys

    from test_serve import ROOT, _checkpoint

    ckpt = _checkpoint(tmp_path / "last.pt")
    np.savez(tmp_path / "e.npz", embeddings=np.random.default_rng(1).standard_normal((10, 512)).astype(np.float32), path=np.array([f"p{i}" for i in range(10)]))

    def tool(name, *args, timeout=300):
        return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)], capture_output=True, text=True, timeout=timeout)

    assert tool("build_index.py", "--embeddings", tmp_path / "e.npz", "--backend", "milvus", "--uri", tmp_path / "g.db").returncode == 0
    serve = ("serve.py", "--checkpoint", ckpt, "--backend", "milvus", "--port", "1")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reid_htg.serve.milvus_store import MilvusGallery; "
                               "g = MilvusGallery(sys.argv[1]); print('open', flush=True); time.sleep(600)", str(tmp_path / "g.db")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        cases = [(serve, "needs --uri"), ((*serve, "--uri", tmp_path / "none.db"), "holds no reid-htg gallery"),
                 ((*serve, "--uri", tmp_path / "g.db"), "another process"),
                 (("build_index.py", "--embeddings", tmp_path / "e.npz", "--backend", "milvus", "--uri", tmp_path / "g.db"), "another process")]
        for args, word in cases:
            res = tool(*args)
            assert res.returncode != 0 and "Traceback" not in res.stderr and word in res.stderr, (args, res.stderr[-2000:])
            assert res.stderr.strip().splitlines()[-1].startswith("error:"), res.stderr[-2000:]
    finally:
        holder.kill()
        holder.wait()
    res = tool("build_index.py", "--embeddings", tmp_path / "e.npz", "--backend", "milvus", "--uri", tmp_path / "g.db")
    assert res.returncode != 0 and "already holds" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_the_vector_index_is_chosen_kept_and_checked(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    meta = pd.DataFrame({"camid": np.arange(300) % 3})
    g = MilvusGallery.create(str(tmp_path / "h.db"), x, meta, index_type="hnsw", ef_search=16)
    assert g.index.vector_index == {"type": "hnsw", "params": {"hnsw_m": 32, "ef_construction": 80, "ef_search": 16}}
    hits = g.index.search_records(x[:20], k=20)  # k above ef_search: ef is raised to k
    assert all(len(h) == 20 for h in hits) and sum(h[0]["distance"] < 1e-5 for h in hits) >= 19
    g.close()
    again = MilvusGallery(str(tmp_path / "h.db"))
    assert again.index.vector_index["type"] == "hnsw"  # from the manifest: every service process searches alike
    again.close()
    for kind, params, word in (("ivfpq", {}, "not offered on the milvus backend"), ("hnsw", {"nlist": 4}, "do not apply"), ("ivf", {"nprobe": 0}, "nprobe")):
        with pytest.raises(GalleryIndexError, match=word):
            MilvusGallery.create(str(tmp_path / f"bad_{kind}.db"), x, meta, index_type=kind, **params)
    res = run_tool_here("build_index.py", "--embeddings", _npz(tmp_path, x), "--backend", "milvus", "--uri", tmp_path / "i.db", "--index", "ivf", "nlist=8")
    assert "milvus gallery (ivf" in res.stdout


def _npz(tmp, x):
    np.savez(tmp / "x.npz", embeddings=x, path=np.array([f"p{i}" for i in range(len(x))]))
    return tmp / "x.npz"


ODD = ["ünï😀", "a\tb", "a\x00b", "a\rb\nc", 'q"\'\\', "\u2028x", "", "x" * 300]
FILTERS = [{"path": v} for v in ODD] + [
    {"path": {"in": ODD[:3]}}, {"n": 2**70}, {"n": {"gt": 2**70}}, {"n": {"lt": 2**70}}, {"n": {"gte": -(2**70)}}, {"n": {"lte": -(2**70)}},
    {"n": {"in": [2**70, 3, -(2**70)]}}, {"n": {"in": [2.5, 4.0]}}, {"n": 2.5}, {"w": {"lt": 2**1000}}, {"n": {"gt": -(2**1000)}}, {"n": {"gte": 2.5, "lt": 6}}, {"w": {"in": []}}, {"ok": True}, {"w": {"gt": 0.25}, "ok": False},
]


@pytest.fixture(scope="module")
def odd_galleries(tmp_path_factory):
    """One Milvus gallery and one FAISS index of the same rows: odd text values, a 64-bit int (``n``, the row - 3), a float and a bool."""
    from reid_htg.retrieval import GalleryIndex

    rng = np.random.default_rng(4)
    n = 24
    x = rng.standard_normal((n, 8)).astype(np.float32)
    meta = pd.DataFrame({"path": [ODD[i % len(ODD)] for i in range(n)], "n": np.arange(n) - 3, "w": np.linspace(0, 1, n), "ok": np.arange(n) % 3 == 0})
    g = MilvusGallery.create(str(tmp_path_factory.mktemp("odd") / "o.db"), x, meta)
    yield g, GalleryIndex.build(x, meta, index_type="flat"), x
    g.close()


@pytest.mark.parametrize("where", FILTERS, ids=[repr(f)[:40] for f in FILTERS])
def test_odd_filters_find_what_the_faiss_store_finds(odd_galleries, where):
    g, index, x = odd_galleries
    got = [h["n"] for h in g.index.search_records(x[:1], k=len(x), where=where)[0]]
    want = index.search(x[:1], k=len(x), where=where)["n"].astype(int).tolist()
    assert got == want


def test_numbers_beyond_a_float_are_refused_on_both_stores(odd_galleries):
    g, index, x = odd_galleries
    for store in (g.index, index):
        with pytest.raises(GalleryIndexError, match="not a number"):
            store.search_records(x[:1], k=3, where={"w": {"lt": 10**400}})


def test_text_longer_than_a_milvus_field_is_refused(odd_galleries):
    g, _, x = odd_galleries
    with pytest.raises(ValueError, match="longer than a text field holds"):
        g.add(x[:1], [{"path": "é" * 40000, "n": 1, "w": 0.0, "ok": True}])  # 80,000 bytes
