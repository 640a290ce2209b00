"""ONNX export parity, the embedder, and the HTTP service against a real uvicorn process (the serve extra), on both gallery backends."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_tool_here

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from reid_htg.checkpoint import save_checkpoint  # noqa: E402
from reid_htg.models import ReIDNet  # noqa: E402
from reid_htg.retrieval import GalleryIndex  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkpoint(path, keypoint_blocks=(), seed=0):
    torch.manual_seed(seed)
    args = dict(backbone="resnet10t", num_classes=5, keypoint_blocks=tuple(keypoint_blocks), last_stride=1)
    model = ReIDNet(**args)
    model.train()
    with torch.no_grad():  # move the BatchNorm statistics off their defaults
        for _ in range(3):
            model(torch.rand(8, 3, 64, 32) * 3)
    save_checkpoint({"model": model.state_dict(), "config": {}, "model_args": args,
                     "data_args": {"dataset": "synthetic", "root": "x", "args": {}, "height": 64, "width": 32}}, str(path))
    return str(path)


def _images(folder, n=6, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (96, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("blocks", [(), (3, 4)], ids=["basic", "keypoint"])
def test_onnx_export_parity_and_embedder(tmp_path, blocks):
    from reid_htg.serve.embedder import Embedder
    from reid_htg.serve.export import export_onnx

    ckpt = _checkpoint(tmp_path / "last.pt", blocks)
    r = export_onnx(ckpt, str(tmp_path / "m.onnx"))
    assert r["max_abs_diff"] <= 1e-4 and r["min_cosine"] >= 0.99999
    paths = _images(tmp_path / "imgs", n=9)  # a batch size the export never saw: the batch axis is dynamic
    a, b = Embedder.load(ckpt), Embedder.load(str(tmp_path / "m.onnx"))
    assert a.fingerprint == b.fingerprint and a.size == b.size == (64, 32)
    fa, fb = a.embed_paths(paths), b.embed_paths(paths)
    assert fa.shape == fb.shape == (9, a.dim)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert np.abs(fa - fb).max() <= 1e-4 and cos.min() >= 0.99999


@pytest.mark.parametrize("blocks", [(), (3, 4)], ids=["basic", "keypoint"])
def test_openvino_export_parity_and_embedder(tmp_path, blocks):
    pytest.importorskip("openvino")
    from reid_htg.serve.embedder import Embedder

    ckpt = _checkpoint(tmp_path / "last.pt", blocks)
    res = run_tool_here("export.py", "--checkpoint", ckpt, "--format", "openvino", "--out", tmp_path / "m.xml")
    assert "openvino vs PyTorch" in res.stdout and "PASS" in res.stdout
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "m.bin", "m.xml"]  # no temporary file left
    paths = _images(tmp_path / "imgs", n=9)
    a, b = Embedder.load(ckpt), Embedder.load(str(tmp_path / "m.xml"))
    assert b.kind == "openvino" and a.fingerprint == b.fingerprint and a.size == b.size == (64, 32) and a.dim == b.dim
    fa, fb = a.embed_paths(paths), b.embed_paths(paths)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert np.abs(fa - fb).max() <= 1e-4 and cos.min() >= 0.99999
    bad = run_tool_here("export.py", "--checkpoint", ckpt, "--format", "openvino", "--out", tmp_path / "m.onnx", check=False)
    assert bad.returncode == 2 and "must end in .xml" in bad.stderr


def test_embed_tool_runs_on_onnx_without_model_code(tmp_path):
    ckpt = _checkpoint(tmp_path / "last.pt")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "--checkpoint", ckpt, "--out", str(tmp_path / "m.onnx")],
                   check=True, capture_output=True)
    _images(tmp_path / "imgs")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "embed.py"), "--onnx", str(tmp_path / "m.onnx"), "--images",
                          str(tmp_path / "imgs"), "--out", str(tmp_path / "e.npz")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (6, 512) and str(data["fingerprint"])
    probe = subprocess.run([sys.executable, "-c", "import sys, reid_htg.serve.embedder as e; e.Embedder.from_onnx(sys.argv[1]);"
                            "print('reid_htg.models' in sys.modules)", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr[-1000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """tools/serve.py as a real process on a free loopback port."""

    def __init__(self, tmp, index_dir, model, *extra):
        where = ["--index", str(index_dir), "--data-dir", str(tmp / "svc")] if index_dir is not None else []  # None: --backend milvus in extra
        self.args = [sys.executable, os.path.join(ROOT, "tools", "serve.py"), *where, "--checkpoint" if model.endswith(".pt") else "--onnx", model, *extra]
        self.proc = None

    def start(self):
        self.port = _free_port()
        self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("server did not come up")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


BACKENDS = ["faiss", pytest.param("milvus", marks=pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite")), reason="the milvus extra"))]


def milvus_gallery(tmp, name, x, fingerprint, **columns) -> list[str]:
    """A Milvus Lite gallery ``tmp/name.db`` of ``x`` loaded by tools/build_index.py; the service arguments that open it.

    In a process of its own: Milvus Lite runs inside the process that opens the gallery and holds it until that process ends."""
    np.savez(tmp / f"{name}.npz", embeddings=x, fingerprint=np.array(fingerprint), **columns)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_index.py"), "--embeddings", str(tmp / f"{name}.npz"), "--backend", "milvus",
                    "--uri", str(tmp / f"{name}.db")], check=True, capture_output=True, timeout=300)
    return ["--backend", "milvus", "--uri", str(tmp / f"{name}.db")]


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, tmp_path_factory):
    """The service on each backend, over the same 200 x 512 gallery (columns path, pid), and where its galleries are.

    Yields (tmp, server, x, backend, gallery): ``gallery(name, tmp)`` gives the start arguments of the gallery
    ``index`` (this model's) or ``other`` (built by "another-model"), for a second server with data under ``tmp``."""
    from reid_htg.utils.hashing import model_fingerprint

    backend = request.param
    tmp = tmp_path_factory.mktemp(f"serve_{backend}")
    ckpt = _checkpoint(tmp / "last.pt")
    fp = model_fingerprint(torch.load(ckpt, weights_only=True)["model"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 512)).astype(np.float32)
    columns = {"path": np.array([f"g{i}.jpg" for i in range(200)]), "pid": np.arange(200) // 4}
    if backend == "faiss":
        import pandas as pd

        meta = pd.DataFrame(columns)
        GalleryIndex.build(x, meta, index_type="hnsw", fingerprint=fp).save(str(tmp / "index"))
        GalleryIndex.build(x, meta, index_type="flat", fingerprint="another-model").save(str(tmp / "other"))

        def gallery(name, where):
            return ["--index", str(tmp / name), "--data-dir", str(where / "svc")]
    else:
        where = {"index": milvus_gallery(tmp, "index", x, fp, **columns), "other": milvus_gallery(tmp, "other", x, "another-model", **columns)}

        def gallery(name, _):
            return where[name]
    server = Server(tmp, None, ckpt, *gallery("index", tmp), "--api-key", "s3cret", "--fold-every", "7").start()
    yield tmp, server, x, backend, gallery
    server.kill(signal.SIGTERM)


KEY = {"X-API-Key": "s3cret"}


def test_search_add_get_delete_restart(served):
    tmp, server, x, backend, _ = served
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["count"] == 200 and h["dim"] == 512 and h["fingerprint"] == h["model_fingerprint"]
    r = httpx.post(server.url + "/search", json={"embeddings": x[:3].tolist(), "k": 5}).json()["results"]
    assert len(r) == 3 and [q[0]["path"] for q in r] == ["g0.jpg", "g1.jpg", "g2.jpg"] and set(r[0][0]) >= {"gallery_id", "distance", "path", "pid"}
    if backend == "faiss":
        assert [q[0]["gallery_id"] for q in r] == [0, 1, 2]  # FAISS numbers the gallery's rows; Milvus makes its own ids
    new = np.random.default_rng(1).standard_normal((2, 512)).astype(np.float32)
    ids = httpx.post(server.url + "/items", json={"embeddings": new.tolist(), "metadata": [{"path": "n0.jpg", "pid": 900}, {"path": "n1.jpg", "pid": 901}]},
                     headers=KEY).json()["ids"]
    assert len(set(ids)) == 2 and not set(ids) & {q[0]["gallery_id"] for q in r} and (backend != "faiss" or ids == [200, 201])
    assert httpx.get(server.url + f"/items/{ids[1]}").json()["pid"] == 901
    top = httpx.post(server.url + "/search", json={"embeddings": new[:1].tolist(), "k": 1}).json()["results"][0][0]
    assert top["gallery_id"] == ids[0] and top["distance"] < 1e-5
    five = httpx.post(server.url + "/search", json={"embeddings": x[5:6].tolist(), "k": 1}).json()["results"][0][0]
    assert five["path"] == "g5.jpg"
    assert httpx.delete(server.url + f"/items/{five['gallery_id']}", headers=KEY).json() == {"deleted": five["gallery_id"]}
    assert httpx.get(server.url + f"/items/{five['gallery_id']}").status_code == 404
    images = _images(tmp / "upload", n=2)
    files = [("files", (os.path.basename(p), open(p, "rb").read(), "image/png")) for p in images]
    res = httpx.post(server.url + "/search", files=files, data={"k": "3"})
    assert res.status_code == 200 and [len(q) for q in res.json()["results"]] == [3, 3]
    res = httpx.post(server.url + "/items", files=files, data={"metadata": json.dumps([{"path": "u0", "pid": 7}, {"path": "u1", "pid": 8}])}, headers=KEY)
    uploaded = res.json()["ids"]
    assert len(uploaded) == 2 and (backend != "faiss" or uploaded == [202, 203])
    server.kill(signal.SIGTERM)
    server.start()  # everything acknowledged is back after a restart
    assert httpx.get(server.url + "/health").json()["count"] == 200 + 2 + 2 - 1
    assert httpx.get(server.url + f"/items/{five['gallery_id']}").status_code == 404
    assert httpx.get(server.url + f"/items/{uploaded[1]}").json()["path"] == "u1"


BAD = [  # method, path, kwargs, status, word
    ("post", "/search", {"json": {"embeddings": [[0.0] * 7], "k": 3}}, 422, "dimension"),
    ("post", "/search", {"content": b'{"embeddings": [[NaN' + b", 0.0" * 511 + b"]], \"k\": 3}", "headers": {"content-type": "application/json"}}, 422, "NaN"),
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512], "k": 0}}, 422, "k must be"),
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512], "k": 100000}}, 422, "k must be"),
    ("post", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ("post", "/search", {"json": {"embeddings": "a string"}}, 422, "embeddings"),
    ("post", "/search", {"files": [("files", ("x.png", b"not an image", "image/png"))]}, 415, "cannot read image"),
    ("post", "/search", {"content": b"x" * (33 << 20), "headers": {"content-type": "application/json"}}, 413, "limit"),
    ("get", "/items/99999", {}, 404, "not in the gallery"),
    ("get", "/items/abc", {}, 404, "whole number"),
    ("get", "/items/%D9%A3", {}, 404, "whole number"),  # an Arabic-Indic 3: int() would have taken it for item 3
    ("get", "/nowhere", {}, 404, "Not Found"),  # the documented {"error": ...} shape on every route
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512], "k": 3.7}}, 422, "whole number"),
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512], "k": True}}, 422, "whole number"),
    ("post", "/search", {"content": b'{"embeddings": [[' + b"0.1, " * 511 + b'0.1]], "k": Infinity}', "headers": {"content-type": "application/json"}},
     422, "whole number"),
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512] * 200, "k": 1000}}, 422, "results"),
    ("post", "/search", {"content": b"[" * 10000 + b"]" * 10000, "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("post", "/search", {"json": {"embeddings": [[True] * 512], "k": 3}}, 422, "true/false"),
    ("post", "/search", {"content": "chunked-40-mb", "headers": {"content-type": "application/json"}}, 413, "limit"),  # no length given
    ("post", "/search", {"content": "multipart-with-trailing-bytes", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
     413, "limit"),  # a valid image part, then 40 MB after the closing boundary, chunked: counted as it streams
    ("delete", "/items/99999", {"headers": KEY}, 404, "not in the gallery"),
    ("delete", "/items/3", {}, 401, "X-API-Key"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x"}]}, "headers": KEY}, 422, "fields"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512, [0.2] * 512], "metadata": [{"path": "x", "pid": 1}]}, "headers": KEY}, 422, "match"),
    # a gallery's column types are fixed when it is built: one bad write cannot change them for everyone (both stores)
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": 1.5}]}, "headers": KEY}, 422, "column's type"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": 2**70}]}, "headers": KEY}, 422, "64 bits"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": 2**63}]}, "headers": KEY}, 422, "64 bits"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": "abc"}]}, "headers": KEY}, 422, "column's type"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": None}]}, "headers": KEY}, 422, "column's type"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": 7, "pid": 1}]}, "headers": KEY}, 422, "holds text"),
    # unknown keys are errors: a misspelled filter must not answer unfiltered
    ("post", "/search", {"json": {"embeddings": [[0.1] * 512], "k": 3, "filters": {"pid": 150}}}, 422, "unknown key(s) ['filters']"),
    ("post", "/search", {"files": [("files", ("x.png", b"x", "image/png"))], "data": {"k": "3", "thresold": "0.5"}}, 422, "'thresold'"),
    ("post", "/items", {"json": {"embeddings": [[0.1] * 512], "metadata": [{"path": "x", "pid": 1}], "meta": 1}, "headers": KEY}, 422,
     "unknown key(s) ['meta']"),
]


def _multipart_with_trailing_bytes(tmp):
    png = open(_images(tmp / "trailing", n=1)[0], "rb").read()
    head = (b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            + png + b"\r\n--zz--\r\n")
    yield head
    for _ in range(40):
        yield b"x" * (1 << 20)


@pytest.mark.parametrize("method,path,kwargs,status,word", BAD, ids=[f"{b[0]} {b[1]} {b[3]} {b[4]}" for b in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem(served, method, path, kwargs, status, word):
    tmp, server, *_ = served
    if kwargs.get("content") == "multipart-with-trailing-bytes":  # streamed bodies: a fresh generator for each backend
        kwargs = dict(kwargs, content=_multipart_with_trailing_bytes(tmp))
    elif kwargs.get("content") == "chunked-40-mb":
        kwargs = dict(kwargs, content=(b"x" * (1 << 20) for _ in range(40)))
    res = getattr(httpx, method)(server.url + path, timeout=60, **kwargs) if method != "post" else httpx.post(server.url + path, timeout=60, **kwargs)
    assert res.status_code == status, res.text[:500]
    assert word in res.json()["error"], res.json()


def test_images_against_an_index_of_another_model_are_refused(served):
    tmp, _, _, _, gallery = served
    other = Server(tmp / "o", None, str(tmp / "last.pt"), *gallery("other", tmp / "o")).start()
    try:
        files = [("files", ("a.png", open(_images(tmp / "o_img", n=1)[0], "rb").read(), "image/png"))]
        res = httpx.post(other.url + "/search", files=files)
        assert res.status_code == 409 and "another-model" in res.json()["error"]
    finally:
        other.kill(signal.SIGTERM)


def kill_mid_stream(server, start_count: int, metadata, acks: int, dim: int = 512) -> None:
    """A stream of adds and deletes, ``kill -9`` once ``acks`` adds were acknowledged, restart: every acknowledged
    write is there (deletes gone), at most the one write in flight applied, whole. ``metadata(i)``: the i-th add's fields."""
    import threading

    rng = np.random.default_rng(2)
    acked_adds, acked_deletes, stop = {}, set(), threading.Event()
    in_flight = {}  # the request under way when the server died: committed or not, never acknowledged

    def stream():
        with httpx.Client(base_url=server.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                try:
                    if i % 3 == 2 and len(acked_adds) > len(acked_deletes):
                        gid = sorted(set(acked_adds) - acked_deletes)[0]
                        in_flight["delete"] = gid
                        if c.delete(f"/items/{gid}").status_code == 200:
                            acked_deletes.add(gid)
                    else:
                        v = rng.standard_normal((1, dim)).astype(np.float32)
                        r = c.post("/items", json={"embeddings": v.tolist(), "metadata": [metadata(i)]})
                        if r.status_code == 200:
                            acked_adds[r.json()["ids"][0]] = metadata(i)["path"]
                except httpx.HTTPError:
                    return  # the server is gone mid-request: that write was never acknowledged
                i += 1

    t = threading.Thread(target=stream)
    t.start()
    try:
        while len(acked_adds) < acks:
            time.sleep(0.05)
        server.kill()  # SIGKILL in the middle of the stream
        stop.set()
        t.join()
        server.start()
        with httpx.Client(base_url=server.url) as c:
            for gid, path in acked_adds.items():
                r = c.get(f"/items/{gid}")
                if gid in acked_deletes:
                    assert r.status_code == 404, (gid, r.text)
                elif gid != in_flight.get("delete"):
                    assert r.status_code == 200 and r.json()["path"] == path, (gid, r.text)
            count = c.get("/health").json()["count"]
        expected = start_count + len(acked_adds) - len(acked_deletes)
        assert expected - 1 <= count <= expected + 1  # at most the one write in flight, committed but not acknowledged, and whole
    finally:
        stop.set()
        if server.proc.poll() is None:
            server.kill(signal.SIGTERM)


def test_kill_9_mid_stream_loses_no_acknowledged_write(tmp_path, served):
    src_tmp, _, x, backend, gallery = served
    if backend == "faiss":
        where = gallery("index", tmp_path)  # the same starting index, a fresh data folder
    else:  # a gallery of its own: the running service holds the fixture's Milvus Lite gallery
        from reid_htg.utils.hashing import model_fingerprint

        fp = model_fingerprint(torch.load(src_tmp / "last.pt", weights_only=True)["model"])
        where = milvus_gallery(tmp_path, "kill", x, fp, path=np.array([f"g{i}" for i in range(200)]), pid=np.arange(200))
    server = Server(tmp_path, None, str(src_tmp / "last.pt"), *where, "--fold-every", "25").start()
    kill_mid_stream(server, 200, lambda i: {"path": f"s{i}", "pid": i}, acks=60)  # FAISS: past two snapshot folds


def test_one_service_per_data_folder(served):
    tmp, server, _, backend, gallery = served
    word = "in use by another service" if backend == "faiss" else "another process"
    with pytest.raises(AssertionError, match=word):
        Server(tmp, None, str(tmp / "last.pt"), *gallery("index", tmp)).start()  # the running server's data folder / Milvus Lite gallery
    assert httpx.get(server.url + "/health").status_code == 200


# The FAISS store's own machinery (snapshots, folds, disk faults); Milvus keeps its own.
def _gallery(tmp, n=20, fold_every=5):
    import pandas as pd

    from reid_htg.serve.store import DurableGallery

    x = np.random.default_rng(3).standard_normal((n, 16)).astype(np.float32)
    if not (tmp / "index").exists():
        GalleryIndex.build(x, pd.DataFrame({"pid": np.arange(n)})).save(str(tmp / "index"))
    return DurableGallery(str(tmp / "svc"), str(tmp / "index"), fold_every=fold_every)


def test_a_missing_snapshot_is_recovered_or_refused_never_served_in_part(tmp_path):
    import shutil

    from reid_htg.retrieval import GalleryIndexError

    g = _gallery(tmp_path)
    g.add(np.random.default_rng(4).standard_normal((6, 16)).astype(np.float32), [{"pid": 100 + i} for i in range(6)])  # folds once
    g.add(np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32), [{"pid": 200}, {"pid": 201}])
    g.close()
    snap = tmp_path / "svc" / "snapshot"
    os.replace(snap, str(snap) + ".old-4242")  # a crash between the fold's two renames
    g = _gallery(tmp_path)
    assert len(g.index) == 28 and g.get(27)["pid"] == 201 and snap.is_dir()
    g.close()
    shutil.rmtree(snap)
    with pytest.raises(GalleryIndexError, match="snapshot is missing|is missing, and the log was trimmed"):
        _gallery(tmp_path)  # starting from the initial index would serve 20 of 28 items


def test_a_failing_fold_never_fails_a_committed_write(tmp_path, monkeypatch):
    g = _gallery(tmp_path, fold_every=2)

    def full(self, path):
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")

    monkeypatch.setattr(GalleryIndex, "save", full)
    ids = g.add(np.random.default_rng(6).standard_normal((3, 16)).astype(np.float32), [{"pid": 1}, {"pid": 2}, {"pid": 3}])
    assert ids == [20, 21, 22] and len(g.index) == 23 and g.log_length() == 3 and "No space left" in g.fold_error
    monkeypatch.undo()
    g.add(np.random.default_rng(7).standard_normal((1, 16)).astype(np.float32), [{"pid": 4}])  # room again: this write folds
    assert g.log_length() == 0 and g.fold_error is None
    g.close()
    g = _gallery(tmp_path)
    assert len(g.index) == 24
    g.close()


def test_a_full_disk_on_commit_is_a_507_with_nothing_written(tmp_path, monkeypatch):
    import sqlite3

    from fastapi.testclient import TestClient

    from reid_htg.serve.app import create_app

    g = _gallery(tmp_path)

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(g, "add", full)
    res = TestClient(create_app(g)).post("/items", json={"embeddings": [[0.1] * 16], "metadata": [{"pid": 1}]})
    assert res.status_code == 507 and "disk is full" in res.json()["error"]
    g.close()


def test_a_model_is_identified_by_its_weights_not_its_metadata(tmp_path):
    """An .xml with another model's .bin, and an ONNX file whose weights were swapped under copied metadata, are
    refused: the metadata's fingerprint is believed only for the weights it was written with."""
    import onnx
    from onnx import numpy_helper

    from reid_htg.serve.embedder import Embedder
    from reid_htg.serve.export import export_onnx

    one = _checkpoint(tmp_path / "one.pt", seed=0)
    two = _checkpoint(tmp_path / "two.pt", seed=1)
    export_onnx(one, str(tmp_path / "one.onnx"))
    proto = onnx.load(str(tmp_path / "one.onnx"))
    init = proto.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))  # other weights, the same metadata
    onnx.save(proto, str(tmp_path / "changed.onnx"))
    assert Embedder.load(str(tmp_path / "one.onnx")).fingerprint == Embedder.load(one).fingerprint
    with pytest.raises(ValueError, match="not those its reid_htg metadata was written for"):
        Embedder.load(str(tmp_path / "changed.onnx"))
    if importlib.util.find_spec("openvino") is None:
        return
    from reid_htg.serve.export import export_openvino

    export_openvino(one, str(tmp_path / "one.xml"))
    export_openvino(two, str(tmp_path / "two.xml"))
    os.replace(tmp_path / "two.bin", tmp_path / "one.bin")  # model 1's .xml beside model 2's .bin
    with pytest.raises(ValueError, match="does not hold the weights"):
        Embedder.load(str(tmp_path / "one.xml"))


def test_a_gallery_without_a_fingerprint_serves_embeddings_only(tmp_path):
    from fastapi.testclient import TestClient

    from reid_htg.serve.app import create_app
    from reid_htg.serve.embedder import Embedder
    from reid_htg.serve.store import DurableGallery

    embedder = Embedder.load(_checkpoint(tmp_path / "last.pt"))
    x = np.random.default_rng(0).standard_normal((4, embedder.dim)).astype(np.float32)
    GalleryIndex.build(x, pd.DataFrame({"pid": [1, 2, 3, 4]})).save(str(tmp_path / "idx"))  # no fingerprint recorded
    image = [("files", ("a.png", open(_images(tmp_path / "img", n=1)[0], "rb").read(), "image/png"))]
    for accept, status in ((False, 409), (True, 200)):
        gallery = DurableGallery(str(tmp_path / f"svc{accept}"), str(tmp_path / "idx"))
        try:
            client = TestClient(create_app(gallery, embedder, accept_any_model=accept))
            res = client.post("/search", files=image, data={"k": "2"})
            assert res.status_code == status, res.text
            if not accept:
                assert "--accept-any-model" in res.json()["error"]
            assert client.post("/search", json={"embeddings": x[:1].tolist(), "k": 2}).status_code == 200
        finally:
            gallery.close()
