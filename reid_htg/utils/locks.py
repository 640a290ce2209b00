"""Locks shared by the retrieval index and the service."""
from __future__ import annotations

import threading


class RWLock:
    """Many readers or one writer (writer-preferring: a waiting writer blocks new readers, so writes are not starved).

    FAISS mutates an index in place on ``add``; a search running at the same
    time reads freed memory (IndexError on flat, a crash on HNSW). Searches
    hold the read side, ``add`` / ``delete`` / ``compact`` / ``save`` the write side.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self):
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self):
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self):
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self):
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    class _Side:
        def __init__(self, acquire, release):
            self.acquire, self.release = acquire, release

        def __enter__(self):
            self.acquire()

        def __exit__(self, *exc):
            self.release()

    @property
    def read(self):
        return self._Side(self.acquire_read, self.release_read)

    @property
    def write(self):
        return self._Side(self.acquire_write, self.release_write)
