"""Run bookkeeping shared by the trainers: the output folder a run owns, the resume check, the per-epoch metrics log.

- **One process per folder.** :meth:`RunFolder.start` takes an exclusive
  ``flock`` on ``OUT/.lock`` and holds it until the run ends (the lock goes
  with the process, so a killed run never leaves the folder locked). A second
  training started into the same folder is refused in one line instead of
  interleaving its files with the first's.
- **Nothing of a finished run is lost to a mistake.** A folder that holds a
  run is refused without ``--resume`` or ``--overwrite`` before any work; with
  ``--overwrite`` the old files are removed only by :meth:`RunFolder.start`,
  which a trainer calls once its new data and model are ready (a bad
  ``--data-root`` leaves the old run in place).
- **Resume means the same run.** :func:`check_same_config` refuses a checkpoint
  trained with another config (only ``epochs`` may grow).
- **The log matches the checkpoint.** :class:`MetricsLog` writes one CSV row per
  step of progress; on resume it drops rows past the checkpoint and restores the
  checkpoint's own row when a kill came between the two.
"""
from __future__ import annotations

import csv
import os

from reid_htg.utils.extras import install_hint
from reid_htg.utils.locks import FolderInUse, FolderLock


class RunFolderError(ValueError):
    """An output folder that cannot be used for this run (in use, holding another run, or not resumable)."""


class RunFolder:
    """The output folder of one run: checked when made, locked from :meth:`start` until :meth:`release` (or the ``with`` block's end).

    Making the object only checks (nothing is created, so a run refused later
    for its data or config leaves no folder behind); :meth:`start`, called when
    the run is about to write, creates the folder, takes the lock, checks again
    (another run may have finished there meanwhile) and removes what a resumed
    or overwritten run leaves: interrupted temporary checkpoints, or the
    previous run's files.

    Args:
        path: the folder.
        files: the names of the files that make a run there, the checkpoint first.
        resume: the run continues the checkpoint there.
        overwrite: the run replaces the one there.

    Raises:
        RunFolderError: the path is a file; it holds a run and neither flag was given; ``resume`` without a checkpoint.
    """

    def __init__(self, path: str, files: tuple[str, ...], resume: bool = False, overwrite: bool = False):
        self.path, self.files, self.resume, self.overwrite = path, tuple(files), bool(resume), overwrite
        self._lock: FolderLock | None = None
        self._check()

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.path, self.files[0])

    def _present(self) -> list[str]:
        return [f for f in self.files if os.path.isfile(os.path.join(self.path, f))]

    def _check(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunFolderError(f"output folder {self.path!r} is a file; choose another --output-dir")
        if self.resume:
            if not os.path.isfile(self.checkpoint):
                raise RunFolderError(f"--resume, but {self.checkpoint} does not exist (drop --resume to start a new run)")
        elif self._present() and not self.overwrite:
            raise RunFolderError(f"{self.path} already holds a run ({', '.join(self._present())}); pass --resume to continue it, "
                                 "--overwrite to start afresh, or choose another --output-dir / name=")

    def start(self) -> RunFolder:
        """Create and lock the folder for this process, check it again, and clear what the new run replaces.

        Raises:
            RunFolderError: another process holds the folder, or it changed since the check.
        """
        try:
            self._lock = FolderLock(self.path, "another run")
        except FolderInUse as exc:
            raise RunFolderError(f"{exc}; wait for it to end, or choose another --output-dir / name=") from None
        try:
            self._check()
        except RunFolderError:
            self.release()
            raise
        if self.resume:
            for name in sorted(os.listdir(self.path)):  # a save interrupted before its rename
                if name.startswith(self.files[0] + ".tmp"):
                    os.remove(os.path.join(self.path, name))
        else:
            for name in self._present():  # --overwrite: the old run goes only now that the new one is ready to write
                os.remove(os.path.join(self.path, name))
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_same_config(saved: dict, now: dict, path: str) -> None:
    """Refuse to resume ``path`` (trained with ``saved``) under another config ``now``; ``epochs`` may differ.

    Raises:
        RunFolderError: naming the sections that differ.
    """
    saved, now = dict(saved, epochs=None), dict(now, epochs=None)
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise RunFolderError(f"{path} was trained with another config (sections {diff} differ); resume with the same config")


def format_row(columns: list[str], row: dict) -> list[str]:
    """A metrics row as CSV cells: floats with 6 significant digits, missing columns empty."""
    return [f"{row[c]:.6g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]


class MetricsLog:
    """A CSV of one row per unit of progress (an epoch, an iteration), its first column that unit.

    Args:
        path: the CSV file.
        columns: its header.
        resume_after: ``None`` for a new run (the file is started afresh); else the progress of the checkpoint resumed
            from: rows past it are dropped (they are trained again).
        saved_row: the checkpoint's own row (CSV cells), restored when the file lacks it (a kill between writing the
            checkpoint and the row).
    """

    def __init__(self, path: str, columns: list[str], resume_after: int | None = None, saved_row: list[str] | None = None):
        self.path, self.columns = path, list(columns)
        if resume_after is None or not os.path.isfile(path):
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
            return
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if rows and rows[0] != self.columns:  # a run from before a column was added: its rows under today's header, by name
            rows = [rows[0]] + [[dict(zip(rows[0], r)).get(c, "") for c in self.columns] for r in rows[1:]]
            rows[0] = self.columns
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerows(rows)
        kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= resume_after]
        if saved_row and not any(int(float(r[0])) == resume_after for r in kept[1:]):
            kept.append(saved_row)
        if kept != rows:
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerows(kept)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(format_row(self.columns, row))


class TensorBoardLog:
    """The metrics log as TensorBoard scalars (one tag per numeric column, step = the row's first column) under ``folder``.

    On resume, events past ``resume_after`` are discarded (``purge_step``), as :class:`MetricsLog` drops its rows.
    Needs the ``tensorboard`` extra (a config asking for it without is refused when loaded, with the install line).
    """

    def __init__(self, folder: str, resume_after: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RunFolderError("log.tensorboard=true needs TensorBoard: " + install_hint("tensorboard")) from None
        self.writer = SummaryWriter(folder, purge_step=resume_after + 1 if resume_after else None)

    def append(self, row: dict) -> None:
        step = int(next(iter(row.values()))) if "epoch" not in row else int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, curves_png: str | None = None) -> None:
        """Close the event file, with the training-curves figure as an image when it exists."""
        if curves_png and os.path.isfile(curves_png):
            import numpy as np
            from PIL import Image

            self.writer.add_image("curves", np.asarray(Image.open(curves_png).convert("RGB")), dataformats="HWC")
        self.writer.close()
