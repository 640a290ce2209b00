"""A gallery whose writes survive a crash: SQLite (WAL, synchronous commits) in front of a FAISS :class:`GalleryIndex`.

Layout of the data folder: ``gallery.sqlite`` holds every item's metadata
(``items``: id, metadata as JSON, deleted flag) and the log of adds (with
their vectors) and deletes since the last index snapshot (``log``);
``snapshot/`` is an index folder (:meth:`GalleryIndex.save`, written
atomically). A write is committed to SQLite first, then applied to the
in-memory index, then acknowledged; at start the snapshot (or, the first
time, the index the service was given) is loaded and the log replayed.
Replay is idempotent (an add whose id is already in the snapshot, or a delete
already applied, is skipped), so a crash at any point, also between writing a
snapshot and trimming the log, loses nothing that was acknowledged and
applies nothing by halves. Every ``fold_every`` writes the log is folded into
a new snapshot.

One process per data folder (an ``flock`` on ``.lock``: a second server on
the same folder would lose the first one's writes). At start the snapshot is
looked for where a crash during a fold could have left it (the fold's
temporary or previous folder), and the index after replay must hold every live
item SQLite holds, or the service refuses to start rather than serve a part of
the gallery. A fold that fails (a full disk) keeps the log and the old
snapshot: the write that triggered it is committed, applied and acknowledged,
and the next write tries the fold again.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import threading

import numpy as np
import pandas as pd

from reid_htg.retrieval import GalleryIndex, GalleryIndexError
from reid_htg.utils.locks import FolderInUse, FolderLock

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (gallery_id INTEGER PRIMARY KEY, metadata TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL CHECK (op IN ('add', 'delete')),
                                gallery_id INTEGER NOT NULL, vector BLOB);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def check_rows(metadata, n: int, columns: list[str]) -> None:
    """``metadata`` is one dict per embedding (``n``) with exactly the gallery's ``columns``, or a ValueError naming the row."""
    if not isinstance(metadata, list) or len(metadata) != n:
        got = len(metadata) if isinstance(metadata, list) else type(metadata).__name__
        raise ValueError(f"metadata has {got} entries for {n} embeddings; they must match one to one")
    for i, m in enumerate(metadata):
        if not isinstance(m, dict) or set(m) != set(columns):
            got = sorted(m) if isinstance(m, dict) else type(m).__name__
            raise ValueError(f"metadata[{i}] must have exactly the gallery's fields {columns}; got {got}")


MAX_TEXT_BYTES = 65_535  # the longest text field value (UTF-8 bytes): Milvus's VARCHAR limit, on both stores alike


def check_values(metadata: list[dict], kinds: dict[str, str]) -> None:
    """Every value is of its column's type, fixed when the gallery was built (``kinds``: column -> int, float, bool, text).

    One rule for both stores, checked before anything is written: a whole number within 64 bits for ``int``, a finite
    number for ``float``, true/false for ``bool``, text of at most :data:`MAX_TEXT_BYTES` for ``text``; no nulls. So one
    bad write cannot change a column's type for everyone (a 1.5 turning every pid into a float, a "abc" every numeric
    filter into an error).
    """
    for i, m in enumerate(metadata):
        for key, v in m.items():
            kind = kinds.get(key, "text")
            ok = {"text": isinstance(v, str), "bool": isinstance(v, bool),
                  "int": isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}[kind]
            if not ok:
                want = {"text": "text", "bool": "true/false", "int": "a whole number within 64 bits", "float": "a finite number"}[kind]
                raise ValueError(f"metadata[{i}][{key!r}] = {str(v)[:40]!r}: a field must be of its column's type, fixed when the gallery "
                                 f"was built; {key!r} holds {kind} ({want})")
            if kind == "text" and len(v.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
                raise ValueError(f"metadata[{i}][{key!r}] is longer than a text field holds ({MAX_TEXT_BYTES:,} bytes)")


class NotFound(KeyError):
    """A gallery id that is not in the gallery (never added, or deleted)."""


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


class DurableGallery:
    """A :class:`GalleryIndex` plus a SQLite log; ``add``/``delete`` return only once the write is committed.

    Args:
        data_dir: the service's folder (created); holds ``gallery.sqlite`` and ``snapshot/``.
        initial_index: the index folder to start from when ``data_dir`` has no snapshot yet.
        fold_every: writes between snapshots.
    """

    def __init__(self, data_dir: str, initial_index: str | None = None, fold_every: int = 1000):
        try:
            self._folder = FolderLock(data_dir, "another service")
        except FolderInUse as exc:
            raise GalleryIndexError(f"{exc}: one service per data folder (a second one would lose the first one's writes); "
                                    "stop it, or give this one another --data-dir") from None
        self.snapshot_dir = os.path.join(data_dir, "snapshot")
        self.fold_every = fold_every
        self.db = sqlite3.connect(os.path.join(data_dir, "gallery.sqlite"), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
        self.db.executescript(SCHEMA)
        self._write = threading.Lock()  # one writer at a time; searches go through the index's own lock
        self.fold_error: str | None = None
        folded = self.db.execute("SELECT value FROM state WHERE key = 'folded'").fetchone() is not None
        snapshot = self._find_snapshot()
        if snapshot is not None:
            self.index = GalleryIndex.load(snapshot)
        elif folded:
            raise GalleryIndexError(f"{self.snapshot_dir} is missing, and the log was trimmed when it was written: starting from "
                                    "the initial index would serve a part of the gallery; restore the snapshot folder from a backup")
        elif initial_index:
            self.index = GalleryIndex.load(initial_index)
        else:
            raise GalleryIndexError(f"{data_dir} has no snapshot yet: give the index folder to start from")
        if not self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]:
            self._import_metadata()
        self.replayed = self._replay()
        live = self.db.execute("SELECT COUNT(*) FROM items WHERE deleted = 0").fetchone()[0]
        if live != len(self.index):
            raise GalleryIndexError(f"{data_dir}: SQLite holds {live} live items but the index after replay holds {len(self.index)}; "
                                    "the snapshot is not this gallery's (or was replaced): restore it, refusing to serve a part")
        self.columns = self.index.columns()[1:]
        self.kinds = self.index.column_kinds()  # fixed for the gallery's life: every write is checked against them

    def close(self) -> None:
        """Close the database and release the data folder."""
        self.db.close()
        self._folder.release()

    # ------------------------------------------------------------------ start-up
    def _find_snapshot(self) -> str | None:
        """The snapshot folder, or what a crash between a fold's two renames left: its complete temporary or its previous folder."""
        if os.path.isfile(os.path.join(self.snapshot_dir, "manifest.json")):
            return self.snapshot_dir
        parent, name = os.path.split(self.snapshot_dir)
        for pattern in (".tmp-", ".old-"):  # the temporary one is newer; replay makes either complete
            for cand in sorted(os.listdir(parent)):
                path = os.path.join(parent, cand)
                if cand.startswith(name + pattern) and os.path.isfile(os.path.join(path, "manifest.json")):
                    try:
                        GalleryIndex.load(path, mmap=True)
                    except GalleryIndexError:
                        continue
                    os.replace(path, self.snapshot_dir)
                    return self.snapshot_dir
        return None

    def _import_metadata(self) -> None:
        meta, alive = self.index.meta, self.index.alive
        rows = [(int(g), json.dumps({c: _plain(v) for c, v in r.items() if c != "gallery_id"}), int(not a))
                for g, r, a in zip(meta["gallery_id"], meta.to_dict("records"), alive)]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)

    def _replay(self) -> int:
        """Apply the log to the loaded snapshot; returns how many entries changed it."""
        applied = 0
        for op, gid, blob in self.db.execute("SELECT op, gallery_id, vector FROM log ORDER BY seq").fetchall():
            if op == "add" and self.index.rows_of([gid])[0] < 0:
                meta = json.loads(self.db.execute("SELECT metadata FROM items WHERE gallery_id = ?", (gid,)).fetchone()[0])
                self.index.add(np.frombuffer(blob, np.float32)[None, :], pd.DataFrame([{"gallery_id": gid, **meta}]))
                applied += 1
            elif op == "delete" and self.index.is_alive(gid):
                self.index.delete([gid])
                applied += 1
        return applied

    # ------------------------------------------------------------------ reads
    def get(self, gid: int) -> dict:
        row = self.db.execute("SELECT metadata, deleted FROM items WHERE gallery_id = ?", (int(gid),)).fetchone()
        if row is None or row[1]:
            raise NotFound(f"gallery id {gid} is not in the gallery" + (" (deleted)" if row else ""))
        return {"gallery_id": int(gid), **json.loads(row[0])}

    def log_length(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM log").fetchone()[0]

    # ------------------------------------------------------------------ writes
    def add(self, vectors: np.ndarray, metadata: list[dict]) -> list[int]:
        """Commit, then apply; returns the new gallery ids. Vectors and metadata are checked before anything is written."""
        x = self.index.check_vectors(vectors, "embeddings")
        check_rows(metadata, len(x), self.columns)
        check_values(metadata, self.kinds)
        with self._write:
            top = self.db.execute("SELECT MAX(gallery_id) FROM items").fetchone()[0]
            start = max(-1 if top is None else int(top), self.index.max_gallery_id()) + 1
            ids = list(range(start, start + len(x)))
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT INTO items VALUES (?, ?, 0)", [(g, json.dumps(m)) for g, m in zip(ids, metadata)])
                self.db.executemany("INSERT INTO log (op, gallery_id, vector) VALUES ('add', ?, ?)",
                                    [(g, v.astype(np.float32).tobytes()) for g, v in zip(ids, x)])
            self.index.add(x, pd.DataFrame([{"gallery_id": g, **m} for g, m in zip(ids, metadata)]))
            self._maybe_fold()
        return ids

    def delete(self, gid: int) -> None:
        with self._write:
            row = self.db.execute("SELECT deleted FROM items WHERE gallery_id = ?", (int(gid),)).fetchone()
            if row is None or row[0]:
                raise NotFound(f"gallery id {gid} is not in the gallery" + (" (already deleted)" if row else ""))
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("UPDATE items SET deleted = 1 WHERE gallery_id = ?", (int(gid),))
                self.db.execute("INSERT INTO log (op, gallery_id) VALUES ('delete', ?)", (int(gid),))
            self.index.delete([int(gid)])
            self._maybe_fold()

    def _maybe_fold(self) -> None:
        """Fold when the log is long; a fold that fails is reported (``fold_error``, the health answer) and retried on a later
        write, never turned into a failure of the write that was just committed."""
        if self.fold_every and self.log_length() >= self.fold_every:
            try:
                self._fold()
                self.fold_error = None
            except (OSError, RuntimeError, sqlite3.Error, GalleryIndexError) as exc:  # FAISS reports a full disk as RuntimeError
                self.fold_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"warning: folding the log into a snapshot failed ({self.fold_error}); the log keeps every write", flush=True)

    def fold(self) -> None:
        """Write a new snapshot and trim the log it contains."""
        with self._write:
            self._fold()

    def _fold(self) -> None:
        last = self.db.execute("SELECT MAX(seq) FROM log").fetchone()[0]
        if last is None:
            return
        self.index.save(self.snapshot_dir)  # atomic; a crash before the trim below only makes replay skip entries
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM log WHERE seq <= ?", (last,))
            self.db.execute("INSERT OR REPLACE INTO state VALUES ('folded', ?)", (str(last),))
