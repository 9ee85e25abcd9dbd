"""A client of S5 portals over HTTP: blobs, registry entries, uploads (s5.md §2.2, §2.3).

:class:`PortalClient` talks to one or more portals, in the order given
(``S5_PORTAL_URL=https://a,https://b``), and never returns a byte it has not
checked:

* **Blobs.** ``GET {portal}/s5/blob/{id}`` (the id is the ``z``-base58 BlobId),
  following 301/302/303/307/308 redirects itself (at most ``max_redirects``);
  on 404 or another refusal, ``GET {portal}/s5/download/{id}``.  Every body is
  read under the size cap (the blob's exact size when the id carries one) and
  checked with :func:`fabstir_node.s5.cid.verify_blob`; a body that does not
  match is dropped and the next source is tried.  A blob no portal has is
  ``None``; a blob that only came back wrong raises ``S5_HASH_MISMATCH``.
* **Credentials.** A portal's bearer token goes only to that portal's own
  origin (scheme, host and port).  A redirect to any other origin -- a CDN, a
  storage host -- is followed without the ``Authorization`` header.
* **Registry.** ``GET {portal}/s5/registry?pk=`` is asked of every portal at
  once; each answer's Ed25519 signature is verified and the highest valid
  revision wins, so one stale portal cannot roll a directory back.  404 from
  a portal means "no entry there".
* **Writes.** ``POST /s5/upload`` (raw body; the returned id must name the
  bytes sent) and ``POST /s5/registry`` go to the first portal that accepts.

Failure policy: for reads, one *round* asks each portal once (a per-portal
deadline of ``timeout_seconds``); transport errors, timeouts, truncated bodies
and 5xx/408/429 make a portal *transient*.  A round with no usable answer
from any portal is repeated up to ``max_retries`` times after a full-jitter
backoff (:class:`~fabstir_node.storage.transfer.RetryPolicy`), then
:class:`~fabstir_node.errors.StorageUnavailable`.  A portal that is down is
therefore skipped at once in favour of the next one, not retried first.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import attrs
import httpx
import orjson
import trio

from ..errors import ErrorCode, FabstirError, StorageError, StorageTooLarge, StorageUnavailable
from ..logging import get_logger
from ..s5 import multibase
from ..s5.cid import BlobId, verify_blob
from ..s5.registry import RegistryEntry, entry_from_json, latest
from .base import DEFAULT_MAX_BODY_BYTES, HealthStatus, StorageStats, effective_limit
from .transfer import RetryPolicy, Transient, attempt_timeout, is_transient_status, read_body, read_prefix

__all__ = ["Portal", "PortalClient", "parse_portals"]

log = get_logger(__name__)
_T = TypeVar("_T")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: A registry answer is a small JSON object; anything bigger is not one.
_MAX_ENTRY_BYTES = 16 * 1024
#: Bodies larger than this are hashed in a worker thread.
_INLINE_HASH_BYTES = 1024 * 1024
#: Key asked for by the health check (no one holds its private key).
_HEALTH_KEY = b"\xed" + bytes(32)


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


@attrs.frozen
class Portal:
    """One portal: its base URL and the bearer token it gets (never logged)."""

    url: str = attrs.field(converter=_without_trailing_slash)
    token: str | None = attrs.field(default=None, repr=False)

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return _origin(self.url)


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default)


def parse_portals(urls: Sequence[str], token: str | None = None) -> list[Portal]:
    """Portals from ``S5_PORTAL_URL`` and ``S5_PORTAL_TOKEN``.

    ``token`` is one token for every portal, or a comma-separated list with one
    entry per portal, in the same order (an empty entry: no token).
    """
    urls = [u.strip() for u in urls if u.strip()]
    if not urls:
        raise ValueError("at least one portal URL is needed")
    tokens: list[str | None]
    if token is None or not token.strip():
        tokens = [None] * len(urls)
    elif "," in token:
        tokens = [t.strip() or None for t in token.split(",")]
        if len(tokens) != len(urls):
            raise ValueError(f"S5_PORTAL_TOKEN lists {len(tokens)} tokens for {len(urls)} portals")
    else:
        tokens = [token.strip()] * len(urls)
    return [Portal(url, tok) for url, tok in zip(urls, tokens)]


class _Refused(Exception):
    """A source answered, but not with the blob (a refusal other than 404); not worth a retry."""


class PortalClient:
    """Reads and writes through S5 portals (see the module docstring)."""

    def __init__(
        self,
        portals: Sequence[Portal],
        *,
        client: httpx.AsyncClient,
        policy: RetryPolicy | None = None,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        stats: StorageStats | None = None,
        name: str = "s5-portal",
        max_redirects: int = 5,
    ) -> None:
        if not portals:
            raise ValueError("at least one portal is needed")
        self.portals = list(portals)
        self.policy = policy if policy is not None else RetryPolicy()
        self.max_body_bytes = max_body_bytes
        self.stats = stats if stats is not None else StorageStats()
        self.name = name
        self.max_redirects = max_redirects
        self._client = client
        self._timeout = attempt_timeout(client, self.policy.timeout_seconds)

    def __repr__(self) -> str:
        return f"PortalClient({[p.url for p in self.portals]!r})"

    # --- blobs --------------------------------------------------------------------

    async def get_blob(self, blob_id: BlobId, *, max_bytes: int | None = None) -> bytes | None:
        """The verified bytes of ``blob_id``, or None if no portal has it."""
        label = f"blob {blob_id.hash.hex()[:16]}"
        limit = effective_limit(self.max_body_bytes, max_bytes)
        if blob_id.size:
            if limit is not None and blob_id.size > limit:
                raise StorageTooLarge(label, f"blob is {blob_id.size} bytes, cap is {limit}")
            limit = blob_id.size
        self.stats.requests += 1
        try:
            return await self._rounds(label, lambda portal: self._blob_from(portal, blob_id, limit, label))
        except (StorageError, FabstirError):
            self.stats.errors += 1
            raise

    async def _rounds(self, label: str, ask: Callable[[Portal], Awaitable[_T | None]]) -> _T | None:
        """Ask portals in order until one has the answer, in rounds (see the module docstring)."""
        reason = ""
        for number in range(self.policy.max_retries + 1):
            if number:
                self.stats.record_retry(self.name, label, number, reason)
                await trio.sleep(self.policy.backoff(number))
            transient = False
            mismatch: FabstirError | None = None
            refusals: list[str] = []
            for portal in self.portals:
                try:
                    with trio.fail_after(self.policy.timeout_seconds):
                        body = await ask(portal)
                except Transient as exc:
                    transient, reason = True, f"{portal.url}: {exc.reason}"
                    continue
                except trio.TooSlowError:
                    transient = True
                    reason = f"{portal.url}: no complete answer within {self.policy.timeout_seconds} s"
                    continue
                except _Refused as exc:
                    refusals.append(f"{portal.url}: {exc}")
                    continue
                except FabstirError as exc:
                    if exc.code is not ErrorCode.S5_HASH_MISMATCH:
                        raise
                    log.warning("s5.blob_mismatch", portal=portal.url, blob=label, detail=exc.detail)
                    mismatch = exc
                    continue
                if body is not None:
                    return body
            if not transient:
                if mismatch is not None:
                    raise mismatch
                if refusals:
                    raise StorageUnavailable(label, "; ".join(refusals))
                return None
        raise StorageUnavailable(label, f"no portal answered in {self.policy.max_retries + 1} rounds; last: {reason}")

    async def _blob_from(self, portal: Portal, blob_id: BlobId, limit: int | None, label: str) -> bytes | None:
        text = multibase.encode(blob_id.to_bytes(), "z")
        transient: Transient | None = None
        mismatch: FabstirError | None = None
        refused: _Refused | None = None
        for endpoint in ("blob", "download"):
            try:
                body = await self._fetch(portal, f"{portal.url}/s5/{endpoint}/{text}", label, limit)
            except StorageTooLarge:
                if not blob_id.size:
                    raise
                # longer than the blob the id names: wrong bytes, like a hash mismatch
                mismatch = FabstirError(
                    ErrorCode.S5_HASH_MISMATCH, "downloaded blob has the wrong size", detail=f"over {limit} bytes"
                )
                continue
            except Transient as exc:
                transient = exc
                continue
            except _Refused as exc:
                refused = exc
                continue
            if body is None:
                continue
            try:
                if len(body) > _INLINE_HASH_BYTES:  # hashing megabytes is CPU work: off the event loop
                    await trio.to_thread.run_sync(verify_blob, blob_id, body)
                else:
                    verify_blob(blob_id, body)
            except FabstirError as exc:
                mismatch = exc
                continue
            return body
        if transient is not None:
            raise transient
        if mismatch is not None:
            raise mismatch
        if refused is not None:
            raise refused
        return None

    def _headers(self, portal: Portal, url: httpx.URL | str) -> dict[str, str]:
        if portal.token and _origin(url) == portal.origin:
            return {"authorization": f"Bearer {portal.token}"}
        return {}

    async def _fetch(self, portal: Portal, url: str, label: str, limit: int | None) -> bytes | None:
        """GET following redirects by hand; bytes on 200, None on 404, else raise."""
        target = httpx.URL(url)
        for _ in range(self.max_redirects + 1):
            try:
                request = self._client.stream(
                    "GET", target, headers=self._headers(portal, target), timeout=self._timeout
                )
                async with request as response:
                    status = response.status_code
                    if status in _REDIRECTS:
                        location = response.headers.get("location")
                        await read_prefix(response)
                        if not location:
                            raise _Refused(f"HTTP {status} without a location")
                        target = response.url.join(location)
                        if target.scheme not in ("http", "https"):
                            raise _Refused(f"redirect to a {target.scheme!r} URL")
                        continue
                    if status == 200:
                        return await read_body(
                            response, label, limit, lambda n: self.stats.record_bytes(self.name, n)
                        )
                    await read_prefix(response)
                    if status == 404:
                        return None
                    if is_transient_status(status):
                        raise Transient(f"HTTP {status} from {target.host}")
                    raise _Refused(f"HTTP {status} from {target.host}")
            except httpx.UnsupportedProtocol as exc:
                raise _Refused(f"bad portal URL: {exc}") from None
            except (httpx.TransportError, httpx.DecodingError) as exc:
                raise Transient(f"{type(exc).__name__}: {exc}") from None
        raise _Refused(f"more than {self.max_redirects} redirects")

    # --- registry -----------------------------------------------------------------

    async def get_entry(self, public_key: bytes) -> RegistryEntry | None:
        """The valid entry with the highest revision any portal holds for ``public_key`` (33 bytes)."""
        public_key = bytes(public_key)
        label = f"registry {public_key.hex()[:18]}"
        self.stats.requests += 1
        try:
            return await self._get_entry(public_key, label)
        except (StorageError, FabstirError):
            self.stats.errors += 1
            raise

    async def _get_entry(self, public_key: bytes, label: str) -> RegistryEntry | None:
        reason = ""
        for number in range(self.policy.max_retries + 1):
            if number:
                self.stats.record_retry(self.name, label, number, reason)
                await trio.sleep(self.policy.backoff(number))
            answers: list[RegistryEntry | None] = []
            failures: list[str] = []

            async def ask(portal: Portal) -> None:
                try:
                    with trio.fail_after(self.policy.timeout_seconds):
                        answers.append(await self._entry_from(portal, public_key, label))
                except Transient as exc:
                    failures.append(f"{portal.url}: {exc.reason}")
                except trio.TooSlowError:
                    failures.append(f"{portal.url}: no answer within {self.policy.timeout_seconds} s")
                except _Refused as exc:
                    failures.append(f"{portal.url}: {exc}")

            async with trio.open_nursery() as nursery:
                for portal in self.portals:
                    nursery.start_soon(ask, portal)
            if answers:
                entries = [a for a in answers if a is not None]
                best = latest(entries, public_key)
                if best is None and entries and None not in answers:
                    raise FabstirError(
                        ErrorCode.S5_INVALID_ENTRY, "registry entry signature is invalid", detail=label
                    )
                return best
            reason = "; ".join(failures)
        raise StorageUnavailable(label, f"no portal answered in {self.policy.max_retries + 1} rounds; last: {reason}")

    async def _entry_from(self, portal: Portal, public_key: bytes, label: str) -> RegistryEntry | None:
        url = f"{portal.url}/s5/registry"
        params = {"pk": _b64url(public_key)}
        try:
            request = self._client.stream(
                "GET", url, params=params, headers=self._headers(portal, url), timeout=self._timeout
            )
            async with request as response:
                status = response.status_code
                if status == 200:
                    body = bytes(await read_body(response, label, _MAX_ENTRY_BYTES))
                else:
                    await read_prefix(response)
        except httpx.UnsupportedProtocol as exc:
            raise _Refused(f"bad portal URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        except StorageError as exc:  # too large: not a registry answer
            raise _Refused(exc.message) from None
        if status == 404:
            return None
        if status != 200:
            if is_transient_status(status):
                raise Transient(f"HTTP {status}")
            raise _Refused(f"HTTP {status}")
        try:
            entry = entry_from_json(orjson.loads(body))
        except (orjson.JSONDecodeError, FabstirError):
            log.warning("s5.registry_answer_malformed", portal=portal.url, key=label)
            raise _Refused("malformed registry answer") from None
        if entry.pk != public_key or not entry.is_valid():
            log.warning("s5.registry_entry_invalid", portal=portal.url, key=label)
        return entry

    # --- writes -------------------------------------------------------------------

    async def upload(self, data: bytes) -> BlobId:
        """Store ``data`` on the first portal that accepts it; returns its id."""
        data = bytes(data)
        blob_id = BlobId.for_data(data)
        label = f"upload {blob_id.hash.hex()[:16]}"

        async def once(portal: Portal) -> BlobId:
            url = f"{portal.url}/s5/upload"
            headers = {"content-type": "application/octet-stream", **self._headers(portal, url)}
            body = await self._post(portal, url, label, content=data, headers=headers)
            try:
                answer = orjson.loads(body)
                returned = BlobId.parse(answer["cid"])
            except (orjson.JSONDecodeError, KeyError, TypeError, FabstirError):
                raise _Refused("upload answer has no usable cid") from None
            if returned.hash != blob_id.hash:
                raise _Refused("upload answer names other bytes")
            self.stats.record_bytes(self.name, len(data))
            return blob_id

        return await self._write(label, once)

    async def set_entry(self, entry: RegistryEntry) -> None:
        """Publish a signed entry on the first portal that accepts it.

        A portal that refuses it (bad signature, revision not higher than its
        own) raises ``S5_INVALID_ENTRY`` with the portal's reason in ``detail``.
        """
        label = f"registry {entry.pk.hex()[:18]}"
        payload = orjson.dumps(entry.to_json())

        async def once(portal: Portal) -> bool:
            url = f"{portal.url}/s5/registry"
            headers = {"content-type": "application/json", **self._headers(portal, url)}
            await self._post(portal, url, label, content=payload, headers=headers, refusal_is_final=True)
            return True

        await self._write(label, once)

    async def _write(self, label: str, once: Callable[[Portal], Awaitable[_T]]) -> _T:
        self.stats.requests += 1
        try:
            result = await self._rounds(label, once)
        except (StorageError, FabstirError):
            self.stats.errors += 1
            raise
        if result is None:  # every portal answered, none stored it
            self.stats.errors += 1
            raise StorageUnavailable(label, "no portal accepted the write")
        return result

    async def _post(
        self, portal: Portal, url: str, label: str, *, content: bytes, headers: dict[str, str],
        refusal_is_final: bool = False,
    ) -> bytes:
        try:
            request = self._client.stream("POST", url, content=content, headers=headers, timeout=self._timeout)
            async with request as response:
                status = response.status_code
                body = await read_prefix(response, _MAX_ENTRY_BYTES)
        except httpx.UnsupportedProtocol as exc:
            raise _Refused(f"bad portal URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return body
        if is_transient_status(status):
            raise Transient(f"HTTP {status}")
        message = body[:200].decode("utf-8", "replace")
        if refusal_is_final and status in (400, 409):
            raise FabstirError(ErrorCode.S5_INVALID_ENTRY, "the portal refused the registry entry", detail=message)
        raise _Refused(f"HTTP {status}: {message}")

    # --- health -------------------------------------------------------------------

    async def health(self) -> HealthStatus:
        """Healthy if at least one portal answers a registry lookup (200 or 404) in time."""
        problems: list[str] = []
        for portal in self.portals:
            try:
                with trio.fail_after(self.policy.timeout_seconds):
                    await self._entry_from(portal, _HEALTH_KEY, "health")
                return HealthStatus(True, f"portal {portal.url} answers")
            except trio.TooSlowError:
                problems.append(f"{portal.url}: no answer within {self.policy.timeout_seconds} s")
            except (Transient, _Refused) as exc:
                problems.append(f"{portal.url}: {exc}")
        return HealthStatus(False, "no portal answers: " + "; ".join(problems))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")

