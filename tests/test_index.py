import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from reid_htg.metrics import evaluate_features
from reid_htg.retrieval import GalleryIndex, GalleryIndexError
from reid_htg.retrieval.evaluate import evaluate_with_index
from reid_htg.utils.hashing import model_fingerprint


def _clustered(rng, n=3000, d=32, ids=150, noise=0.3):
    centers = rng.standard_normal((ids, d)).astype(np.float32)
    pid = rng.integers(0, ids, n)
    x = centers[pid] + noise * rng.standard_normal((n, d)).astype(np.float32)
    meta = pd.DataFrame({"path": [f"g{i}.jpg" for i in range(n)], "pid": pid, "camid": rng.integers(0, 4, n)})
    return x, meta, centers


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_round_trip_and_recall(tmp_path, rng, index_type, metric):
    x, meta, centers = _clustered(rng)
    q = centers[:40] + 0.3 * rng.standard_normal((40, 32)).astype(np.float32)
    exact = GalleryIndex.build(x, meta, metric=metric, index_type="flat")
    idx = GalleryIndex.build(x, meta, metric=metric, index_type=index_type, fingerprint="abc")
    _, r0 = exact.search_raw(q, 10)
    _, r1 = idx.search_raw(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(r0, r1)])
    assert recall >= (1.0 if index_type == "flat" else 0.8)
    idx.save(str(tmp_path / "i"))
    back = GalleryIndex.load(str(tmp_path / "i"))
    t1, t2 = idx.search(q, 5), back.search(q, 5)
    pd.testing.assert_frame_equal(t1, t2)
    assert list(t1.columns) == ["query", "rank", "gallery_id", "distance", "path", "pid", "camid"]
    assert back.fingerprint == "abc" and len(back) == len(x)


def test_distances_are_true_distances(rng):
    x, meta, _ = _clustered(rng, n=200)
    q = rng.standard_normal((3, 32)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        t = GalleryIndex.build(x, meta, metric=metric).search(q, 4)
        for _, row in t.iterrows():
            a, b = q[row["query"]], x[row["gallery_id"]]
            want = 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b) if metric == "cosine" else np.linalg.norm(a - b)
            assert row["distance"] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_incremental_add_and_delete(rng, index_type):
    x, meta, _ = _clustered(rng, n=2000)
    idx = GalleryIndex.build(x[:1500], meta[:1500], index_type=index_type)
    ids = idx.add(x[1500:], meta[1500:])
    assert ids.tolist() == list(range(1500, 2000)) and len(idx) == 2000
    hit = idx.search(x[1700], 1)
    assert hit["gallery_id"].item() == 1700
    assert idx.delete([1700, 3]) == 2 and len(idx) == 1998
    assert 1700 not in idx.search(x[1700], 5)["gallery_id"].tolist()
    idx.compact()
    assert len(idx) == 1998 and 1700 not in idx.search(x[1700], 5)["gallery_id"].tolist()
    with pytest.raises(GalleryIndexError, match="not in the index"):
        idx.delete([99999])


def test_refusals(tmp_path, rng):
    x, meta, _ = _clustered(rng, n=300)
    idx = GalleryIndex.build(x, meta, fingerprint="model-a")
    with pytest.raises(GalleryIndexError, match="dimension 16.*32-d"):
        idx.search(np.zeros((1, 16), np.float32))
    with pytest.raises(GalleryIndexError, match="model-b.*model-a"):
        idx.search(x[:1], fingerprint="model-b")
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(GalleryIndexError, match="NaN"):
        idx.search(bad)
    with pytest.raises(GalleryIndexError, match="NaN"):
        GalleryIndex.build(bad)
    with pytest.raises(GalleryIndexError, match="metadata has 299 rows"):
        GalleryIndex.build(x, meta[:-1])
    path = str(tmp_path / "i")
    idx.save(path)
    with pytest.raises(GalleryIndexError, match="model-b.*model-a"):
        GalleryIndex.load(path, fingerprint="model-b")
    blob = os.path.join(path, "index.faiss")
    with open(blob, "r+b") as fh:  # truncate
        fh.truncate(os.path.getsize(blob) // 2)
    with pytest.raises(GalleryIndexError, match="index.faiss does not match its checksum"):
        GalleryIndex.load(path)
    idx.save(path)  # a new save replaces the damaged folder whole
    with open(os.path.join(path, "metadata.csv"), "a") as fh:
        fh.write("999,extra.jpg,1,1\n")
    with pytest.raises(GalleryIndexError, match="metadata.csv does not match"):
        GalleryIndex.load(path)
    with pytest.raises(GalleryIndexError, match="not an index folder"):
        GalleryIndex.load(str(tmp_path))


def test_interrupted_save_leaves_previous_index(tmp_path, rng, monkeypatch):
    x, meta, _ = _clustered(rng, n=300)
    path = str(tmp_path / "i")
    GalleryIndex.build(x, meta).save(path)
    bigger = GalleryIndex.build(np.concatenate([x, x]), pd.concat([meta, meta]))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(path)
    monkeypatch.undo()
    assert len(GalleryIndex.load(path)) == 300  # the old index, whole


def test_concurrent_searches_match_serial(rng):
    x, meta, _ = _clustered(rng, n=3000)
    idx = GalleryIndex.build(x, meta, index_type="hnsw")
    qs = [x[i * 50 : (i + 1) * 50] + 0.01 for i in range(8)]
    serial = [idx.search_raw(q, 10)[1] for q in qs]
    out = [None] * 8

    def work(i):
        out[i] = idx.search_raw(qs[i], 10)[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(serial, out))


def test_exact_index_evaluation_equals_distance_path(rng):
    x, meta, centers = _clustered(rng, n=1500, ids=60, noise=0.8)
    qp = rng.integers(0, 60, 200)
    qf = centers[qp] + 0.8 * rng.standard_normal((200, 32)).astype(np.float32)
    qc = rng.integers(0, 4, 200)
    gp, gc = meta["pid"].to_numpy(), meta["camid"].to_numpy()
    for ap in ("noninterp", "official"):
        for metric in ("cosine", "euclidean"):
            a = evaluate_features(qf, x, qp, gp, qc, gc, ap=ap, metric=metric, dtype=torch.float64)
            b = evaluate_with_index(qf, x, qp, gp, qc, gc, index_type="flat", ap=ap, metric=metric)
            assert b.mAP == pytest.approx(a.mAP, abs=1e-9) and np.allclose(a.cmc, b.cmc, atol=1e-9)
    exact = evaluate_features(qf, x, qp, gp, qc, gc)
    approx = evaluate_with_index(qf, x, qp, gp, qc, gc, index_type="hnsw", k=100)
    assert approx.rank(1) == pytest.approx(exact.rank(1), abs=0.02)


def test_fingerprint_depends_on_weights():
    import torch

    a = {"w": torch.ones(2, 2)}
    b = {"w": torch.ones(2, 2) * 1.0001}
    assert model_fingerprint(a) == model_fingerprint({"w": torch.ones(2, 2)}) != model_fingerprint(b)


def test_save_replaces_only_an_index_and_refuses_other_paths(tmp_path, rng):
    x, meta, _ = _clustered(rng, n=200)
    idx = GalleryIndex.build(x, meta, index_type="flat")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(GalleryIndexError, match="not an index folder"):
        idx.save(str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"
    idx.save(str(tmp_path / "index"))
    idx.save(str(tmp_path / "index"))  # replacing our own index is fine
    assert len(GalleryIndex.load(str(tmp_path / "index"))) == 200


def test_every_save_loads_back_after_add_delete_compact(tmp_path, rng):
    x, meta, _ = _clustered(rng, n=300)
    idx = GalleryIndex.build(x[:200], meta[:200], index_type="hnsw")
    with pytest.raises(GalleryIndexError, match="missing"):
        idx.add(x[200:210])  # no metadata for an index that has metadata columns: refused, not NaN-filled
    idx.add(x[200:], meta[200:])
    idx.save(str(tmp_path / "i"))
    idx.delete(np.arange(0, 50))
    idx.save(str(tmp_path / "i"))
    again = GalleryIndex.load(str(tmp_path / "i"))
    assert len(again) == 250
    again.compact()
    again.save(str(tmp_path / "i"))
    final = GalleryIndex.load(str(tmp_path / "i"))
    assert len(final) == 250 and list(final.meta.columns) == ["gallery_id", "path", "pid", "camid"]
    bare = GalleryIndex.build(x[:20], None, index_type="flat")  # no metadata at all: only ids
    bare.add(x[20:30])
    bare.save(str(tmp_path / "bare"))
    assert len(GalleryIndex.load(str(tmp_path / "bare"))) == 30


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_searches_and_a_writer_together(rng, index_type):
    x, meta, centers = _clustered(rng, n=2000)
    idx = GalleryIndex.build(x[:1000], meta[:1000], index_type=index_type)
    errors, stop = [], threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                table = idx.search(centers[:5], k=10)
                assert len(table) == 50
            except Exception as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(8)]
    for t in threads:
        t.start()
    for s in range(1000, 2000, 50):
        idx.add(x[s : s + 50], meta[s : s + 50])
        idx.delete([s])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert len(idx) == 2000 - 20


def test_damaged_or_edited_manifest_is_refused(tmp_path, rng):
    import json

    x, meta, _ = _clustered(rng, n=100)
    GalleryIndex.build(x, meta, index_type="flat").save(str(tmp_path / "i"))
    path = tmp_path / "i" / "manifest.json"
    good = json.loads(path.read_text())
    for bad, word in ((dict(good, metric="euclidean"), "edited"), ({k: v for k, v in good.items() if k != "sha256"}, "lacks"),
                      ([1, 2], "not a JSON object")):
        path.write_text(json.dumps(bad))
        with pytest.raises(GalleryIndexError, match=word):
            GalleryIndex.load(str(tmp_path / "i"))
    with pytest.raises(GalleryIndexError, match="unknown index parameter"):
        GalleryIndex.build(x, meta, index_type="ivf", nlst=4)


def test_search_records_match_the_search_table(rng):
    x, meta, centers = _clustered(rng, n=300)
    idx = GalleryIndex.build(x, meta, index_type="flat")
    idx.delete([0, 1])
    table = idx.search(centers[:3], k=5)
    records = idx.search_records(centers[:3], k=5)
    for qi, hits in enumerate(records):
        part = table[table["query"] == qi]
        assert [h["gallery_id"] for h in hits] == part["gallery_id"].tolist()
        assert [h["path"] for h in hits] == part["path"].tolist()
        np.testing.assert_allclose([h["distance"] for h in hits], part["distance"].to_numpy(), rtol=1e-6)


def test_writes_append_in_place_and_match_a_rebuilt_index(tmp_path, rng):
    """One item at a time: no copy of the rows already there, and the result equals one build of the same rows."""
    x, meta, centers = _clustered(rng, n=400)
    idx = GalleryIndex.build(x[:100], meta[:100], index_type="hnsw")
    idx.add(x[100:101], meta[100:101])
    buf = idx._vecs
    for i in range(101, 140):  # within the doubled capacity: the same buffer
        idx.add(x[i : i + 1], meta[i : i + 1])
    assert idx._vecs is buf and np.shares_memory(idx.vectors, buf)
    for i in range(140, 400):
        idx.add(x[i : i + 1], meta[i : i + 1])
    whole = GalleryIndex.build(x, meta, index_type="hnsw")
    pd.testing.assert_frame_equal(idx.meta, whole.meta)
    np.testing.assert_array_equal(idx.vectors, whole.vectors)
    pd.testing.assert_frame_equal(idx.search(centers, 5)[["gallery_id", "path"]], whole.search(centers, 5)[["gallery_id", "path"]])
    idx.save(str(tmp_path / "i"))
    back = GalleryIndex.load(str(tmp_path / "i"), mmap=True)  # read-only vectors: the next add copies them once
    back.add(x[:3] * 0.5 + 0.1, meta[:3])
    assert len(back) == 403 and back.vectors.flags.writeable and back.max_gallery_id() == 402
    np.testing.assert_array_equal(back.vectors[:400], whole.vectors)


def test_gallery_ids_found_in_any_order(rng):
    x, meta, _ = _clustered(rng, n=60)
    given = meta.assign(gallery_id=rng.permutation(np.arange(1000, 1060)))  # not increasing: the hash path
    idx = GalleryIndex.build(x[:30], given[:30], index_type="flat")
    idx.add(x[30:], given[30:])
    ids = given["gallery_id"].to_numpy()
    np.testing.assert_array_equal(idx.rows_of(ids), np.arange(60))
    assert idx.rows_of([5])[0] == -1 and idx.max_gallery_id() == ids.max()
    with pytest.raises(GalleryIndexError, match="unique and new"):
        idx.add(x[:1], given[:1])
    assert idx.delete(ids[[3, 3, 7]]) == 2 and len(idx) == 58 and not idx.is_alive(ids[3]) and idx.is_alive(ids[4])
    assert set(idx.search(x[3], 60)["gallery_id"]) == set(ids) - {ids[3], ids[7]}
    no_ids = given.drop(columns="gallery_id")
    assert idx.add(x[:2], no_ids[:2]).tolist() == [ids.max() + 1, ids.max() + 2]


def test_metadata_columns_widen_like_concat(rng):
    x, meta, _ = _clustered(rng, n=20)
    idx = GalleryIndex.build(x[:10], meta[:10].assign(score=np.arange(10)), index_type="flat")
    idx.add(x[10:], meta[10:].assign(score=np.linspace(0, 1, 10)))  # int then float: float, as pd.concat would make it
    assert idx.meta["score"].dtype == np.float64 and idx.meta["score"].iloc[3] == 3.0
    assert idx.meta["path"].tolist() == meta["path"].tolist()
