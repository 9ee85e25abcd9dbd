"""A sans-io FS5 path resolver (s5.md §3.8), in the spirit of h11.

The resolver never does I/O.  It says what it needs next and is fed the
answer; the transport layer only fulfils requests::

    resolver = Resolver(identity.root(), "home/vector-databases/0xabc/docs/manifest.json")
    while (request := resolver.request) is not None:
        if isinstance(request, NeedEntry):
            resolver.feed(await registry_get(request.public_key))  # entry, entries, or None
        else:
            resolver.feed(await download(request.blob_id))           # bytes, or None if absent
    resolved = resolver.result                                        # ResolvedFile

Answers are checked before the resolver moves on: a blob that does not
match the requested hash raises ``S5_HASH_MISMATCH`` and leaves the request
pending (feed bytes from another source); registry answers may come from
several sources -- invalid signatures are dropped and the highest valid
revision wins (``S5_INVALID_ENTRY`` only if nothing valid was given).

Outcomes other than success raise from :meth:`Resolver.feed` and end the
resolver: ``StorageNotFound`` (no such directory or file; permanent),
``StorageUnavailable`` (a registry entry exists but its blob was not found --
s5.js treats that directory as empty; usually propagation delay, retry
later), ``FabstirError`` for malformed or undecryptable data.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, Literal

import attrs

from fabstir_node.errors import ErrorCode, FabstirError, StorageNotFound, StorageUnavailable
from fabstir_node.s5.cid import BlobId, verify_blob
from fabstir_node.s5.content import decode_content, open_file
from fabstir_node.s5.dirv1 import DirV1, FileRef, decode_dirv1
from fabstir_node.s5.encryption import CHUNK_SIZE, TAG_SIZE, decrypt_mutable, is_mutable_encrypted
from fabstir_node.s5.hamt import decode_hamt, find_in_node
from fabstir_node.s5.identity import DirectoryKeys, split_path
from fabstir_node.s5.registry import RegistryEntry, entry_hash33, latest

__all__ = ["NeedBlob", "NeedEntry", "ResolvedDirectory", "ResolvedFile", "Resolver", "drive"]

#: Upper bound on HAMT node blobs fetched for one lookup (a hostile HAMT cannot loop).
MAX_HAMT_NODES = 4096


@attrs.frozen
class NeedEntry:
    """Fetch the registry entry of ``public_key`` (33 bytes, ``0xed || pk32``)."""

    public_key: bytes


@attrs.frozen
class NeedBlob:
    """Fetch the blob ``blob_id`` (``size`` 0 = unknown; else an exact size to cap the download at)."""

    blob_id: BlobId
    purpose: Literal["directory", "hamt", "file"]


Request = NeedEntry | NeedBlob


@attrs.frozen
class ResolvedFile:
    """A file's FileRef and its plaintext bytes (verified, decrypted)."""

    path: str
    ref: FileRef
    data: bytes = attrs.field(repr=False)

    def content(self) -> Any:
        """The value s5.js ``fs.get`` would return (see :func:`.content.decode_content`)."""
        return decode_content(self.data, self.ref.media_type)


@attrs.frozen
class ResolvedDirectory:
    path: str
    keys: DirectoryKeys | None
    directory: DirV1


def _encrypted_size(size: int) -> int:
    return size + TAG_SIZE * (-(-size // CHUNK_SIZE))


class Resolver:
    """Resolve ``path`` below the directory ``start`` to a file (or a directory).

    ``start`` is :meth:`.identity.S5Identity.root` for a whole tree, or
    :meth:`.identity.DirectoryKeys.from_public_key` for a shared directory.
    With ``kind="directory"`` the result is a :class:`ResolvedDirectory`.
    """

    def __init__(
        self, start: DirectoryKeys, path: str, *, kind: Literal["file", "directory"] = "file"
    ) -> None:
        segments = split_path(path)
        if kind == "file" and not segments:
            raise FabstirError(ErrorCode.INVALID_PATH, "a file path needs at least one segment")
        self.path = "/".join(segments)
        self._gen = _resolve(start, segments, kind, self.path)
        self._result: ResolvedFile | ResolvedDirectory | None = None
        self._request: Request | None = next(self._gen)

    @property
    def request(self) -> Request | None:
        """What to fetch next, or None once finished."""
        return self._request

    @property
    def result(self) -> ResolvedFile | ResolvedDirectory:
        if self._result is None:
            raise RuntimeError("the resolver has not finished")
        return self._result

    def feed(self, answer: Any) -> None:
        """Answer the current request (see the module docstring for the shapes)."""
        request = self._request
        if request is None:
            raise RuntimeError("the resolver is not waiting for anything")
        if isinstance(request, NeedBlob):
            if answer is not None:
                answer = bytes(answer)
                verify_blob(request.blob_id, answer)
        else:
            answer = _pick_entry(request.public_key, answer)
        try:
            self._request = self._gen.send(answer)
        except StopIteration as stop:
            self._request = None
            self._result = stop.value
        except BaseException:
            self._request = None
            raise


def _pick_entry(public_key: bytes, answer: Any) -> RegistryEntry | None:
    if answer is None:
        return None
    entries = [answer] if isinstance(answer, RegistryEntry) else list(answer)
    if not all(isinstance(e, RegistryEntry) for e in entries):
        raise TypeError("registry answers must be RegistryEntry objects")
    candidates = [e for e in entries if e.pk == public_key]
    best = latest(candidates)
    if best is None and candidates:
        raise FabstirError(ErrorCode.S5_INVALID_ENTRY, "registry entry signature is invalid")
    return best


_Gen = Generator[Request, Any, Any]


def _load_directory(keys: DirectoryKeys | None, fixed: bytes | None, where: str) -> _Gen:
    """Yield requests until the directory is loaded; return its DirV1."""
    if fixed is not None:
        hash33 = fixed
    else:
        assert keys is not None
        entry = yield NeedEntry(keys.public_key)
        if entry is None:
            raise StorageNotFound(where, "directory does not exist")
        hash33 = entry_hash33(entry)
    blob = yield NeedBlob(BlobId(hash33[1:], 0), "directory")
    if blob is None:
        raise StorageUnavailable(where, "directory blob not found (registry entry exists)")
    if is_mutable_encrypted(blob):
        if keys is None or keys.encryption_key is None:
            raise FabstirError(ErrorCode.DECRYPTION_FAILED, "directory is encrypted and no key was given")
        blob = decrypt_mutable(keys.encryption_key, blob)
    return decode_dirv1(blob)


def _lookup(directory: DirV1, kind: Literal["f", "d"], name: str, where: str) -> _Gen:
    """Yield HAMT requests if sharded; return (found, FileRef | DirRef | None)."""
    sharding = directory.sharding
    if sharding is None:
        table = directory.files if kind == "f" else directory.dirs
        return (name in table), table.get(name)
    key = f"{kind}:{name}"
    blob = yield NeedBlob(BlobId(sharding.root_hash33[1:], 0), "hamt")
    if blob is None:
        raise StorageUnavailable(where, "HAMT root blob not found")
    queue = [decode_hamt(blob, root=True)]
    seen: set[bytes] = set()
    while queue:
        found, value, pending = find_in_node(queue.pop(0), key)
        if found:
            return True, value
        for hash33 in pending:
            if hash33 in seen:
                continue
            seen.add(hash33)
            if len(seen) > MAX_HAMT_NODES:
                raise FabstirError(ErrorCode.S5_INVALID_DIRECTORY, "HAMT has too many nodes")
            node_blob = yield NeedBlob(BlobId(hash33[1:], 0), "hamt")
            if node_blob is None:
                raise StorageUnavailable(where, "HAMT node blob not found")
            queue.append(decode_hamt(node_blob, root=False))
    return False, None


def _resolve(start: DirectoryKeys, segments: list[str], kind: str, path: str) -> _Gen:
    keys: DirectoryKeys | None = start
    fixed: bytes | None = None
    dir_segments = segments if kind == "directory" else segments[:-1]
    directory = yield from _load_directory(keys, fixed, path)
    for depth, name in enumerate(dir_segments, start=1):
        where = "/".join(segments[:depth])
        found, ref = yield from _lookup(directory, "d", name, where)
        if not found:
            raise StorageNotFound(where, "directory does not exist")
        if ref is None:
            # A sharded parent dropped the link (s5.js HAMT leaves); derive it if we can.
            if keys is None or keys.write_key is None:
                raise FabstirError(ErrorCode.S5_INVALID_DIRECTORY, "sharded directory entry has no link")
            keys, fixed = keys.child(name), None
        elif ref.is_mutable:
            write_key = keys.child(name).write_key if keys is not None and keys.write_key else None
            keys, fixed = DirectoryKeys(ref.link, write_key), None
        else:
            keys, fixed = None, ref.link
        directory = yield from _load_directory(keys, fixed, where)
    if kind == "directory":
        return ResolvedDirectory(path, keys, directory)
    found, ref = yield from _lookup(directory, "f", segments[-1], path)
    if not found or ref is None:
        raise StorageNotFound(path, "file does not exist")
    size = ref.size if ref.encryption is None else _encrypted_size(ref.size)
    blob = yield NeedBlob(BlobId(ref.hash, size), "file")
    if blob is None:
        raise StorageUnavailable(path, "file blob not found")
    return ResolvedFile(path, ref, open_file(ref, blob))


def drive(
    resolver: Resolver,
    get_entry: Callable[[bytes], RegistryEntry | Iterable[RegistryEntry] | None],
    get_blob: Callable[[BlobId], bytes | None],
) -> ResolvedFile | ResolvedDirectory:
    """Run ``resolver`` to the end with synchronous callbacks (in-memory stores, tests)."""
    while (request := resolver.request) is not None:
        if isinstance(request, NeedEntry):
            resolver.feed(get_entry(request.public_key))
        else:
            resolver.feed(get_blob(request.blob_id))
    return resolver.result
