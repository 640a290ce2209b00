"""Locks: a folder one process owns (trainers, the service), and a readers-writer lock (the retrieval index)."""
from __future__ import annotations

import fcntl
import os
import threading


class FolderInUse(ValueError):
    """A folder that another process holds."""


class FolderLock:
    """An exclusive ``flock`` on ``FOLDER/.lock``, held until :meth:`release` (the kernel drops it with the process,
    so a killed holder never leaves the folder locked). The holder's pid is written in the file for the message.

    Raises:
        FolderInUse: another process holds the folder (``what`` names the kind of holder in the message).
    """

    def __init__(self, folder: str, what: str = "another process"):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by {what} (process {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
