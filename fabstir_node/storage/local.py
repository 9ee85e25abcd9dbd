"""A storage backend on a local directory: the dev store, and the stand-in bridge's disk.

``home/vector-databases/0xabc/docs/manifest.json`` is the file of that relative
name beneath ``root``.  No path can leave ``root``: paths are validated first,
and every file and parent directory is resolved (symlinks followed) and must
still lie inside the resolved root, so a symlink pointing outside, whether the
file itself or one of its parents, is refused (reported as not found).
Symlinks that stay inside the root work.

File I/O runs in worker threads (:func:`trio.to_thread.run_sync`) and reads in
blocks, checking for cancellation between blocks, so a large file neither
blocks the event loop nor outlives its caller's cancellation by much.  Writes
are atomic: a temporary file in the target directory, fsynced, then renamed
over the target.

The containment check happens when a path is opened; swapping a symlink into
the tree between the check and the open is outside the threat model (the
operator owns ``root``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import StorageError, StorageNotFound, StorageTooLarge, StorageUnavailable
from .base import DEFAULT_MAX_BODY_BYTES, HealthStatus, StorageStats, checked_path, effective_limit
from .direct import Direct

#: A decode worker can open this process's descriptors by ``/proc/<pid>/fd/<n>`` (Linux).
_PROC_FD = os.path.isdir("/proc/self/fd")

__all__ = ["LocalStore"]

_T = TypeVar("_T")

_BLOCK = 1024 * 1024
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class LocalStore:
    """Objects as files beneath ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        *,
        name: str = "local",
        max_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        stats: StorageStats | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root).absolute()
        self.max_bytes = max_bytes
        self.stats = stats if stats is not None else StorageStats()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r}, name={self.name!r})"

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        path = checked_path(path)
        limit = effective_limit(self.max_bytes, max_bytes)
        data = await self._run(self._read, path, limit)
        self.stats.record_bytes(self.name, len(data))
        return data

    async def content_id(self, path: str) -> bytes:
        """A token that changes whenever the file at ``path`` is rewritten (size, mtime, inode).

        The shared cache keys a database on its chunks' tokens, so chunks rewritten under a
        byte-identical manifest are never served from the old version (docs/operations.md).
        """
        path = checked_path(path)
        return await self._run(self._content_id, path)

    def _content_id(self, path: str) -> bytes:
        root = self._real_root(path)
        real = self._resolve_inside(root, root.joinpath(*path.split("/")), path)
        try:
            info = os.stat(real)
        except OSError as exc:
            raise StorageUnavailable(path, f"cannot stat: {_reason(exc)}") from None
        return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_dev}".encode()

    async def put(self, path: str, data: bytes) -> None:
        path = checked_path(path)
        await self._run(self._write, path, bytes(data))
        self.stats.record_bytes(self.name, len(data))

    async def delete(self, path: str) -> None:
        """Remove the object at ``path``; ``StorageNotFound`` if there is none."""
        path = checked_path(path)
        await self._run(self._unlink, path)

    async def health(self) -> HealthStatus:
        return await trio.to_thread.run_sync(self._check_health)

    async def aclose(self) -> None:
        """Nothing to release."""

    # --- worker-thread side -------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        self.stats.requests += 1
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except StorageError:
            self.stats.errors += 1
            raise

    def _real_root(self, path: str) -> Path:
        try:
            root = self.root.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise StorageUnavailable(path, f"storage root is not accessible: {_reason(exc)}") from None
        if not root.is_dir():
            raise StorageUnavailable(path, "storage root is not a directory")
        return root

    def _resolve_inside(self, root: Path, candidate: Path, path: str) -> Path:
        """``candidate`` with all symlinks resolved; it must exist and lie inside ``root``."""
        try:
            real = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise StorageNotFound(path, "no such object") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            raise StorageUnavailable(path, f"cannot resolve path: {_reason(exc)}") from None
        if not real.is_relative_to(root):
            raise StorageNotFound(path, "path leads outside the storage root")
        return real

    def _open(self, path: str, limit: int | None) -> tuple[int, os.stat_result]:
        """A descriptor of the regular file at ``path`` inside the root, within ``limit``; its stat."""
        root = self._real_root(path)
        real = self._resolve_inside(root, root.joinpath(*path.split("/")), path)
        try:
            fd = os.open(real, _O_READ)
        except (FileNotFoundError, NotADirectoryError):
            raise StorageNotFound(path, "no such object") from None
        except OSError as exc:
            raise StorageUnavailable(path, f"cannot open: {_reason(exc)}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StorageNotFound(path, "not a file")
        if limit is not None and info.st_size > limit:
            os.close(fd)
            raise StorageTooLarge(path, f"object is {info.st_size} bytes, cap is {limit}")
        return fd, info

    async def direct(self, path: str, *, max_bytes: int | None = None) -> Direct | None:
        """The file at ``path``, opened and checked here, for a decode worker to read (``direct.py``).

        The worker opens ``/proc/<pid>/fd/<n>``: this descriptor's file, whatever the path points
        to by then.  None where there is no ``/proc`` (then ``get`` reads it).  The caller calls
        ``close`` when the worker is done.
        """
        if not _PROC_FD:
            return None
        path = checked_path(path)
        limit = effective_limit(self.max_bytes, max_bytes)
        fd, _ = await self._run(self._open, path, limit)
        return Direct("file", limit, file=f"/proc/{os.getpid()}/fd/{fd}", close=lambda: os.close(fd),
                      record=lambda n: self.stats.record_bytes(self.name, n))

    async def open_file(self, path: str) -> tuple[int, int]:
        """The file at ``path``, opened and checked as :meth:`get` opens it: its descriptor (the
        caller closes it) and its size.  For a server that sends it with ``sendfile``."""
        path = checked_path(path)
        fd, info = await self._run(self._open, path, effective_limit(self.max_bytes, None))
        self.stats.record_bytes(self.name, info.st_size)
        return fd, info.st_size

    def _read(self, path: str, limit: int | None) -> bytes:
        fd, info = self._open(path, limit)
        with open(fd, "rb", buffering=0) as file:
            wanted = None if limit is None else limit + 1
            # read into a buffer of the file's size (one copy), then on for anything written since
            data = bytearray(info.st_size if wanted is None else min(info.st_size, wanted))
            view = memoryview(data)
            got = 0
            try:
                while got < len(data):
                    trio.from_thread.check_cancelled()
                    count = file.readinto(view[got : got + _BLOCK])
                    if not count:
                        break
                    got += count
                view.release()
                del data[got:]  # the file shrank meanwhile
                while wanted is None or len(data) < wanted:
                    trio.from_thread.check_cancelled()
                    size = _BLOCK if wanted is None else min(_BLOCK, wanted - len(data))
                    block = file.read(size)
                    if not block:
                        break
                    data += block
            except OSError as exc:
                raise StorageUnavailable(path, f"read failed: {_reason(exc)}") from None
        if limit is not None and len(data) > limit:
            raise StorageTooLarge(path, f"object grew past the cap of {limit} bytes")
        # a bytearray, as the bridge client returns: a bytes copy of a 36 MB chunk costs a fresh 36 MB
        # of page faults (10 chunks: 0.53 -> 0.33 s); every reader of stored bytes takes either
        return data  # type: ignore[return-value]

    def _write(self, path: str, data: bytes) -> None:
        root = self._real_root(path)
        *parents, filename = path.split("/")
        directory = root
        try:
            for part in parents:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(directory / part)
                directory = self._resolve_inside(root, directory / part, path)
                if not directory.is_dir():
                    raise StorageUnavailable(path, "a parent of the path is not a directory")
            if (directory / filename).is_dir():
                raise StorageUnavailable(path, "the path names a directory")
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{filename[:64]}.", suffix=".tmp")
            try:
                with open(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, directory / filename)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except StorageNotFound:
            raise StorageUnavailable(path, "a parent of the path leads outside the storage root") from None
        except OSError as exc:
            raise StorageUnavailable(path, f"write failed: {_reason(exc)}") from None

    def _unlink(self, path: str) -> None:
        root = self._real_root(path)
        parent = self._resolve_inside(root, root.joinpath(*path.split("/")[:-1]), path)
        target = parent / path.rsplit("/", 1)[-1]
        try:
            if target.is_dir() and not target.is_symlink():
                raise StorageNotFound(path, "not a file")
            os.unlink(target)
        except FileNotFoundError:
            raise StorageNotFound(path, "no such object") from None
        except OSError as exc:
            raise StorageUnavailable(path, f"delete failed: {_reason(exc)}") from None

    def _check_health(self) -> HealthStatus:
        try:
            root = self.root.resolve(strict=True)
            if not root.is_dir():
                return HealthStatus(False, f"storage root {str(self.root)!r} is not a directory")
            fd, probe = tempfile.mkstemp(dir=root, prefix=".health.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except (OSError, RuntimeError) as exc:
            return HealthStatus(False, f"storage root {str(self.root)!r} is not writable: {_reason(exc)}")
        return HealthStatus(True, f"storage root {str(root)!r} is writable")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__
