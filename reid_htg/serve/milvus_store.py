"""The gallery on Milvus: the service's store for galleries beyond one machine (the ``milvus`` extra).

    gallery = MilvusGallery("gallery.db")                     # Milvus Lite: a local file, no server
    gallery = MilvusGallery("http://HOST:19530")              # a Milvus standalone or cluster: the same code

One collection holds the vectors and the metadata columns (``reid_htg_gallery``),
a second one row, the gallery's manifest (dimension, metric, model fingerprint,
metadata columns and their types), so a service process keeps no state of its
own and several can serve one Milvus. Gallery ids are Milvus's own (``auto_id``):
unique across every process that writes.

Durability: a write is acknowledged when Milvus has acknowledged the insert or
delete. On Milvus Lite that is on disk (the service's kill -9 test, on this
backend too, finds every acknowledged write after a restart). On a Milvus
server an insert is acknowledged once the proxy has written it to the
cluster's log (the WAL that Milvus replays), which is not the same as sealed
into a segment: ``flush=True`` (``tools/serve.py --milvus-flush``) also calls
``flush`` before acknowledging, at about 25 ms a write on Milvus Lite here, for
deployments that want each write sealed. Not tested here against a server.

Vector index: ``index_type`` ``flat`` (exact; Milvus FLAT), ``hnsw`` (HNSW, ``hnsw_m`` and
``ef_construction`` at build, ``ef_search`` at search) or ``ivf`` (IVF_FLAT, ``nlist``, ``nprobe``),
the FAISS store's names and parameters; ``auto``: flat up to 100k vectors, HNSW beyond. Kept in the
manifest, so every service process searches the gallery the same way.

Filters are structured (:func:`reid_htg.retrieval.index.filter_mask`'s
language) and translated into Milvus expressions with checked column names and
quoted literals: a client never sends an expression string.
"""
from __future__ import annotations

import json
import logging
import math

import numpy as np

from reid_htg.retrieval.index import RESERVED_COLUMNS, GalleryIndex, GalleryIndexError, check_params, column_kind, parse_filter
from reid_htg.serve.store import MAX_TEXT_BYTES, NotFound, check_rows, check_values
from reid_htg.utils.extras import install_hint

COLLECTION, MANIFEST = "reid_htg_gallery", "reid_htg_manifest"
_KINDS = {"int": "INT64", "float": "DOUBLE", "bool": "BOOL", "text": "VARCHAR"}
MILVUS_INDEX = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}
_PARAMS = {"flat": (), "hnsw": ("hnsw_m", "ef_construction", "ef_search"), "ivf": ("nlist", "nprobe")}
INT64 = (-(2**63), 2**63 - 1)


def index_settings(index_type: str, n: int, params: dict | None = None) -> dict:
    """The vector index of a new Milvus gallery of ``n`` vectors: ``{"type", "params"}``, defaults filled, checked by name."""
    if index_type == "auto":
        index_type = "flat" if n <= 100_000 else "hnsw"
    if index_type not in MILVUS_INDEX:
        raise GalleryIndexError(f"index type {index_type!r} is not offered on the milvus backend; use one of {list(MILVUS_INDEX)} or auto")
    params = check_params(dict(params or {}))
    extra = sorted(set(params) - set(_PARAMS[index_type]))
    if extra:
        raise GalleryIndexError(f"parameter(s) {extra} do not apply to a {index_type} index on milvus (it takes {list(_PARAMS[index_type]) or 'none'})")
    defaults = {"hnsw": {"hnsw_m": 32, "ef_construction": 80, "ef_search": 64}, "ivf": {"nlist": max(1, min(65536, int(4 * n ** 0.5))), "nprobe": 16}}
    return {"type": index_type, "params": {**defaults.get(index_type, {}), **params}}


def _literal(v, kind: str) -> str:
    """A checked value (:func:`parse_filter`) as a Milvus expression literal of its column's kind."""
    if kind == "text":  # double quotes; backslash, quote, newline and return escaped, the rest as it is (Milvus reads no \\u escapes)
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'
    if kind == "bool":
        return "true" if v else "false"
    return repr(int(v)) if kind == "int" and float(v).is_integer() else repr(float(v))


def milvus_filter(where: dict | None, columns: dict[str, str]) -> str:
    """A structured filter (checked by :func:`parse_filter`) as a Milvus boolean expression (empty: no filter)."""
    if where is None or (isinstance(where, dict) and not where):
        return ""
    parts = []
    for col, op, v in parse_filter(where, columns):
        if columns[col] == "int":  # a 64-bit column: a bound beyond its range is decided here (Milvus cannot parse it)
            low, high = INT64
            if op == "in":
                v = [x for x in v if low <= x <= high]
            elif not low <= v <= high:
                above = v > high
                passes = {"eq": False, "gt": not above, "gte": not above, "lt": above, "lte": above}[op]
                parts.append("true" if passes else "false")
                continue
        if op == "in":
            parts.append(f"{col} in [{', '.join(_literal(x, columns[col]) for x in v)}]" if v else "false")
        else:
            sym = {"eq": "==", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            parts.append(f"{col} {sym} {_literal(v, columns[col])}")
    return " and ".join(f"({p})" for p in parts)


class MilvusIndex:
    """What the service reads of a gallery's index, on Milvus: ``dim``, ``metric``, ``fingerprint``, ``len``, searches."""

    index_type = "milvus"

    def __init__(self, client, manifest: dict):
        self.client = client
        self.dim, self.metric, self.fingerprint = int(manifest["dim"]), manifest["metric"], manifest.get("fingerprint")
        self.kinds: dict[str, str] = dict(manifest["columns"])
        self.vector_index = manifest.get("index", {"type": "flat", "params": {}})  # galleries loaded before the choice: FLAT

    check_vectors = GalleryIndex.check_vectors  # the same checks: dimension, NaN/inf, zero rows; normalised for cosine
    _check_fingerprint = GalleryIndex._check_fingerprint

    def columns(self) -> list[str]:
        return ["gallery_id", *self.kinds]

    def __len__(self) -> int:
        res = self.client.query(COLLECTION, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search_records(self, queries, k: int = 10, fingerprint: str | None = None, where: dict | None = None) -> list[list[dict]]:
        """Per query, its ranked hits (``gallery_id``, ``distance``, metadata), as :meth:`GalleryIndex.search_records`."""
        self._check_fingerprint(fingerprint, "these queries")
        q = self.check_vectors(queries, "queries")
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        expr = milvus_filter(where, self.kinds)
        search = {"metric_type": "COSINE" if self.metric == "cosine" else "L2"}
        p = self.vector_index["params"]
        if self.vector_index["type"] == "hnsw":
            search["params"] = {"ef": max(int(p["ef_search"]), k)}  # Milvus needs ef >= k
        elif self.vector_index["type"] == "ivf":
            search["params"] = {"nprobe": int(p["nprobe"])}
        res = self.client.search(COLLECTION, data=q.tolist(), limit=k, filter=expr, output_fields=list(self.kinds), search_params=search)
        out = []
        for hits in res:
            rows = []
            for h in hits:
                d = 1.0 - float(h["distance"]) if self.metric == "cosine" else math.sqrt(max(float(h["distance"]), 0.0))
                rows.append({"gallery_id": int(h["gallery_id"]), **{c: h["entity"].get(c) for c in self.kinds}, "distance": d})
            rows.sort(key=lambda r: (r["distance"], r["gallery_id"]))  # ties by id, as the FAISS store
            out.append(rows)
        return out


class MilvusGallery:
    """The service's gallery on Milvus: ``add``, ``delete``, ``get`` and ``index`` as :class:`~reid_htg.serve.store.DurableGallery`.

    Args:
        uri: a Milvus Lite file (``gallery.db``) or a server (``http://HOST:19530``).
        flush: also flush every write before acknowledging it (see the module docstring).
    """

    fold_error = None  # the FAISS store's snapshot state; Milvus keeps its own
    replayed = 0

    def __init__(self, uri: str, flush: bool = False):
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise GalleryIndexError("the milvus backend needs the milvus extra: " + install_hint("milvus")) from None
        self.uri, self.flush = uri, flush
        self.client = _connect(MilvusClient, uri)
        if not self.client.has_collection(COLLECTION):
            raise GalleryIndexError(f"{uri} holds no reid-htg gallery; load one with tools/build_index.py --backend milvus --uri {uri}")
        for name in (COLLECTION, MANIFEST):
            self.client.load_collection(name)
        rows = self.client.query(MANIFEST, filter="key == 0", output_fields=["value"])
        if not rows:
            raise GalleryIndexError(f"{uri}: the gallery's manifest is missing; load the gallery again with tools/build_index.py")
        self.index = MilvusIndex(self.client, json.loads(rows[0]["value"]))
        self.columns = self.index.columns()[1:]

    @classmethod
    def create(cls, uri: str, embeddings: np.ndarray, metadata, metric: str = "cosine", fingerprint: str | None = None,
               flush: bool = False, index_type: str = "auto", **params) -> MilvusGallery:
        """A new gallery at ``uri`` from embeddings (N, D) and their metadata table (columns become the gallery's fields).

        ``index_type`` and ``params``: the vector index (see the module docstring).

        Raises:
            GalleryIndexError: ``uri`` already holds a gallery, or the data cannot be stored (a reserved column name ...).
        """
        from pymilvus import DataType, MilvusClient

        vector_index = index_settings(index_type, len(embeddings), params)
        client = _connect(MilvusClient, uri)
        if client.has_collection(COLLECTION):
            raise GalleryIndexError(f"{uri} already holds a reid-htg gallery; add to it through the service, or use another --uri")
        meta = metadata.drop(columns=[c for c in ("gallery_id",) if c in metadata.columns]).reset_index(drop=True)
        bad = [c for c in meta.columns if c in RESERVED_COLUMNS or not str(c).isidentifier()]
        if bad:
            raise GalleryIndexError(f"metadata column(s) {bad} cannot be gallery fields (reserved, or not a plain name)")
        kinds = {str(c): column_kind(meta[c].dtype) for c in meta.columns}
        for c, kind in kinds.items():
            if kind == "text" and len(meta) and meta[c].astype(str).str.encode("utf-8").str.len().max() > MAX_TEXT_BYTES:
                raise GalleryIndexError(f"metadata column {c!r} holds a value longer than a Milvus text field holds ({MAX_TEXT_BYTES:,} bytes)")
        probe = GalleryIndex(embeddings.shape[1], metric=metric)
        x = probe.check_vectors(embeddings, "embeddings")
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("gallery_id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(x.shape[1]))
        for c, kind in kinds.items():
            schema.add_field(c, getattr(DataType, _KINDS[kind]), **({"max_length": 65535} if kind == "text" else {}))
        index = client.prepare_index_params()
        p = vector_index["params"]
        build = {"hnsw": lambda: {"M": int(p["hnsw_m"]), "efConstruction": int(p["ef_construction"])}, "ivf": lambda: {"nlist": int(p["nlist"])}}
        index.add_index("vector", index_type=MILVUS_INDEX[vector_index["type"]], metric_type="COSINE" if metric == "cosine" else "L2",
                        params=build.get(vector_index["type"], dict)())
        client.create_collection(COLLECTION, schema=schema, index_params=index)
        mschema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        mschema.add_field("key", DataType.INT64, is_primary=True)
        mschema.add_field("value", DataType.VARCHAR, max_length=65535)
        mschema.add_field("pad", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field in every collection
        mindex = client.prepare_index_params()
        mindex.add_index("pad", index_type="FLAT", metric_type="L2")
        client.create_collection(MANIFEST, schema=mschema, index_params=mindex)
        manifest = {"dim": int(x.shape[1]), "metric": metric, "fingerprint": fingerprint, "columns": kinds, "index": vector_index}
        client.insert(MANIFEST, [{"key": 0, "value": json.dumps(manifest), "pad": [0.0, 0.0]}])
        records = meta.to_dict("records")
        for s in range(0, len(x), 1000):
            client.insert(COLLECTION, [{"vector": v.tolist(), **_plain(r)} for v, r in zip(x[s:s + 1000], records[s:s + 1000])])
        client.flush(COLLECTION)
        client.flush(MANIFEST)
        client.close()
        return cls(uri, flush=flush)

    def add(self, vectors, metadata: list[dict]) -> list[int]:
        """Insert (acknowledged once Milvus has acknowledged it); returns the new gallery ids."""
        x = self.index.check_vectors(vectors, "embeddings")
        check_rows(metadata, len(x), self.columns)
        check_values(metadata, self.index.kinds)  # the same rule as the FAISS store's
        res = self.client.insert(COLLECTION, [{"vector": v.tolist(), **m} for v, m in zip(x, metadata)])
        if self.flush:
            self.client.flush(COLLECTION)
        return [int(i) for i in res["ids"]]

    def get(self, gid: int) -> dict:
        rows = self.client.query(COLLECTION, filter=f"gallery_id == {int(gid)}", output_fields=list(self.index.kinds))
        if not rows:
            raise NotFound(f"gallery id {gid} is not in the gallery")
        return {"gallery_id": int(gid), **{c: rows[0].get(c) for c in self.index.kinds}}

    def delete(self, gid: int) -> None:
        self.get(gid)  # NotFound when absent
        self.client.delete(COLLECTION, ids=[int(gid)])
        if self.flush:
            self.client.flush(COLLECTION)

    def log_length(self) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


def _connect(client_class, uri: str):
    """A ``MilvusClient`` on ``uri``, or one line saying why not (pymilvus raises a bare "Open local milvus failed")."""
    local = "://" not in str(uri)
    log = logging.getLogger("milvus_lite")  # logs a failed start with its traceback; the error below says it in one line
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return client_class(str(uri))
    except Exception as exc:  # noqa: BLE001 - pymilvus raises its own exception types
        if local:
            raise GalleryIndexError(f"cannot open the Milvus Lite gallery {uri} ({getattr(exc, 'message', exc)}): is another process (a running service, "
                                    "tools/build_index.py) using it? Milvus Lite serves one process per gallery; several service processes need a "
                                    "Milvus server (--uri http://HOST:19530)") from None
        raise GalleryIndexError(f"cannot reach Milvus at {uri}: {getattr(exc, 'message', exc)}") from None
    finally:
        log.setLevel(level)


def _plain(row: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
