"""``fabstir-node portal``: a local S5 portal backed by a directory (s5.md §2.2, §2.3).

It serves the part of the portal API that fabstir-node's own client uses, with
the real semantics, so a database written "as s5.js would" can be read through
the native S5 path on one machine and in tests:

=====================================  =====================================================
``GET /s5/blob/{id}``                  307 to ``/s5/download/{id}`` (on ``redirect_base``
                                       if set, e.g. another host), 404 if absent
``GET``/``HEAD /s5/download/{id}``     the bytes; ``Range: bytes=...`` gives 206, an
                                       unsatisfiable range 416; ``etag`` is the hash
``GET /s5/registry?pk={b64url}``       ``{pk, revision, data, signature}`` or 404
``POST /s5/registry``                  JSON entry: signature verified, revision must be
                                       higher than the stored one (else 400); 204
``POST /s5/upload``                    raw body; ``{"cid": "z..."}`` (a BlobId)
``GET /s5/version``                    ``{name, version}``
=====================================  =====================================================

``{id}`` is any multibase text of a BlobId, a legacy raw CID, a bare hash or a
33-byte multihash (a ``.ext`` suffix is ignored).  With a ``token``, uploads
and registry writes need ``Authorization: Bearer <token>`` (or
``?auth_token=``); reads are open, as on a stock Dart node.

Layout on disk: ``DIR/blobs/<hex hash>`` and ``DIR/registry/<hex 0xed||pk>``
(the 0x07 wire record), each written atomically.  The portal does not check
blobs it serves -- readers do -- so a damaged file is served as it is.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import trio

from .. import __version__
from ..errors import FabstirError
from ..logging import get_logger
from ..s5 import multibase
from ..s5.cid import BlobId, parse_blob_id
from ..s5.registry import RegistryEntry, decode_entry, entry_from_json
from ..s5.seed import phrase_from_random, phrase_to_entropy
from .http import HttpRequest, HttpResponse, serve_http

__all__ = ["LocalPortal", "PortalDirectory", "embedded_seed_phrase", "serve_portal"]

log = get_logger(__name__)

#: Largest upload accepted (a 10,000-vector chunk of 384-d CBOR is ~16 MB).
DEFAULT_MAX_UPLOAD_BYTES = 256 * 1024 * 1024
_READ_SIZE = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class PortalDirectory:
    """Blobs by hash and registry entries by key, in a directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.registry = self.root / "registry"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.registry.mkdir(parents=True, exist_ok=True)
        self._registry_lock = trio.Lock()

    def blob_path(self, blob_hash: bytes) -> Path:
        return self.blobs / bytes(blob_hash).hex()

    async def blob_size(self, blob_hash: bytes) -> int | None:
        try:
            return (await trio.Path(self.blob_path(blob_hash)).stat()).st_size
        except FileNotFoundError:
            return None

    async def put_blob(self, data: bytes) -> BlobId:
        blob_id = BlobId.for_data(data)
        path = self.blob_path(blob_id.hash)
        if await self.blob_size(blob_id.hash) != len(data):
            await trio.to_thread.run_sync(_atomic_write, path, bytes(data))
        return blob_id

    async def get_entry(self, public_key: bytes) -> RegistryEntry | None:
        try:
            record = await trio.Path(self.registry / bytes(public_key).hex()).read_bytes()
        except FileNotFoundError:
            return None
        return decode_entry(record)

    async def set_entry(self, entry: RegistryEntry) -> str | None:
        """Store a verified entry; returns why it was refused, or None."""
        if not entry.is_valid():
            return "invalid signature"
        async with self._registry_lock:
            current = await self.get_entry(entry.pk)
            if current is not None and entry.revision <= current.revision:
                if entry == current:
                    return None
                return f"revision number too low (have {current.revision})"
            path = self.registry / entry.pk.hex()
            await trio.to_thread.run_sync(_atomic_write, path, entry.to_bytes())
        return None


class LocalPortal:
    """The request handler (see the module docstring); serve it with :func:`serve_portal`."""

    def __init__(
        self, directory: PortalDirectory, *, token: str | None = None, redirect_base: str | None = None
    ) -> None:
        self.directory = directory
        self._token = token
        self.redirect_base = redirect_base.rstrip("/") if redirect_base else None

    def __repr__(self) -> str:
        return f"LocalPortal({str(self.directory.root)!r})"

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path, method = request.path, request.method
        try:
            if path.startswith("/s5/blob/") and method in ("GET", "HEAD"):
                return await self._redirect(path[len("/s5/blob/") :])
            if path.startswith("/s5/download/") and method in ("GET", "HEAD"):
                return await self._download(path[len("/s5/download/") :], request)
            if path == "/s5/registry" and method == "GET":
                return await self._registry_get(request)
            if path == "/s5/registry" and method == "POST":
                return await self._registry_set(request)
            if path == "/s5/upload" and method == "POST":
                return await self._upload(request)
            if path == "/s5/version" and method == "GET":
                return HttpResponse.json(200, {"name": "fabstir-node portal", "version": __version__})
        except FabstirError as exc:
            return HttpResponse.json(400, {"error": exc.message})
        return HttpResponse.json(404, {"error": "not found"})

    # --- blobs --------------------------------------------------------------------

    @staticmethod
    def _blob_id(text: str) -> BlobId:
        text = text.split(".", 1)[0]
        return parse_blob_id(multibase.decode(text))

    async def _redirect(self, text: str) -> HttpResponse:
        blob_id = self._blob_id(text)
        if await self.directory.blob_size(blob_id.hash) is None:
            return HttpResponse(404)
        location = f"{self.redirect_base or ''}/s5/download/{text}"
        return HttpResponse(307, [("location", location)])

    async def _download(self, text: str, request: HttpRequest) -> HttpResponse:
        blob_id = self._blob_id(text)
        size = await self.directory.blob_size(blob_id.hash)
        if size is None:
            return HttpResponse(404)
        headers = [
            ("content-type", "application/octet-stream"),
            ("accept-ranges", "bytes"),
            ("etag", f'"{blob_id.hash.hex()}"'),
        ]
        span = _parse_range(request.header("range"), size)
        if isinstance(span, str):  # "unsatisfiable"
            return HttpResponse(416, [("content-range", f"bytes */{size}")])
        status, start, length = 200, 0, size
        if span is not None:
            start, end = span
            status, length = 206, end - start + 1
            headers.append(("content-range", f"bytes {start}-{end}/{size}"))
        headers.append(("content-length", str(length)))
        return HttpResponse(status, headers, _file_part(self.directory.blob_path(blob_id.hash), start, length))

    async def _upload(self, request: HttpRequest) -> HttpResponse:
        if not self._authorized(request):
            return HttpResponse.json(401, {"error": "unauthorized"})
        if not request.body:
            return HttpResponse.json(400, {"error": "empty upload"})
        blob_id = await self.directory.put_blob(request.body)
        return HttpResponse.json(200, {"cid": blob_id.to_string("z")})

    # --- registry -----------------------------------------------------------------

    async def _registry_get(self, request: HttpRequest) -> HttpResponse:
        public_key = _unb64(request.query.get("pk", ""))
        if public_key is None or len(public_key) != 33 or public_key[0] != 0xED:
            return HttpResponse.json(400, {"error": "pk must be base64url of 0xed followed by 32 bytes"})
        entry = await self.directory.get_entry(public_key)
        if entry is None:
            return HttpResponse(404)
        return HttpResponse.json(200, entry.to_json())

    async def _registry_set(self, request: HttpRequest) -> HttpResponse:
        if not self._authorized(request):
            return HttpResponse.json(401, {"error": "unauthorized"})
        try:
            entry = entry_from_json(orjson.loads(request.body))
        except orjson.JSONDecodeError:
            return HttpResponse.json(400, {"error": "body must be a JSON registry entry"})
        refusal = await self.directory.set_entry(entry)
        if refusal is not None:
            return HttpResponse.json(400, {"error": refusal})
        return HttpResponse(204)

    def _authorized(self, request: HttpRequest) -> bool:
        if self._token is None:
            return True
        header = request.header("authorization") or ""
        offered = header[7:] if header[:7].lower() == "bearer " else request.query.get("auth_token", "")
        return secrets.compare_digest(offered.encode(), self._token.encode())


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` of a single satisfiable range, ``"unsatisfiable"``, or None (serve it all)."""
    if value is None:
        return None
    match = _RANGE.match(value.strip())
    if match is None:
        return None  # malformed or several ranges: ignored, the whole body is sent
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


async def _file_part(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as handle:
        await handle.seek(start)
        remaining = length
        while remaining > 0:
            data = await handle.read(min(_READ_SIZE, remaining))
            if not data:
                return  # the file shrank: the server closes the connection
            remaining -= len(data)
            yield data


def _unb64(text: str) -> bytes | None:
    if not text or len(text) > 128:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


async def serve_portal(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 5050,
    *,
    token: str | None = None,
    redirect_base: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a portal over ``root`` until cancelled; ``nursery.start`` returns the bound port."""
    portal = LocalPortal(PortalDirectory(root), token=token, redirect_base=redirect_base)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve_http(
                portal.handle, host, port, task_status=task_status, max_request_body=max_upload_bytes
            )
        )
        log.info("portal_started", host=host, port=bound, root=str(root))
        task_status.started(bound)


def embedded_seed_phrase(root: Path) -> str:
    """The embedded default's host seed phrase, kept in ``root/host-seed-phrase`` (mode 0600).

    Made on first use.  The portal never serves this file: it serves only
    ``blobs/`` and ``registry/``.
    """
    path = Path(root) / "host-seed-phrase"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        phrase = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        phrase = phrase_from_random(os.urandom(26))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(phrase + "\n")
        return phrase
    phrase_to_entropy(phrase)  # refuse a damaged file early (FabstirError, no words in the message)
    return phrase
