"""Rows of a loading database written straight to a file, not held in the daemon's memory.

A 1M x 384 load used to build its f16 matrix (768 MB) in anonymous memory, save it to the disk
cache, then map the saved copy: its peak was the whole matrix plus the chunks in flight.  A
:class:`RowFileWriter` is the loader's :class:`~fabstir_node.engine.matrix.RowSink` instead: each
decoded, normalised block goes to its place in a ``.npy`` file with ``pwrite`` (so it sits in the
kernel's page cache, not in the process), and the finished rows are that file, memory-mapped
read-only.  The disk cache then adopts the file with a hard link instead of writing it again
(``disk_cache.save``).  Files live in ``{cache_dir}/.loading/{pid}/`` (:func:`loading_dir`);
those of a process that is gone (it crashed or was killed mid-load) are removed when a daemon
starts (:func:`clear_stale`), never those of another live daemon sharing the cache.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path

import numpy as np

__all__ = ["LOADING_DIR", "RowFileWriter", "clear_stale", "loading_dir"]

LOADING_DIR = ".loading"


def loading_dir(cache_dir: Path) -> Path:
    """This process's directory of row files under ``cache_dir``."""
    return cache_dir / LOADING_DIR / str(os.getpid())


class RowFileWriter:
    """An ``(n, d)`` ``.npy`` file of ``dtype`` rows, written block by block from any thread."""

    def __init__(self, directory: Path, rows: int, dimensions: int, dtype: np.dtype) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{secrets.token_hex(8)}.npy"
        self.shape, self.dtype = (rows, dimensions), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._lock = threading.Lock()
        try:
            with os.fdopen(os.dup(self._fd), "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                self._offset = f.tell()
            os.ftruncate(self._fd, self._offset + rows * dimensions * self.dtype.itemsize)
        except BaseException:
            self.discard()
            raise

    def write(self, start: int, rows: np.ndarray) -> None:
        """Put ``rows`` (already of this file's dtype and width) at row ``start``."""
        data = np.ascontiguousarray(rows, self.dtype)
        if data.ndim != 2 or data.shape[1] != self.shape[1] or start + len(data) > self.shape[0]:
            raise ValueError("block does not fit the row file")
        view = data.data.cast("B")  # contiguous: its bytes in row order
        at = self._offset + start * self.shape[1] * self.dtype.itemsize
        while view:
            written = os.pwrite(self._fd, view, at)
            view, at = view[written:], at + written

    def rows(self) -> np.ndarray:
        """Every row, memory-mapped read-only (call once every block was written)."""
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def discard(self) -> None:
        """Close and remove the file (a failed or finished load; a mapping already made stays valid)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __del__(self) -> None:  # a writer dropped without discard(): do not leak the descriptor
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


def clear_stale(cache_dir: Path) -> None:
    """Remove the row files of processes that are gone (they crashed or were killed mid-load)."""
    try:
        owners = list((cache_dir / LOADING_DIR).iterdir())
    except OSError:
        return
    for owner in owners:
        if owner.name.isdigit() and int(owner.name) != os.getpid() and _alive(int(owner.name)):
            continue
        if owner.name.isdigit() and int(owner.name) == os.getpid():
            continue
        shutil.rmtree(owner, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
