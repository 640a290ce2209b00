"""Filtered search (GalleryIndex.search(where=...)): the k nearest that pass a structured filter, against brute force."""
import numpy as np
import pandas as pd
import pytest

from reid_htg.retrieval import GalleryIndex, GalleryIndexError


def _gallery(rng, n=3000, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[1000:1100] = x[0]  # 100 exact duplicates of row 0: tied distances everywhere
    meta = pd.DataFrame({"camid": rng.integers(0, 10, n), "time": np.arange(n) * 10, "site": rng.choice(["north", "south"], n)})
    return x, meta


def _brute(x, meta, q, k, keep, metric):
    xs = x.astype(np.float64)
    if metric == "cosine":
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        qs = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
        d = 1 - qs @ xs.T
    else:
        qs = q.astype(np.float64)
        d = np.sqrt(np.maximum((qs ** 2).sum(1)[:, None] + (xs ** 2).sum(1)[None] - 2 * qs @ xs.T, 0))
    out = []
    for row in d:
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((idx, row[idx]))][:k]
        out.append(order.tolist())
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("where,selectivity", [
    ({}, 1.0),
    ({"camid": 3}, 0.1),
    ({"camid": {"in": [3]}, "time": {"gte": 0, "lt": 30000}}, 0.1),
    ({"time": {"gte": 10000, "lte": 10020}}, 0.001),  # 3 rows of 3000
    ({"site": "east"}, 0.0),
])
def test_filtered_search_is_exact(rng, metric, index_type, where, selectivity):
    x, meta = _gallery(rng)
    idx = GalleryIndex.build(x, meta, metric=metric, index_type=index_type)
    q = np.concatenate([x[:1], rng.standard_normal((4, 16)).astype(np.float32)])  # the first query ties with 101 rows
    keep = np.ones(len(x), bool)
    for col, cond in where.items():
        conds = cond if isinstance(cond, dict) else {"eq": cond}
        for op, v in conds.items():
            col_v = meta[col].to_numpy()
            keep &= {"eq": lambda: col_v == v, "in": lambda: np.isin(col_v, v), "gte": lambda: col_v >= v, "gt": lambda: col_v > v,
                     "lt": lambda: col_v < v, "lte": lambda: col_v <= v}[op]()
    assert abs(keep.mean() - selectivity) < 0.03
    k = 10
    table = idx.search(q, k, where=where or None) if where else None
    records = idx.search_records(q, k, where=where)
    want = _brute(x, meta, q, k, keep, metric)
    got = [[r["gallery_id"] for r in hits] for hits in records]
    if where:
        assert got == want  # the k nearest that pass, ties by gallery order
        assert table.groupby("query")["gallery_id"].apply(list).tolist() == [w for w in want if w] if keep.any() else table.empty
    if not keep.any():
        assert got == [[] for _ in q]
    idx.delete([int(want[0][0])] if want[0] else [0])  # a deleted row never passes
    after = [[r["gallery_id"] for r in hits] for hits in idx.search_records(q[:1], k, where=where)]
    assert all(want[0][0] not in hits for hits in after) if want[0] else True


@pytest.mark.parametrize("where,word", [
    ({"nope": 1}, "not a metadata column"),
    ({"camid": {"like": 3}}, "unknown filter operator"),
    ({"camid": "3"}, "is not a number"),
    ({"site": {"gte": "a"}}, "needs a numeric column"),
    ({"camid": {"in": 3}}, "takes a list"),
    ("camid > 3", "a filter is a mapping"),  # never an expression string
])
def test_bad_filters_are_refused_by_name(rng, where, word):
    x, meta = _gallery(rng, n=50)
    with pytest.raises(GalleryIndexError, match=word):
        GalleryIndex.build(x, meta).search(x[:1], 3, where=where)


def test_filter_through_the_tool_and_the_service(tmp_path, rng):

    from conftest import run_tool_here
    from fastapi.testclient import TestClient

    from reid_htg.serve.app import create_app
    from reid_htg.serve.store import DurableGallery

    x, meta = _gallery(rng, n=200)
    GalleryIndex.build(x, meta).save(str(tmp_path / "idx"))
    np.savez(tmp_path / "q.npz", embeddings=x[:3], path=np.array(["a", "b", "c"]))
    run_tool_here("search.py", "--index", tmp_path / "idx", "--embeddings", tmp_path / "q.npz", "--k", "5",
                  "--filter", '{"camid": {"in": [2, 3]}}', "--csv", tmp_path / "t.csv")
    assert set(pd.read_csv(tmp_path / "t.csv")["camid"]) <= {2, 3}
    bad = run_tool_here("search.py", "--index", tmp_path / "idx", "--embeddings", tmp_path / "q.npz", "--filter", "camid > 3", check=False)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
    g = DurableGallery(str(tmp_path / "svc"), str(tmp_path / "idx"))
    client = TestClient(create_app(g))
    body = client.post("/search", json={"embeddings": x[:2].tolist(), "k": 4, "filter": {"site": "north", "time": {"lt": 1000}}}).json()
    assert all(h["site"] == "north" and h["time"] < 1000 for hits in body["results"] for h in hits)
    for bad_filter, status in (("camid > 3", 422), ({"camid": {"like": 1}}, 422), ({"nope": 1}, 422)):
        res = client.post("/search", json={"embeddings": x[:1].tolist(), "k": 4, "filter": bad_filter})
        assert res.status_code == status and "filter" in res.json()["error"], res.json()
    g.close()
