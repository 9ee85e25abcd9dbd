"""Saving a loaded database to disk and opening it again, memory-mapped.

This is the engine's one file-touching module (blocking calls; the service
runs them in threads or in the index builder's process).  A database is a
directory ``{cache_dir}/{key}/`` named by the cache key (a digest of the
backend, the manifest path, the manifest's content and the vector dtype):

=====================  ==================================================
``vectors.npy``        the unit rows, float16, float32 or bf16 bits (``n × d``)
``ids.bin``            every row's id, UTF-8, joined
``ids.idx.npy``        ``n + 1`` int64 offsets into ``ids.bin``
``metadata.bin``       every row's orjson metadata, joined
``metadata.idx.npy``   ``n + 1`` int64 offsets into ``metadata.bin``
``records.npy``        each row's record digest (``n × 16`` uint8), when the rows came from CBOR
                       chunks: the next version of the database is compared with it
``codes.npy``,         the 8-bit copy of the rows (``n × d`` int8, ``n`` float32 scales) of a
``scales.npy``         matrix of ``COARSE_MIN_ROWS`` or more: an exact-quality search's
                       candidates, mapped, its pages dropped after each scan
``manifest.json``      format, key, shape, dtype, and each file's size and BLAKE3
``index.usearch``      the HNSW graph (written later by ``index_builder.py``), or
``index.ivf``          the inverted-file index of a large matrix (``ivf_file.py``)
``index.json``         the index's kind, parameters, size and BLAKE3
=====================  ==================================================

**Atomic**: :func:`save` writes a sibling temporary directory and renames it
into place, so a reader sees a whole directory or none; :func:`save_index`
renames ``index.usearch`` into place before ``index.json``, and a graph
without a matching ``index.json`` is ignored.

**Validated**: :func:`open_matrix` checks the manifest against the key, the
format version and every file's size and BLAKE3 digest (hashed over an mmap,
~0.1 s per 100K × 384) before it maps anything, and raises
:class:`CorruptCache` otherwise; :func:`open_index` does the same for the
graph.  The caller discards what fails (:func:`discard`) and rebuilds it.

**Memory-mapped or read on demand**: vectors come back as a read-only
``np.memmap`` and the graph through usearch's ``view()``, so opening costs
page-cache pages, not copies.  Metadata stays on disk: a search reads the
bytes of its hits with ``pread`` (:class:`FileBuffer`), and once a graph
answers, the rows its candidates are re-scored on are read the same way
(:class:`RowFile`).  The process then keeps resident the graph, the ids
(packed, ~23 bytes each) and whatever exact scans touch, not every file.
"""

from __future__ import annotations

import mmap
import os
import secrets
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import orjson

from ..engine.matrix import RECORD_DIGEST_SIZE, VectorMatrix, drop_pages
from ..engine.packed import PackedBlobs, PackedStrings
from ..engine.quantized import Int8Rows
from ..engine.rows import as_float32, numpy_dtype
from . import ivf_file
from .row_writer import LOADING_DIR

__all__ = [
    "FORMAT",
    "INDEX_FILES",
    "CorruptCache",
    "FileBuffer",
    "RowFile",
    "adopt_index",
    "describe",
    "discard",
    "has_index",
    "has_matrix",
    "index_info",
    "load_index",
    "open_index",
    "open_lists",
    "open_matrix",
    "save",
    "save_index",
    "save_index_file",
]

#: Bumped whenever the layout changes; other versions are discarded and rebuilt.
#: 2: ids packed like metadata (``ids.bin`` + offsets; no Python object per id to write or read).
FORMAT = 2
_MATRIX_FILES = ("vectors.npy", "ids.bin", "ids.idx.npy", "metadata.bin", "metadata.idx.npy")
#: Written when the matrix has them, checked when the manifest lists it.
_RECORDS = "records.npy"
_CODES, _SCALES = "codes.npy", "scales.npy"
_MANIFEST = "manifest.json"
_INDEX = "index.usearch"
_INDEX_INFO = "index.json"
#: The file of each kind of index (``index.json``'s ``kind``; a graph when it has none).
INDEX_FILES = {"hnsw": _INDEX, "ivf": "index.ivf"}


def _index_file(info: dict[str, Any]) -> str:
    kind = info.get("kind", "hnsw")
    if kind not in INDEX_FILES:
        raise CorruptCache(f"index.json names an unknown kind of index ({kind!r})")
    return INDEX_FILES[kind]


class CorruptCache(Exception):
    """A cached directory is missing, truncated, tampered with or from another key or format."""


#: Files up to this size are hashed through a transient mapping (fastest: every core); larger ones
#: through one reused buffer of ``_HASH_BLOCK``, read, not mapped, so hashing a 768 MB matrix does not
#: make 768 MB of it resident in the process, even for a moment (it stays in the page cache).
_HASH_MMAP_MAX = 128 * 2**20
_HASH_BLOCK = 16 * 2**20


def _hash_threads() -> int:
    """Threads a digest uses: a count, not blake3's ``AUTO``.

    ``AUTO`` hashes on one pool for the whole process, whose threads keep the CPU priority of whichever
    thread hashed first: when that was a normal one (a session opening a saved database), every later
    background save then hashed at normal priority on every core, beside the searches it should yield
    to.  With a count each digest starts a pool of its own (~75 us) whose threads are the caller's kind
    (``priority.idle_thread``: idle ones for a background save).
    """
    return max(1, os.cpu_count() or 1)


def _digest(path: Path) -> str:
    hasher = blake3.blake3(max_threads=_hash_threads())
    size = path.stat().st_size
    if 0 < size <= _HASH_MMAP_MAX:
        hasher.update_mmap(str(path))
        return hasher.hexdigest()
    buffer = bytearray(_HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buffer)
            if not got:
                break
            hasher.update(view[:got])
    return hasher.hexdigest()


def describe(path: Path) -> dict[str, Any]:
    """A file's size and BLAKE3, as the manifests record them."""
    return {"size": path.stat().st_size, "blake3": _digest(path)}


def _check(path: Path, expected: object, *, digest: bool = True) -> None:
    if not isinstance(expected, dict):
        raise CorruptCache(f"{path.name}: no size and digest recorded")
    try:
        size = path.stat().st_size
    except OSError:
        raise CorruptCache(f"{path.name} is missing") from None
    if size != expected.get("size"):
        raise CorruptCache(f"{path.name} has {size} bytes, {expected.get('size')} recorded")
    if digest and _digest(path) != expected.get("blake3"):
        raise CorruptCache(f"{path.name} does not match its digest")


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` to a temporary name, flush it to disk, rename it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(value))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CorruptCache(f"{path.name} unreadable ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise CorruptCache(f"{path.name} is not an object")
    return value


# --- the matrix ----------------------------------------------------------------------


def save(directory: Path, matrix: VectorMatrix, *, key: str) -> bool:
    """Write ``matrix`` to ``directory`` atomically; False if a directory is already there.

    An existing directory is left alone (another writer got there first, or a
    previous run did; :func:`open_matrix` validates it).
    """
    if directory.exists():
        return False
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        adopted = _adopt_row_file(matrix.vectors, tmp / "vectors.npy")
        if adopted is None:
            np.save(tmp / "vectors.npy", np.ascontiguousarray(matrix.vectors), allow_pickle=False)
        ids = matrix.ids
        packed_ids = ids.blobs if isinstance(ids, PackedStrings) else PackedStrings(list(ids)).blobs
        meta = matrix.metadata
        if not isinstance(meta, PackedBlobs):
            meta = PackedBlobs(list(meta))
        for stem, blobs in (("ids", packed_ids), ("metadata", meta)):
            with open(tmp / f"{stem}.bin", "wb") as f:
                f.write(blobs.joined())
            np.save(tmp / f"{stem}.idx.npy", np.asarray(blobs.offsets, np.int64), allow_pickle=False)
        names: tuple[str, ...] = _MATRIX_FILES
        if matrix.record_digests is not None:
            np.save(tmp / _RECORDS, np.ascontiguousarray(matrix.record_digests, np.uint8), allow_pickle=False)
            names = (*names, _RECORDS)
        coarse = matrix.coarse
        adopted_codes = None
        if coarse is not None:
            adopted_codes = _adopt_row_file(coarse.codes, tmp / _CODES)  # the load wrote them to a file
            if adopted_codes is None:
                np.save(tmp / _CODES, np.ascontiguousarray(coarse.codes, np.int8), allow_pickle=False)
            np.save(tmp / _SCALES, np.ascontiguousarray(coarse.scales, np.float32), allow_pickle=False)
            names = (*names, _CODES, _SCALES)
        for name in names:
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        manifest = {
            "format": FORMAT,
            "key": key,
            "count": len(matrix),
            "dimensions": matrix.dimensions,
            "dtype": matrix.dtype,
            "degenerate_rows": matrix.degenerate_rows,
            "dropped_duplicates": matrix.dropped_duplicates,
            "files": {name: describe(tmp / name) for name in names},
        }
        _write_json(tmp / _MANIFEST, manifest)
        try:
            os.rename(tmp, directory)  # the commit point; fails if another writer won
        except OSError:
            if directory.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            raise
        for source in (adopted, adopted_codes):
            if source is not None and source.parent.parent.name == LOADING_DIR:
                source.unlink(missing_ok=True)  # the load's row file now lives on as this directory's
        return True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _adopt_row_file(vectors: np.ndarray, target: Path) -> Path | None:
    """Hard-link the ``.npy`` file that ``vectors`` maps whole to ``target``; its path, or None.

    A load that wrote its rows to a file (``row_writer.py``) is saved without copying them.
    """
    filename = getattr(vectors, "filename", None)
    if not isinstance(vectors, np.memmap) or filename is None or not vectors.flags.c_contiguous:
        return None
    source = Path(filename)
    try:
        whole = np.load(source, mmap_mode="r", allow_pickle=False)
        if whole.shape != vectors.shape or whole.dtype != vectors.dtype or whole.offset != vectors.offset:
            return None
        os.link(source, target)
    except (OSError, ValueError):
        return None
    return source


def read_manifest(directory: Path, *, key: str) -> dict[str, Any]:
    """The manifest of ``directory`` after checking its format and key (not the files)."""
    manifest = _read_json(directory / _MANIFEST)
    if manifest.get("format") != FORMAT:
        raise CorruptCache(f"format {manifest.get('format')!r}, this version reads {FORMAT}")
    if manifest.get("key") != key:
        raise CorruptCache("the directory belongs to another key")
    count, dims = manifest.get("count"), manifest.get("dimensions")
    if not (isinstance(count, int) and isinstance(dims, int) and count >= 0 and dims >= 1):
        raise CorruptCache("bad shape in the manifest")
    if manifest.get("dtype") not in ("f16", "f32", "bf16"):
        raise CorruptCache("bad dtype in the manifest")
    return manifest


def _fits(offsets: np.ndarray, count: int, size: int) -> bool:
    """Whether ``offsets`` cut a file of ``size`` bytes into ``count`` items, in order."""
    return bool(
        offsets.shape == (count + 1,) and offsets.dtype == np.int64 and offsets[0] == 0
        and offsets[-1] == size and not np.any(np.diff(offsets) < 0)
    )


def open_matrix(
    directory: Path, *, key: str, with_index: bool = True, expansion_search: int = 64, verify: bool = True,
    verify_index: bool = True,
) -> VectorMatrix:
    """The saved matrix, memory-mapped, with its HNSW index attached when one is saved and valid.

    Raises :class:`CorruptCache` when the matrix files fail validation.  A bad
    index is discarded (its two files removed) and the matrix returned without one.
    ``verify=False`` skips re-hashing the matrix files (sizes and structure are
    still checked) — for a caller that wrote or verified them itself moments
    ago; ``verify_index=False`` does the same for a graph the caller's own update process just wrote
    and hashed.
    """
    manifest = read_manifest(directory, key=key)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptCache("no file list in the manifest")
    for name in _MATRIX_FILES:
        _check(directory / name, files.get(name), digest=verify)
    count, dims = manifest["count"], manifest["dimensions"]
    want = numpy_dtype(manifest["dtype"])
    try:
        vectors = np.load(directory / "vectors.npy", mmap_mode="r", allow_pickle=False)
        offsets = np.load(directory / "metadata.idx.npy", allow_pickle=False)
        id_offsets = np.load(directory / "ids.idx.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptCache(f"unreadable matrix files ({exc.__class__.__name__})") from None
    if vectors.shape != (count, dims) or vectors.dtype != want:
        raise CorruptCache("vectors do not have the recorded shape and dtype")
    if not _fits(id_offsets, count, files["ids.bin"]["size"]) or (count and np.any(np.diff(id_offsets) == 0)):
        raise CorruptCache("ids do not match the manifest")  # an id is never empty
    if not _fits(offsets, count, files["metadata.bin"]["size"]):
        raise CorruptCache("metadata offsets do not match the manifest")
    metadata = PackedBlobs.from_parts(FileBuffer(directory / "metadata.bin"), offsets)
    records = None
    if _RECORDS in files:
        _check(directory / _RECORDS, files[_RECORDS], digest=verify)
        try:
            records = np.load(directory / _RECORDS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptCache(f"unreadable {_RECORDS} ({exc.__class__.__name__})") from None
        if records.shape != (count, RECORD_DIGEST_SIZE) or records.dtype != np.uint8:
            raise CorruptCache("record digests do not match the manifest")
    coarse = _open_codes(directory, files, count, dims, verify) if _CODES in files else None
    matrix = VectorMatrix(
        vectors=vectors,
        ids=PackedStrings.from_blobs(PackedBlobs.from_parts(FileBuffer(directory / "ids.bin"), id_offsets)),
        metadata=metadata,
        degenerate_rows=int(manifest.get("degenerate_rows", 0)),
        dropped_duplicates=int(manifest.get("dropped_duplicates", 0)),
        read_rows=RowFile(vectors),
        record_digests=records,
        coarse=coarse,
    )
    if with_index and has_index(directory):
        try:
            return matrix.with_index(open_index(directory, matrix, key=key, expansion_search=expansion_search,
                                                verify=verify_index))
        except CorruptCache:
            discard_index(directory)
    return matrix


def _open_codes(directory: Path, files: dict[str, Any], count: int, dims: int, verify: bool) -> Int8Rows:
    """The saved 8-bit copy of the rows, memory-mapped (``Int8Rows.of``: its scans drop their pages)."""
    for name in (_CODES, _SCALES):
        _check(directory / name, files.get(name), digest=verify)
    try:
        codes = np.load(directory / _CODES, mmap_mode="r", allow_pickle=False)
        scales = np.load(directory / _SCALES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptCache(f"unreadable 8-bit rows ({exc.__class__.__name__})") from None
    if codes.shape != (count, dims) or scales.shape != (count,):
        raise CorruptCache("the 8-bit rows do not match the manifest")
    try:
        return Int8Rows.of(codes, scales)
    except ValueError as exc:
        raise CorruptCache(str(exc)) from None


class _OpenFile:
    """A read-only descriptor, closed when the object is collected; ``pread`` is thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def _read_into(self, target: memoryview, offset: int) -> None:
        got = os.preadv(self._fd, [target], offset)
        if got != len(target):
            raise OSError(f"short read at {offset}: {got} of {len(target)} bytes")


class FileBuffer(_OpenFile):
    """The bytes of a file, read on demand with ``pread``: a buffer for :class:`~.matrix.PackedBlobs`.

    Slicing reads just that range; :meth:`read_all` reads the whole file once
    (for a pass over every item, such as building filter columns).  Nothing is
    mapped, so what a search reads stays in the kernel's page cache and out of
    the process's resident memory.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._size = os.fstat(self._fd).st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice):
            raise TypeError("FileBuffer supports slices only")
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("FileBuffer slices have step 1")
        return self.read_at(start, stop - start)

    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (in range: the caller's offsets say so): one ``pread``, no slice."""
        return os.pread(self._fd, size, offset) if size > 0 else b""

    def read_all(self) -> bytes:
        return self[0 : self._size]


class RowFile(_OpenFile):
    """Reads chosen rows of a saved ``vectors.npy`` with ``pread``, without mapping the file.

    Called with row numbers (int64), returns those rows as a new
    ``(len(rows), d)`` array of the file's dtype.
    """

    def __init__(self, vectors: np.memmap) -> None:
        if vectors.filename is None or vectors.ndim != 2 or not vectors.flags.c_contiguous:
            raise ValueError("RowFile needs a C-contiguous 2-D memmap of a file")
        super().__init__(vectors.filename)
        self._dtype, self._dims, self._count = vectors.dtype, vectors.shape[1], vectors.shape[0]
        self._row_bytes = self._dims * self._dtype.itemsize
        self._offset = int(vectors.offset)

    def range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop`` (contiguous) in one read."""
        out = np.empty((max(0, stop - start), self._dims), self._dtype)
        if out.size:
            if not 0 <= start < stop <= self._count:
                raise IndexError(f"rows {start}..{stop} of {self._count}")
            self._read_into(out.data.cast("B"), self._offset + start * self._row_bytes)
        return out

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0 or self._dims == 0:
            return np.empty((len(rows), self._dims), self._dtype)
        low, high = int(rows.min()), int(rows.max())
        if low < 0 or high >= self._count:
            raise IndexError(f"row {low if low < 0 else high} of {self._count}")
        # a pread per row, joined once (a search's candidates: ~35 % less time than reading each into a
        # slice of the output, most of it Python's own work per row)
        fd, size, base, pread = self._fd, self._row_bytes, self._offset, os.pread
        data = bytearray().join([pread(fd, size, base + row * size) for row in rows.tolist()])
        if len(data) != size * len(rows):
            raise OSError(f"short read of {len(rows)} rows: {len(data)} of {size * len(rows)} bytes")
        return np.frombuffer(data, self._dtype).reshape(len(rows), self._dims)


def coarse_rows(matrix: VectorMatrix, block: int = 65_536) -> Int8Rows:
    """The 8-bit copy of a saved matrix's rows: the saved one, or one made from the rows, read block by
    block with ``pread`` (not mapped: reading 768 MB of a 1M matrix through its mapping would make it all
    resident in the process)."""
    if matrix.coarse is not None:
        return matrix.coarse
    vectors = matrix.vectors
    read = RowFile(vectors).range if isinstance(vectors, np.memmap) and vectors.filename else None

    def block_of(start: int, stop: int) -> np.ndarray:
        return as_float32(read(start, stop) if read is not None else vectors[start:stop])

    return Int8Rows.from_blocks(len(vectors), vectors.shape[1], block_of, block)


class MappedFile:
    """A read-only mapping and the memoryview handed to usearch (which keeps no reference to it)."""

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping
        self.view = memoryview(mapping)

    @property
    def closed(self) -> bool:
        return self._mapping.closed

    def close(self) -> None:
        """Release the view and unmap (only once nothing reads through it any more)."""
        self.view.release()
        self._mapping.close()

    def drop_pages(self) -> None:
        """Unmap the file's pages from the process (``engine/matrix.drop_pages``): after a scan of the
        whole graph, so a declined answer leaves nothing resident."""
        drop_pages(self._mapping)


def discard(directory: Path) -> None:
    """Remove a cached directory (after it failed validation)."""
    shutil.rmtree(directory, ignore_errors=True)


# --- the HNSW index ------------------------------------------------------------------


def has_matrix(directory: Path) -> bool:
    """Whether ``directory`` holds a saved matrix (whole or not at all: :func:`save` renames it in)."""
    return (directory / _MANIFEST).is_file()


def has_index(directory: Path) -> bool:
    return (directory / _INDEX_INFO).exists()


def save_index(directory: Path, index: Any, *, key: str, parameters: dict[str, Any]) -> None:
    """Save a built usearch ``index`` beside its matrix: graph first, then ``index.json``."""
    save_index_file(directory, key=key, count=len(index), parameters={**parameters, "kind": "hnsw"},
                    write=lambda path: index.save(str(path)))


def save_index_file(
    directory: Path, *, key: str, count: int, parameters: dict[str, Any], write: Callable[[Path], Any]
) -> dict[str, Any]:
    """Write an index file with ``write(path)`` beside its matrix, flushed, then renamed into place, then
    ``index.json`` (``parameters`` name its ``kind``; a dict ``write`` returns is added to them, e.g. the
    calibration measured on the file just written).  Returns the parameters."""
    read_manifest(directory, key=key)  # the matrix it belongs to is still there
    target = directory / _index_file(parameters)
    tmp = directory / f".{target.name}.{secrets.token_hex(4)}"
    try:
        extra = write(tmp)
        if isinstance(extra, dict):
            parameters = {**parameters, **extra}
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        info = {"format": FORMAT, "key": key, "count": count, **parameters, "file": describe(tmp)}
        _remove_other_indexes(directory, keep=target.name)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_json(directory / _INDEX_INFO, info)
    return parameters


def _remove_other_indexes(directory: Path, keep: str) -> None:
    for name in INDEX_FILES.values():
        if name != keep:
            (directory / name).unlink(missing_ok=True)


def adopt_index(directory: Path, graph: Path, *, key: str, count: int, parameters: dict[str, Any],
                file: dict[str, Any]) -> None:
    """Move an index written and described elsewhere (``file``: its size and BLAKE3) beside its matrix.

    For the lineage's update process, which writes the new version's index while the daemon saves
    the matrix.  The size is checked here; the digest is the writer's (checked again at every open
    that verifies).  Index first, then ``index.json``, as :func:`save_index`.
    """
    manifest = read_manifest(directory, key=key)
    if manifest.get("count") != count:
        raise CorruptCache("the graph does not hold the matrix's rows")
    _check(graph, file, digest=False)
    name = _index_file(parameters)
    _remove_other_indexes(directory, keep=name)
    os.replace(graph, directory / name)
    info = {"format": FORMAT, "key": key, "count": count, **parameters, "file": file}
    _write_json(directory / _INDEX_INFO, info)


def index_info(directory: Path, *, key: str, count: int | None = None) -> dict[str, Any]:
    """``index.json`` of ``directory``, checked against the key, the format and the row count."""
    info = _read_json(directory / _INDEX_INFO)
    if count is None:
        count = read_manifest(directory, key=key)["count"]
    if info.get("format") != FORMAT or info.get("key") != key or info.get("count") != count:
        raise CorruptCache("index.json does not match the matrix")
    _index_file(info)
    return info


def open_lists(directory: Path, *, key: str, verify: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """``(pages, lists, info)`` of a saved inverted-file index (``ivf_file.open_lists``), checked."""
    manifest = read_manifest(directory, key=key)
    info = index_info(directory, key=key, count=manifest["count"])
    if info.get("kind") != "ivf":
        raise CorruptCache("the saved index is not an inverted file")
    pages, lists = _mapped_lists(directory, info, manifest["count"], manifest["dimensions"], verify)
    return pages, lists, info


def _mapped_lists(directory: Path, info: dict[str, Any], count: int, dimensions: int, verify: bool) -> Any:
    """The inverted file ``info`` (an ``index.json`` already checked) describes, checked and mapped."""
    path = directory / _index_file(info)
    _check(path, info.get("file"), digest=verify)
    try:
        return ivf_file.open_lists(path, count, dimensions)
    except (OSError, ValueError) as exc:
        raise CorruptCache(str(exc)) from None


def load_index(directory: Path, *, key: str) -> tuple[Any, dict[str, Any]]:
    """The saved graph of ``directory`` loaded into memory (a copy to change) and its ``index.json``.

    Checks ``index.json`` against the directory's manifest and the graph's size and BLAKE3 (not the
    matrix files: the caller uses only the graph).  Raises :class:`CorruptCache`.
    """
    from usearch.index import Index

    manifest = read_manifest(directory, key=key)
    info = index_info(directory, key=key, count=manifest["count"])
    if info.get("kind", "hnsw") != "hnsw":
        raise CorruptCache("the saved index is not a graph")
    _check(directory / _INDEX, info.get("file"))
    try:
        index = Index.restore(str(directory / _INDEX), view=False)
    except (RuntimeError, ValueError) as exc:
        raise CorruptCache(f"usearch could not load the graph ({exc})") from None
    if index is None or len(index) != manifest["count"] or index.ndim != manifest["dimensions"]:
        raise CorruptCache("the graph does not hold every row of the matrix")
    return index, info


def discard_index(directory: Path) -> None:
    (directory / _INDEX_INFO).unlink(missing_ok=True)
    for name in INDEX_FILES.values():
        (directory / name).unlink(missing_ok=True)


def open_index(
    directory: Path, matrix: VectorMatrix, *, key: str, expansion_search: int = 64, verify: bool = True
) -> Any:
    """The saved index over ``matrix``: an :class:`~fabstir_node.engine.hnsw.HnswIndex` (the graph opened
    with ``view()``) or an :class:`~fabstir_node.engine.ivf.IvfIndex` (the inverted file mapped).

    Raises :class:`CorruptCache` when ``index.json`` or the graph fail validation.
    """
    from usearch.index import Index

    from ..engine.calibration import Calibration
    from ..engine.hnsw import HnswIndex

    info = index_info(directory, key=key, count=len(matrix))
    try:  # a graph without its own recall measurement (an older version built it) is built again
        calibration = Calibration.from_json(info.get("calibration"))
    except ValueError as exc:
        raise CorruptCache(f"the graph has no valid calibration ({exc})") from None
    vectors = matrix.vectors
    reader = RowFile(vectors) if isinstance(vectors, np.memmap) and vectors.filename else None
    if info.get("kind") == "ivf":
        from ..engine.ivf import IvfIndex

        pages, lists = _mapped_lists(directory, info, len(matrix), matrix.dimensions, verify)
        return IvfIndex(lists, vectors, read_rows=reader, calibration=calibration, pages=pages)
    path = directory / _INDEX
    _check(path, info.get("file"), digest=verify)
    try:
        meta = Index.metadata(str(path))
    except (RuntimeError, ValueError) as exc:
        raise CorruptCache(f"not a usearch index ({exc})") from None
    if not meta or meta.get("dimensions") != matrix.dimensions:
        raise CorruptCache("the graph does not match the matrix dimensions")
    # One read-only mapping of the file, viewed by two index objects: the graph, and a "wide" view
    # searched with more effort for answers the first does not trust (engine/hnsw.py). Two
    # restores of the path would map it twice, and the pages both touch would count twice.
    with open(path, "rb") as f:
        mapping = MappedFile(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    try:
        index = Index.restore(mapping.view, view=True)
        wide = Index.restore(mapping.view, view=True)
    except (RuntimeError, ValueError) as exc:
        mapping.close()
        raise CorruptCache(f"usearch could not view the graph ({exc})") from None
    if index is None or wide is None or len(index) != len(matrix) or index.ndim != matrix.dimensions:
        index = wide = None
        mapping.close()
        raise CorruptCache("the graph does not hold every row of the matrix")
    return HnswIndex(
        index, vectors, expansion_search=expansion_search, read_rows=reader, calibration=calibration,
        wide=wide, mapping=mapping,
    )
