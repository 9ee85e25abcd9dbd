"""Native S5 storage: database paths resolved in an FS5 tree, every byte verified.

:class:`S5Store` is a :class:`~fabstir_node.storage.base.Storage` whose
``get(path)`` drives the sans-io :class:`~fabstir_node.s5.resolve.Resolver`
with a :class:`~fabstir_node.storage.s5_portal.PortalClient`: registry entries
(signature checked, highest revision) and blobs (BLAKE3 checked) in, the
file's plaintext out.  *Whose tree* a path is resolved in is chosen per
database by :meth:`S5Store.for_database` (the loader asks for it), in this
order:

1. ``vectorDatabase.directoryKey`` given: the user shared the public key of
   the database's directory (s5.js ``getPublicDirectoryKey``).  The manifest
   and its chunks resolve *inside that directory* by their file names; no
   other tree is tried.
2. Otherwise the host's own identity (``S5_SEED_PHRASE``), then -- only with
   ``S5_ALLOW_WALLET_IDENTITY=true`` -- the identity the Fabstir SDK derives
   from the user's address and the session's chain id.  A tree that lacks the
   path passes to the next.  The wallet tree comes last on purpose: anyone
   who knows an address can compute that identity, so anyone can *write*
   there too (docs/s5.md).

A view (:class:`S5TreeView`) lives for one load.  It remembers registry
entries and directory blobs it fetched (single-flight: parallel chunk
downloads share one lookup of each directory), so a load sees one consistent
snapshot and pays for each directory once.  Its ``name`` names its trees'
public keys, so the shared database cache never mixes two trees.

``put`` writes one file into the host's tree the way s5.js would
(:func:`~fabstir_node.storage.s5_publish.publish_files`).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import attrs
import trio

from ..errors import ErrorCode, FabstirError, StorageError, StorageNotFound
from ..protocol.messages import DEFAULT_CHAIN_ID, VectorDatabaseRef
from ..s5.identity import DirectoryKeys, S5Identity
from ..s5.resolve import NeedEntry, ResolvedFile, Resolver
from .base import HealthStatus, StorageStats, checked_path
from .s5_portal import PortalClient
from .s5_publish import publish_files

__all__ = ["S5Store", "S5TreeView", "Tree", "parse_directory_key"]

T = TypeVar("T")

#: Directory and HAMT blobs larger than this are refused (a 1000-entry directory is ~100 KB).
MAX_DIRECTORY_BYTES = 16 * 1024 * 1024


@attrs.frozen
class Tree:
    """Where paths resolve: the directory ``start`` stands for the database path ``base``."""

    label: str  #: "seed", "wallet" or "directory" (logs and errors)
    start: DirectoryKeys
    base: str = ""  #: "" for a whole tree's root

    def relative(self, path: str) -> str | None:
        """``path`` below ``base``, or None if it lies outside."""
        if not self.base:
            return path
        prefix = self.base + "/"
        return path[len(prefix) :] if path.startswith(prefix) else None


def parse_directory_key(text: str) -> bytes:
    """A shared directory key: 32 bytes (or 33 with ``0xed``), as hex or base64url."""
    value = text.strip()
    if value[:2].lower() == "0x":
        value = value[2:]
    raw: bytes | None = None
    if len(value) in (64, 66):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None and len(value) in (43, 44):
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or not (len(raw) == 32 or (len(raw) == 33 and raw[0] == 0xED)):
        raise FabstirError(
            ErrorCode.INVALID_SESSION_KEY,
            "vectorDatabase.directoryKey must be a 32-byte Ed25519 public key (hex or base64url)",
        )
    return raw


class _SingleFlight:
    """Remembers results by key; concurrent askers for one key share one fetch."""

    def __init__(self) -> None:
        self._done: dict[Hashable, Any] = {}
        self._running: dict[Hashable, trio.Event] = {}

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        while key not in self._done:
            running = self._running.get(key)
            if running is None:
                break
            await running.wait()  # its fetch may fail: then we try ourselves
        else:
            return self._done[key]
        event = self._running[key] = trio.Event()
        try:
            value = await fetch()
            self._done[key] = value
            return value
        finally:
            del self._running[key]
            event.set()


class S5TreeView:
    """Read-only storage over one or more trees, for one database load."""

    def __init__(self, store: S5Store, trees: list[Tree]) -> None:
        self._store = store
        self.trees = trees
        self.stats = store.stats
        self.name = "s5:" + "+".join(f"{t.label}:{t.start.public_key32.hex()}" for t in trees)
        self._entries = _SingleFlight()
        self._directories = _SingleFlight()

    def __repr__(self) -> str:
        return f"S5TreeView({self.name!r})"

    @property
    def capability(self) -> bool:
        """Reads only inside a directory whose key the client shared (``vectorDatabase.directoryKey``).

        A file this view resolves proves that the client holds that directory's key, a secret the
        owner handed out; the access policy (service/access.py) accepts it in place of a signature.
        """
        return bool(self.trees) and all(tree.label == "directory" for tree in self.trees)

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        resolved = await self._first(path, lambda tree, relative: self._resolve(tree, relative, max_bytes))
        return resolved.data

    async def content_id(self, path: str) -> bytes:
        """The content hash of the file at ``path`` (its directory entry), without downloading the file.

        The shared cache keys a database on its chunks' content ids, so chunks rewritten under a
        byte-identical manifest are never served from the old version (docs/operations.md).
        """
        found: Any = await self._first(
            path, lambda tree, relative: self._resolve(tree, relative, None, ref_only=True)
        )
        return bytes(found)

    async def _first(self, path: str, resolve: Callable[[Tree, str], Awaitable[Any]]) -> Any:
        """``resolve(tree, relative path)`` in the first of this view's trees that holds ``path``."""
        path = checked_path(path)
        missing: StorageNotFound | None = None
        for tree in self.trees:
            relative = tree.relative(path)
            if relative is None:
                continue
            try:
                return await resolve(tree, relative)
            except StorageNotFound as exc:
                missing = StorageNotFound(path, f"not in the {tree.label} tree ({exc.message})")
            except StorageError as exc:
                raise type(exc)(path, f"{tree.label} tree: {exc}") from None
        raise missing if missing is not None else StorageNotFound(path, "outside the shared directory")

    async def _resolve(
        self, tree: Tree, relative: str, max_bytes: int | None, *, ref_only: bool = False
    ) -> ResolvedFile:
        portal = self._store.portal
        resolver = Resolver(tree.start, relative)
        while (request := resolver.request) is not None:
            if isinstance(request, NeedEntry):
                key = request.public_key
                answer: Any = await self._entries.get(key, functools.partial(portal.get_entry, key))
                resolver.feed(answer)
            elif request.purpose == "file":
                if ref_only:
                    return bytes(request.blob_id.hash)  # type: ignore[return-value]
                blob = await portal.get_blob(request.blob_id, max_bytes=max_bytes)
                # hashing and decrypting a chunk is CPU work: off the event loop
                await trio.to_thread.run_sync(resolver.feed, blob)
            else:
                fetch = functools.partial(portal.get_blob, request.blob_id, max_bytes=MAX_DIRECTORY_BYTES)
                resolver.feed(await self._directories.get(request.blob_id.hash, fetch))
        result = resolver.result
        assert isinstance(result, ResolvedFile)
        return result

    async def put(self, path: str, data: bytes) -> None:
        raise StorageError(path, "a database view is read-only")

    async def health(self) -> HealthStatus:
        return await self._store.health()

    async def aclose(self) -> None:
        """Nothing to release (the store owns the portal client)."""


class S5Store:
    """Native S5 storage (see the module docstring).

    ``seed_phrase`` is the host's own identity (``S5_SEED_PHRASE``; may be
    None); ``allow_wallet_identity`` enables the SDK's address-derived trees.
    The portal client (and its HTTP client) belong to the caller.
    """

    def __init__(
        self,
        portal: PortalClient,
        *,
        seed_phrase: str | None = None,
        allow_wallet_identity: bool = False,
        name: str = "s5",
    ) -> None:
        self.portal = portal
        self.stats: StorageStats = portal.stats
        self.name = name
        self.allow_wallet_identity = allow_wallet_identity
        self._host = S5Identity.from_phrase(seed_phrase) if seed_phrase else None

    def __repr__(self) -> str:
        return f"S5Store({self.portal!r}, host_identity={self._host is not None}, wallet={self.allow_wallet_identity})"

    @property
    def host_root(self) -> DirectoryKeys | None:
        """Keys of the host's own root directory, if it has an identity."""
        return self._host.root() if self._host is not None else None

    def trees_for(self, ref: VectorDatabaseRef, chain_id: int | None = None) -> list[Tree]:
        """The trees ``ref`` may live in, in the order they are tried."""
        if ref.directory_key is not None:
            keys = DirectoryKeys.from_public_key(parse_directory_key(ref.directory_key))
            base = checked_path(ref.manifest_path).rpartition("/")[0]
            return [Tree("directory", keys, base)]
        trees = []
        if self._host is not None:
            trees.append(Tree("seed", self._host.root()))
        if self.allow_wallet_identity:
            chain = DEFAULT_CHAIN_ID if chain_id is None else chain_id
            trees.append(Tree("wallet", S5Identity.from_wallet(ref.user_address, chain).root()))
        if not trees:
            raise FabstirError(
                ErrorCode.MANIFEST_NOT_FOUND,
                "this host cannot see your S5 tree: share the database directory's key "
                "(vectorDatabase.directoryKey)",
            )
        return trees

    def for_database(self, ref: VectorDatabaseRef, chain_id: int | None = None) -> S5TreeView:
        """A view that reads ``ref``'s database (see :meth:`trees_for`)."""
        return S5TreeView(self, self.trees_for(ref, chain_id))

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """``path`` in the host's own tree."""
        path = checked_path(path)
        if self._host is None:
            raise StorageNotFound(path, "this host has no S5 identity (S5_SEED_PHRASE)")
        return await S5TreeView(self, [Tree("seed", self._host.root())]).get(path, max_bytes=max_bytes)

    async def put(self, path: str, data: bytes) -> None:
        """Write one file into the host's own tree (read-modify-write of its directories)."""
        path = checked_path(path)
        if self._host is None:
            raise StorageError(path, "writing needs a host identity (S5_SEED_PHRASE)")
        directory, _, name = path.rpartition("/")
        await publish_files(self.portal, self._host.root(), directory, {name: bytes(data)}, replace=False)

    async def health(self) -> HealthStatus:
        return await self.portal.health()

    async def aclose(self) -> None:
        """Nothing to release: the portal's HTTP client belongs to the caller."""
