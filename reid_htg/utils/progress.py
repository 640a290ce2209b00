"""Progress of long jobs: a tqdm bar on a terminal, a plain line every ``every`` seconds otherwise (logs, CI, nohup).

Either way the line carries the count, the rate and an ETA, so a job that
writes to a file is never silent for minutes.
"""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

LOG_EVERY = float(os.environ.get("REID_PROGRESS_EVERY", "30"))  # seconds between plain lines when not a terminal


class _Lines:
    """The non-terminal stand-in of a tqdm bar: iterates, and prints a line every ``every`` seconds."""

    def __init__(self, iterable, total: int | None, desc: str, every: float):
        self.iterable, self.total, self.desc, self.every = iterable, total, desc, every
        self.postfix = ""

    def set_postfix(self, ordered_dict=None, **kw):
        self.postfix = " ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kw}.items())

    def __iter__(self):
        start = last = time.perf_counter()
        n = 0
        for item in self.iterable:
            yield item
            n += 1
            now = time.perf_counter()
            if now - last >= self.every:
                last = now
                rate = n / (now - start)
                eta = f", ETA {(self.total - n) / rate:.0f}s" if self.total and rate > 0 else ""
                of = f"/{self.total}" if self.total else ""
                print(f"{self.desc}: {n}{of} ({rate:.2f}/s{eta}) {self.postfix}".rstrip(), file=sys.stderr, flush=True)


def progress(iterable, total: int | None = None, desc: str = "", enabled: bool = True, every: float | None = None):
    """Wrap ``iterable`` with progress reporting (``enabled=False``: silent, e.g. on non-zero ranks)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, leave=False)
    return _Lines(iterable, total, desc, LOG_EVERY if every is None else every)
