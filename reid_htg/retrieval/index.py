"""A FAISS gallery index: embeddings + a metadata table, exact or approximate search, saved as a folder.

Design:

- Rows are numbered in the order they were added; FAISS stores the row number
  as its id. Every row has a user-visible ``gallery_id`` (int64, given or
  assigned 0, 1, 2, ...). Deleting marks rows dead; searches skip dead rows
  through FAISS's ID selectors, and :meth:`GalleryIndex.compact` rebuilds
  without them.
- ``cosine`` indexes L2-normalised vectors by inner product and reports the
  cosine distance 1 - cos; ``euclidean`` reports the Euclidean distance.
- Index types, by name (:data:`INDEX_TYPES`): ``flat`` (exact), ``hnsw``,
  ``ivf`` (IVF-Flat), ``ivfpq`` (IVF-PQ whose shortlist of ``rerank * k`` is
  re-ranked with exact distances from the stored vectors). ``auto`` picks
  flat up to 100k vectors, HNSW up to 2M, IVF-PQ beyond.
- The raw (normalised) vectors are kept beside the FAISS index: exact
  re-ranking, compaction and evaluation need them. On disk they are a ``.npy``
  that :meth:`GalleryIndex.load` can memory-map.
- A saved index is a folder: ``manifest.json`` (dimension, metric, index type,
  count, model fingerprint, parameters, and a SHA-256 of every file),
  ``index.faiss``, ``vectors.npy``, ``alive.npy``, ``metadata.csv``. Saving
  writes a sibling folder and renames it into place, so an interrupted save
  never leaves a half-written index under the name; loading checks every
  checksum, so a truncated or altered file is refused by name.
- Searching is read-only: several threads may search one index at once.
- Writes cost what they add, not what the gallery holds: vectors, the alive
  mask and each metadata column live in buffers that grow by doubling, and a
  gallery id is found by binary search while ids only grow (the usual case)
  or through a hash index otherwise. A service adding one item to a 100k
  gallery no longer copies the gallery under the write lock.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading

import faiss
import numpy as np
import pandas as pd

from reid_htg.metrics.distance import METRICS
from reid_htg.retrieval.checks import EmbeddingsError, check_embeddings
from reid_htg.utils.hashing import file_sha256
from reid_htg.utils.locks import RWLock

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
FORMAT_VERSION = 1
INDEX_PARAMS = ("hnsw_m", "ef_search", "ef_construction", "nlist", "nprobe", "pq_m", "pq_nbits", "rerank")
_FILES = ("index.faiss", "vectors.npy", "alive.npy", "metadata.csv")
RESERVED_COLUMNS = ("query", "rank", "distance", "unknown")  # the columns a search result adds before the metadata
PARAM_RANGES = {  # index parameter -> (smallest, largest) accepted: FAISS trusts its caller (hnsw_m=0 aborts, -1 hangs)
    "hnsw_m": (2, 256), "ef_search": (1, 1 << 20), "ef_construction": (1, 1 << 20), "nlist": (1, 1 << 24), "nprobe": (1, 1 << 24),
    "pq_m": (1, 4096), "pq_nbits": (1, 16), "rerank": (1, 1 << 16),
}


def check_params(params: dict) -> dict:
    """Index parameters as ints within their ranges, refused by name otherwise (before FAISS sees them)."""
    unknown = sorted(set(params) - set(INDEX_PARAMS))
    if unknown:
        raise GalleryIndexError(f"unknown index parameter(s) {unknown}; valid: {list(INDEX_PARAMS)}")
    out = {}
    for k, v in params.items():
        lo, hi = PARAM_RANGES[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
            raise GalleryIndexError(f"index parameter {k}={v!r} must be a whole number from {lo} to {hi}")
        out[k] = int(v)
    return out


FILTER_OPS = ("eq", "in", "gt", "gte", "lt", "lte")


def column_kind(dtype) -> str:
    """``int``, ``float``, ``bool`` or ``text``: what a metadata column holds, as filters and stores see it."""
    try:
        k = np.dtype(dtype).kind
    except TypeError:  # a pandas extension dtype (str, category ...)
        return "text"
    return {"i": "int", "u": "int", "f": "float", "b": "bool"}.get(k, "text")


def parse_filter(where, kinds: dict[str, str]) -> list[tuple[str, str, object]]:
    """A structured filter checked against the columns' kinds: ``[(column, operator, value)]``, combined with and.

    ``where`` maps a column to a value (equality) or to operators: ``{"camid": {"in": [3, 4]}, "time": {"gte": 1700000000}}``;
    operators are :data:`FILTER_OPS`. Never an expression string. The one checker of both gallery stores (FAISS
    applies the conditions with numpy, Milvus renders them as an expression).

    Raises:
        GalleryIndexError: an unknown column or operator, or a value of the wrong type for its column.
    """
    if not isinstance(where, dict):
        raise GalleryIndexError(f"a filter is a mapping of column -> value or -> {{operator: value}}, got {type(where).__name__}")
    out = []
    for col, cond in where.items():
        if col not in kinds:
            raise GalleryIndexError(f"filter column {col!r} is not a metadata column; columns: {sorted(kinds)}")
        kind = kinds[col]
        conds = cond if isinstance(cond, dict) else {"eq": cond}
        if not conds:
            raise GalleryIndexError(f"filter on {col!r} has no condition")
        for op, v in conds.items():
            if op not in FILTER_OPS:
                raise GalleryIndexError(f"unknown filter operator {op!r} on {col!r}; use one of {list(FILTER_OPS)}")
            if op == "in" and not isinstance(v, list):
                raise GalleryIndexError(f"filter {col!r}: 'in' takes a list, got {v!r}")
            if op in ("gt", "gte", "lt", "lte") and kind not in ("int", "float"):
                raise GalleryIndexError(f"filter {col!r}: {op} needs a numeric column")
            for x in v if op == "in" else [v]:
                number = (isinstance(x, (int, float)) and not isinstance(x, bool)
                          and (abs(x) < 2**1024 if isinstance(x, int) else math.isfinite(x)))  # an int of any size a float can hold
                ok = {"text": isinstance(x, str), "bool": isinstance(x, bool), "int": number, "float": number}[kind]
                if not ok:
                    what = {"text": "text", "bool": "true/false"}.get(kind, "a number")
                    raise GalleryIndexError(f"filter {col!r} {op}: {x!r} is not {what}, as the column is")
            out.append((col, op, v))
    return out


def filter_mask(columns: dict, n: int, where: dict) -> np.ndarray:
    """(n,) bool: the rows whose metadata pass a structured filter (:func:`parse_filter`)."""
    kinds = {c: column_kind(np.asarray(v[:n]).dtype) for c, v in columns.items()}
    mask = np.ones(n, bool)
    for col, op, v in parse_filter(where, kinds):
        values = np.asarray(columns[col][:n])
        if op == "eq":
            mask &= values == v
        elif op == "in":
            if kinds[col] == "int":  # only whole numbers within 64 bits can equal a 64-bit value (2.5 must not become 2)
                v = [x for x in v if -(2**63) <= x < 2**63 and float(x).is_integer()]
            mask &= np.isin(values, np.asarray(v, dtype=values.dtype if kinds[col] != "text" else object)) if v else False
        else:
            mask &= {"gt": values > v, "gte": values >= v, "lt": values < v, "lte": values <= v}[op]
    return mask


def _int_ids(values, what: str = "gallery_id") -> np.ndarray:
    """``values`` as int64 ids, refusing what is not a whole number within int64 (never truncated silently)."""
    a = np.asarray(values)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise GalleryIndexError(f"{what} values must be whole numbers, got {a.dtype} values such as {a.reshape(-1)[:3].tolist()}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            bad = a[~np.isfinite(a) | (a != np.round(a))]
            raise GalleryIndexError(f"{what} values must be whole numbers, got {bad[:3].tolist()}")
    if a.size and (a.min() < -(2**63) or a.max() > 2**63 - 1):
        raise GalleryIndexError(f"{what} values must fit in 64 bits")
    return a.astype(np.int64)


class GalleryIndexError(ValueError):
    """A gallery index refused an input or a file; the message names the problem."""


def _merged_dtype(old: np.dtype, new: np.dtype, rows_before: int) -> np.dtype:
    """The dtype a metadata column takes when rows of ``new`` join rows of ``old`` (as ``pd.concat`` would; object when mixed)."""
    if not rows_before:
        return new
    if old.kind in "biuf" and new.kind in "biuf":
        return np.result_type(old, new)
    return np.dtype(object)


def _manifest_checksum(man: dict) -> str:
    """SHA-256 of a manifest's own fields (all but this checksum), canonical JSON: an edited field is caught on load."""
    body = {k: v for k, v in man.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def choose_index_type(n: int) -> str:
    """The default index type for ``n`` gallery vectors."""
    return "flat" if n <= 100_000 else ("hnsw" if n <= 2_000_000 else "ivfpq")


class GalleryIndex:
    """Embeddings of a gallery with their metadata, searchable by FAISS.

    Args:
        dim: embedding size.
        metric: ``cosine`` or ``euclidean`` (the old name ``l2`` is refused with the new one).
        index_type: one of :data:`INDEX_TYPES`.
        fingerprint: fingerprint of the model that made the embeddings (checked on add and search).
        params: index parameters: ``hnsw_m`` (32), ``ef_search`` (64), ``ef_construction`` (80),
            ``nlist`` (about 4 sqrt(n)), ``nprobe`` (16), ``pq_m`` (dim/8 sub-quantisers), ``pq_nbits`` (8, fewer below 9,984 training vectors), ``rerank`` (10).
    """

    def __init__(self, dim: int, metric: str = "cosine", index_type: str = "flat", fingerprint: str | None = None, params: dict | None = None):
        if metric == "l2":
            raise GalleryIndexError("metric 'l2' is now called 'euclidean' (the name evaluation uses); pass metric='euclidean'")
        if metric not in METRICS:
            raise GalleryIndexError(f"unknown metric {metric!r}; use one of {list(METRICS)}")
        if index_type not in INDEX_TYPES:
            raise GalleryIndexError(f"unknown index type {index_type!r}; use one of {list(INDEX_TYPES)} or auto")
        params = check_params(dict(params or {}))
        self.dim, self.metric, self.index_type, self.fingerprint = int(dim), metric, index_type, fingerprint
        self.params = {"hnsw_m": 32, "ef_search": 64, "ef_construction": 80, "nprobe": 16, "rerank": 10, **params}
        self.index = None
        self._lock = RWLock()  # searches share it; add, delete, compact and save hold it alone
        self._set_rows(np.zeros((0, self.dim), np.float32), np.zeros(0, bool), {"gallery_id": np.zeros(0, np.int64)})

    # ---------------------------------------------------------------- row storage
    def _set_rows(self, vectors: np.ndarray, alive: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Replace every row: ``vectors`` (may be a read-only memory map; copied on the first add), ``alive``, metadata columns."""
        self._vecs, self._alive, self._cols = vectors, np.asarray(alive, bool).copy(), dict(columns)
        self._n, self._live = len(vectors), int(self._alive.sum())
        ids = self._cols["gallery_id"]
        self._ids_sorted = bool(len(ids) < 2 or (np.diff(ids) > 0).all())
        self._id_index = None  # pd.Index over gallery ids, built on demand when they are not increasing
        self._meta_df = None

    @property
    def vectors(self) -> np.ndarray:
        """(rows, dim) float32, live and dead rows in row order (a view; do not write to it)."""
        return self._vecs[: self._n]

    @property
    def alive(self) -> np.ndarray:
        """(rows,) bool: False where a row was deleted (a view)."""
        return self._alive[: self._n]

    @property
    def meta(self) -> pd.DataFrame:
        """The metadata table, one row per row, ``gallery_id`` first (built once per change, then cached)."""
        if self._meta_df is None:
            self._meta_df = pd.DataFrame({c: v[: self._n] for c, v in self._cols.items()})
        return self._meta_df

    def columns(self) -> list[str]:
        """Metadata column names, ``gallery_id`` first."""
        return ["gallery_id", *(c for c in self._cols if c != "gallery_id")]

    def column_kinds(self) -> dict[str, str]:
        """Each metadata column's kind (:func:`column_kind`: int, float, bool or text), ``gallery_id`` left out."""
        return {c: column_kind(v.dtype) for c, v in self._cols.items() if c != "gallery_id"}

    def rows_of(self, gallery_ids) -> np.ndarray:
        """Row numbers of ``gallery_ids`` (-1 where an id was never added)."""
        ids = np.atleast_1d(np.asarray(gallery_ids, np.int64))
        have = self._cols["gallery_id"][: self._n]
        if not len(have):
            return np.full(len(ids), -1, np.int64)
        if self._ids_sorted:
            pos = np.minimum(np.searchsorted(have, ids), len(have) - 1)
            return np.where(have[pos] == ids, pos, -1)
        if self._id_index is None:
            self._id_index = pd.Index(have)
        return self._id_index.get_indexer(ids)

    def is_alive(self, gallery_id: int) -> bool:
        """True when ``gallery_id`` was added and not deleted."""
        pos = int(self.rows_of([gallery_id])[0])
        return pos >= 0 and bool(self._alive[pos])

    def max_gallery_id(self) -> int:
        """The largest gallery id so far (-1 for an empty index)."""
        ids = self._cols["gallery_id"][: self._n]
        if not len(ids):
            return -1
        return int(ids[-1]) if self._ids_sorted else int(ids.max())

    @staticmethod
    def _grow(buf: np.ndarray, need: int, dtype=None) -> np.ndarray:
        """``buf`` with room for ``need`` rows (doubling), of ``dtype``; the same array when it has room and is writable."""
        dtype = buf.dtype if dtype is None else np.dtype(dtype)
        if len(buf) >= need and buf.flags.writeable and buf.dtype == dtype and not isinstance(buf, np.memmap):
            return buf
        cap = max(need, 2 * len(buf), 16) if len(buf) < need else len(buf)
        out = np.empty((cap, *buf.shape[1:]), dtype)
        out[: len(buf)] = buf
        return out

    def _append_rows(self, x: np.ndarray, meta: pd.DataFrame) -> None:
        """Append rows in place (under the write lock); rows already there are never moved within a buffer, so views stay valid."""
        n0, n = self._n, len(x)
        self._vecs = self._grow(self._vecs, n0 + n)
        self._vecs[n0 : n0 + n] = x
        self._alive = self._grow(self._alive, n0 + n)
        self._alive[n0 : n0 + n] = True
        for c in meta.columns:
            new = meta[c].to_numpy()
            old = self._cols.get(c)
            if old is None:  # the first rows define the columns
                old = np.empty(0, new.dtype)
            dtype = old.dtype if new.dtype == old.dtype else _merged_dtype(old.dtype, new.dtype, n0)
            buf = self._grow(old, n0 + n, dtype)
            buf[n0 : n0 + n] = new
            self._cols[c] = buf
        ids = self._cols["gallery_id"]
        grows = (np.diff(ids[n0 : n0 + n]) > 0).all() and not (n0 and ids[n0] <= ids[n0 - 1])
        self._ids_sorted = bool(self._ids_sorted and grows)
        self._n, self._live = n0 + n, self._live + n
        self._id_index, self._meta_df = None, None

    # ---------------------------------------------------------------- building
    @classmethod
    def build(cls, embeddings, metadata: pd.DataFrame | None = None, metric: str = "cosine", index_type: str = "auto", fingerprint: str | None = None, **params) -> "GalleryIndex":
        """An index over ``embeddings`` (N, D) with ``metadata`` (N rows; a ``gallery_id`` column is optional)."""
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise GalleryIndexError(f"embeddings must be (N, D), got shape {emb.shape}")
        if index_type == "auto":
            index_type = choose_index_type(len(emb))
        idx = cls(emb.shape[1], metric, index_type, fingerprint, params)
        idx.add(emb, metadata, fingerprint=fingerprint)
        return idx

    def check_vectors(self, x, what: str) -> np.ndarray:
        """``x`` as (N, dim) float32 (normalised for cosine), or a GalleryIndexError naming a wrong dimension, NaN/inf or a
        zero vector (:func:`reid_htg.retrieval.checks.check_embeddings`, the one embeddings check)."""
        try:
            x = check_embeddings(x, what, dim=self.dim)
        except EmbeddingsError as exc:
            raise GalleryIndexError(str(exc)) from None
        if self.metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x)

    def _check_fingerprint(self, fingerprint: str | None, what: str) -> None:
        if fingerprint is not None and self.fingerprint is not None and fingerprint != self.fingerprint:
            raise GalleryIndexError(f"{what} come from model {fingerprint}, but this index was built from model {self.fingerprint}; "
                              "embed with the same checkpoint or rebuild the index")

    def _new_faiss(self, train: np.ndarray):
        d, p = self.dim, self.params
        mt = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.index_type == "flat":
            return faiss.IndexFlatIP(d) if mt == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(p["hnsw_m"]), mt)
            index.hnsw.efConstruction = int(p["ef_construction"])
            return index
        n = len(train)
        nlist = int(p.get("nlist") or max(1, min(int(4 * np.sqrt(max(n, 1))), max(n // 39, 1))))
        quantizer = faiss.IndexFlatIP(d) if mt == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
        if self.index_type == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, mt)
        else:
            m = int(p.get("pq_m") or max(1, d // 8))
            if d % m:
                raise GalleryIndexError(f"ivfpq: pq_m={m} must divide the dimension {d}")
            # 8-bit codes need 256 x 39 training vectors per sub-quantizer; fewer bits for smaller galleries
            nbits = int(p.get("pq_nbits") or int(np.clip(np.floor(np.log2(max(n, 1) / 39)), 4, 8)))
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, mt)
            self.params["pq_nbits"] = nbits
        if n < nlist:
            raise GalleryIndexError(f"{self.index_type}: {n} vectors cannot train {nlist} lists; add more vectors or use flat/hnsw")
        index.train(train)
        self.params["nlist"] = nlist
        return index

    def add(self, embeddings, metadata: pd.DataFrame | None = None, fingerprint: str | None = None) -> np.ndarray:
        """Add vectors (and their metadata rows); returns their gallery ids.

        ``metadata`` may carry a ``gallery_id`` column (unique, not already in
        the index); otherwise ids continue from the largest one so far.
        """
        self._check_fingerprint(fingerprint, "these embeddings")
        x = self.check_vectors(embeddings, "embeddings")
        n = len(x)
        meta = pd.DataFrame(index=range(n)) if metadata is None else metadata.reset_index(drop=True).copy()
        if len(meta) != n:
            raise GalleryIndexError(f"metadata has {len(meta)} rows but there are {n} embeddings; they must match one to one")
        reserved = [c for c in meta.columns if c in RESERVED_COLUMNS]
        if reserved:
            raise GalleryIndexError(f"metadata column(s) {reserved} are names a search result uses ({', '.join(RESERVED_COLUMNS)}); rename them")
        if "gallery_id" in meta:
            meta["gallery_id"] = _int_ids(meta["gallery_id"].to_numpy())
        with self._lock.write:
            if self._n:  # every row has every column: no NaN filling that a saved index could not read back
                have, new = set(self._cols) - {"gallery_id"}, set(meta.columns) - {"gallery_id"}
                if have != new:
                    raise GalleryIndexError(f"metadata columns must match the index's {sorted(have)}: missing {sorted(have - new)}, "
                                            f"unknown {sorted(new - have)}")
            if "gallery_id" in meta:
                ids = meta["gallery_id"].to_numpy()
                clash = ids[self.rows_of(ids) >= 0]
                if len(np.unique(ids)) != n or len(clash):
                    raise GalleryIndexError(f"gallery_id values must be unique and new; repeated: {clash[:5].tolist() or 'within the batch'}")
                meta["gallery_id"] = ids
            else:
                start = self.max_gallery_id() + 1
                ids = np.arange(start, start + n, dtype=np.int64)
                meta.insert(0, "gallery_id", ids)
            meta = meta[["gallery_id", *(self.columns()[1:] if self._n else [c for c in meta.columns if c != "gallery_id"])]]
            if self.index is None:
                self.index = self._new_faiss(x)
            rows = np.arange(self._n, self._n + n, dtype=np.int64)
            if self.index_type in ("ivf", "ivfpq"):
                self.index.add_with_ids(x, rows)
            else:
                self.index.add(x)  # sequential ids = row numbers
            self._append_rows(x, meta)
        return ids

    def delete(self, gallery_ids) -> int:
        """Remove items by gallery id; returns how many were live. Unknown ids raise."""
        ids = np.atleast_1d(_int_ids(gallery_ids))
        with self._lock.write:
            pos = self.rows_of(ids)
            if (pos < 0).any():
                raise GalleryIndexError(f"gallery ids not in the index: {ids[pos < 0][:10].tolist()}")
            pos = np.unique(pos)
            was = int(self._alive[pos].sum())
            self._alive[pos] = False  # in place: searches hold the read side of the lock, so none is running
            self._live -= was
        return was

    def compact(self) -> None:
        """Rebuild without deleted rows (IVF keeps its trained lists)."""
        with self._lock.write:
            keep = np.flatnonzero(self.alive)
            vec = np.asarray(self.vectors)[keep]
            if self.index_type in ("ivf", "ivfpq"):
                self.index.reset()
                self.index.add_with_ids(vec, np.arange(len(vec), dtype=np.int64))
            else:
                self.index = self._new_faiss(vec)
                if len(vec):
                    self.index.add(vec)
            self._set_rows(vec, np.ones(len(vec), bool), {c: v[: self._n][keep] for c, v in self._cols.items()})

    def __len__(self) -> int:
        return self._live

    # ---------------------------------------------------------------- search
    def _search_params(self, dead: np.ndarray):
        sel = faiss.IDSelectorBatch(dead) if len(dead) else None
        not_sel = faiss.IDSelectorNot(sel) if sel is not None else None
        kw = {"sel": not_sel} if not_sel is not None else {}
        if self.index_type == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(self.params["ef_search"]), **kw)
        elif self.index_type in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(nprobe=int(self.params["nprobe"]), **kw)
        else:
            params = faiss.SearchParameters(**kw) if kw else None
        return params, (sel, not_sel)  # the selectors must outlive the search call

    def search_raw(self, queries, k: int, fingerprint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) distances and row numbers (-1 where fewer than k live items), nearest first."""
        self._check_fingerprint(fingerprint, "these queries")
        q = self.check_vectors(queries, "queries")
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        with self._lock.read:
            return self._search_locked(q, k)

    def _filtered_locked(self, q: np.ndarray, k: int, where: dict) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the live rows that pass ``where``: the k nearest that pass, ties by row, whatever the index type.

        Distances in float64, the passing vectors block by block (memory O(64 x block)), a running top-k per query.
        """
        rows = np.flatnonzero(self.alive & filter_mask(self._cols, self._n, where))
        dist_out = np.full((len(q), k), np.inf, np.float32)
        rows_out = np.full((len(q), k), -1, np.int64)
        if not len(rows):
            return dist_out, rows_out
        vectors = np.asarray(self.vectors)
        for s0 in range(0, len(q), 64):
            qb = q[s0:s0 + 64].astype(np.float64)
            best_d = np.full((len(qb), 0), np.inf)
            best_r = np.zeros((len(qb), 0), np.int64)
            for s1 in range(0, len(rows), 1 << 14):
                r = rows[s1:s1 + (1 << 14)]
                v = vectors[r].astype(np.float64)
                if self.metric == "cosine":
                    d = 1.0 - qb @ v.T
                else:
                    d = np.sqrt(np.maximum((qb * qb).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * qb @ v.T, 0))
                best_d = np.concatenate([best_d, d], 1)
                best_r = np.concatenate([best_r, np.broadcast_to(r, d.shape)], 1)
                order = np.lexsort((best_r, best_d), axis=1)[:, :k]  # by distance, ties by row
                best_d, best_r = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_r, order, 1)
            kk = best_d.shape[1]
            dist_out[s0:s0 + len(qb), :kk], rows_out[s0:s0 + len(qb), :kk] = best_d, best_r
        return dist_out, rows_out

    def _search_locked(self, q: np.ndarray, k: int, where: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        index, alive, vectors = self.index, self.alive, self.vectors
        if index is None or not self._live:
            raise GalleryIndexError("the index is empty")
        if where:
            return self._filtered_locked(q, k, where)
        k_eff = min(k, self._live)
        dead = np.flatnonzero(~alive).astype(np.int64) if self._live < len(alive) else np.zeros(0, np.int64)
        params, _keep = self._search_params(dead)
        fetch = k_eff * int(self.params["rerank"]) if self.index_type == "ivfpq" else k_eff
        fetch = min(fetch, len(alive))
        scores, rows = index.search(q, fetch, params=params)
        if self.index_type == "ivfpq":  # exact re-ranking of the shortlist
            valid = rows >= 0
            cand = np.asarray(vectors)[np.where(valid, rows, 0)]
            exact = np.einsum("qd,qkd->qk", q, cand) if self.metric == "cosine" else ((cand - q[:, None, :]) ** 2).sum(2)
            exact = np.where(valid, exact, -np.inf if self.metric == "cosine" else np.inf)
            order = np.argsort(-exact if self.metric == "cosine" else exact, axis=1, kind="stable")[:, :k_eff]
            scores, rows = np.take_along_axis(exact, order, 1), np.take_along_axis(rows, order, 1)
        dist = 1.0 - scores if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0))
        dist = np.where(rows >= 0, dist, np.inf).astype(np.float32)
        if k_eff < k:
            pad = k - k_eff
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return dist, rows

    def search(self, queries, k: int = 10, fingerprint: str | None = None, query_names=None, where: dict | None = None) -> pd.DataFrame:
        """Top-k table: ``query, rank, gallery_id, distance`` and the gallery's metadata columns.

        Args:
            queries: (Q, D) or (D,) embeddings.
            k: results per query (fewer when the gallery is smaller).
            fingerprint: the querying model's fingerprint, checked against the index's.
            query_names: (Q,) labels for the ``query`` column (default 0..Q-1).
            where: a structured metadata filter (:func:`filter_mask`): the k nearest that pass it, found exactly
                (fewer when fewer pass; none when nothing does).
        """
        self._check_fingerprint(fingerprint, "these queries")
        qv = self.check_vectors(queries, "queries")
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        with self._lock.read:  # rows and metadata from the same state
            dist, rows = self._search_locked(qv, k, where)
            meta_all = self.meta
        q, kk = rows.shape
        qi, rank = np.repeat(np.arange(q), kk), np.tile(np.arange(1, kk + 1), q)
        r = rows.reshape(-1)
        ok = r >= 0
        meta = meta_all.iloc[r[ok]].reset_index(drop=True)
        names = np.arange(q) if query_names is None else np.asarray(query_names)
        table = pd.DataFrame({"query": names[qi[ok]], "rank": rank[ok], "distance": dist.reshape(-1)[ok]})
        table.insert(2, "gallery_id", meta.pop("gallery_id").to_numpy())
        return pd.concat([table, meta], axis=1)

    def search_records(self, queries, k: int = 10, fingerprint: str | None = None, where: dict | None = None) -> list[list[dict]]:
        """Per query, its ranked results as plain dicts (``gallery_id``, ``distance``, metadata): :meth:`search` without pandas per call.

        The service answers with these; a ``search`` table costs a DataFrame build per request.
        """
        self._check_fingerprint(fingerprint, "these queries")
        q = self.check_vectors(queries, "queries")
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        with self._lock.read:
            dist, rows = self._search_locked(q, k, where)
            cols = {c: v[: self._n] for c, v in self._cols.items()}  # views: appends never move rows already there
        out = []
        for d_row, r_row in zip(dist, rows):
            hits = []
            for d, r in zip(d_row, r_row):
                if r < 0:
                    break
                item = {c: (v[r].item() if hasattr(v[r], "item") else v[r]) for c, v in cols.items()}
                item["distance"] = float(d)
                hits.append(item)
            out.append(hits)
        return out

    # ---------------------------------------------------------------- storage
    def manifest(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "dim": self.dim, "metric": self.metric, "index_type": self.index_type,
            "count": len(self), "rows": int(len(self.alive)), "fingerprint": self.fingerprint, "params": self.params,
            "faiss_version": faiss.__version__,
            "metadata_dtypes": {c: str(t) for c, t in self.meta.dtypes.items()},
        }

    def save(self, path: str) -> None:
        """Write the index folder atomically (a sibling temporary folder, loaded back to check it, then renamed into place).

        An existing ``path`` is replaced only when it is an index folder (it
        holds a ``manifest.json``); any other existing file or folder is refused.
        """
        if self.index is None:
            raise GalleryIndexError("cannot save an empty index")
        path = os.path.abspath(path.rstrip("/") or "/")
        if os.path.exists(path) and not os.path.isfile(os.path.join(path, "manifest.json")):
            raise GalleryIndexError(f"{path} exists and is not an index folder (no manifest.json); refusing to replace it: choose a new --out")
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:  # a failure here (a full disk, say) removes the temporary folder and leaves path as it was
            os.makedirs(tmp)
            with self._lock.read:  # a consistent snapshot; searches go on meanwhile
                faiss.write_index(self.index, os.path.join(tmp, "index.faiss"))
                np.save(os.path.join(tmp, "vectors.npy"), np.asarray(self.vectors))
                np.save(os.path.join(tmp, "alive.npy"), self.alive)
                self.meta.to_csv(os.path.join(tmp, "metadata.csv"), index=False)
                manifest = self.manifest()
            manifest["sha256"] = {f: file_sha256(os.path.join(tmp, f)) for f in _FILES}
            manifest["manifest_sha256"] = _manifest_checksum(manifest)
            with open(os.path.join(tmp, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=2)
            type(self).load(tmp, mmap=True)  # never replace a good copy with one that load would refuse
        except GalleryIndexError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise GalleryIndexError(f"the index could not be saved in a form that loads back ({exc}); {path} is unchanged") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = f"{path}.old-{os.getpid()}"
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: str, mmap: bool = False, fingerprint: str | None = None) -> "GalleryIndex":
        """Load an index folder, refusing missing, truncated or altered files by name."""
        mpath = os.path.join(path, "manifest.json")
        if not os.path.isfile(mpath):
            raise GalleryIndexError(f"{path!r} is not an index folder (no manifest.json); build one with tools/build_index.py")
        try:
            with open(mpath) as fh:
                man = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GalleryIndexError(f"{mpath} is damaged ({exc})") from None
        if not isinstance(man, dict):
            raise GalleryIndexError(f"{mpath} is not a JSON object; the index is damaged, rebuild it")
        fields = ("format_version", "dim", "metric", "index_type", "count", "rows", "params", "sha256", "metadata_dtypes", "manifest_sha256")
        missing = [k for k in fields if k not in man]
        if missing:
            raise GalleryIndexError(f"{mpath} lacks field(s) {missing} (damaged, edited, or written by an older version); rebuild the index")
        if man["manifest_sha256"] != _manifest_checksum(man):
            raise GalleryIndexError(f"{mpath} was edited (its fields do not match their checksum); rebuild the index")
        if man.get("format_version") != FORMAT_VERSION:
            raise GalleryIndexError(f"{path}: index format {man.get('format_version')} is not {FORMAT_VERSION}; rebuild it")
        for f in _FILES:
            fp = os.path.join(path, f)
            if not os.path.isfile(fp):
                raise GalleryIndexError(f"{path}: file {f} is missing; the index is incomplete, rebuild it")
            if not isinstance(man["sha256"], dict) or file_sha256(fp) != man["sha256"].get(f):
                raise GalleryIndexError(f"{path}: file {f} does not match its checksum (truncated or altered); rebuild the index")
        idx = cls(man["dim"], man["metric"], man["index_type"], man.get("fingerprint"), man["params"])
        idx._check_fingerprint(fingerprint, "the caller's model")
        try:
            idx.index = faiss.read_index(os.path.join(path, "index.faiss"))
        except RuntimeError as exc:
            raise GalleryIndexError(f"{path}: index.faiss cannot be read ({exc})") from None
        vectors = np.load(os.path.join(path, "vectors.npy"), mmap_mode="r" if mmap else None)
        alive = np.load(os.path.join(path, "alive.npy"))
        dtypes = man["metadata_dtypes"]
        text = {c: str for c, t in dtypes.items() if t in ("object", "str", "string")}  # "007" stays "007", "1e3" stays "1e3"
        meta = pd.read_csv(os.path.join(path, "metadata.csv"), keep_default_na=False, dtype=text or None)
        meta = meta.astype({c: t for c, t in dtypes.items() if c not in text and c in meta})
        rows = len(alive)
        if "gallery_id" not in meta or not (len(meta) == len(vectors) == rows == idx.index.ntotal) or int(alive.sum()) != man["count"]:
            raise GalleryIndexError(
                f"{path}: counts disagree (manifest {man['count']} live of {man['rows']}, metadata {len(meta)}, "
                f"vectors {len(vectors)}, faiss {idx.index.ntotal}); rebuild the index"
            )
        idx._set_rows(vectors, alive, {c: meta[c].to_numpy() for c in meta.columns})
        idx._meta_df = meta
        if vectors.ndim != 2 or vectors.shape[1] != idx.dim or idx.index.d != idx.dim:
            raise GalleryIndexError(f"{path}: stored vectors are not {idx.dim}-d as the manifest says; rebuild the index")
        return idx
