"""A stand-in for the Fabstir S5 bridge, serving a local directory (protocol §4.5).

For tests, benchmarks and development::

    bridge = await nursery.start(serve_bridge, root, "127.0.0.1", 0)
    store = BridgeStore(bridge.url, client=client)

    python -m fabstir_node.storage.bridge_server ROOT --port 5522

Routes, as the real bridge has them: ``GET /s5/fs/{path}`` (200 raw bytes, or
404 ``{error, path, message}``), ``PUT`` (201 ``{success, path, size, cid}``;
the ``cid`` is a stand-in, not an S5 CID), ``DELETE`` (204), and
``GET /health`` (200, or 503 while "not initialised").  Files live under
``root`` through a :class:`LocalStore`, so paths are validated and contained.

:class:`Faults` injects the failures a real bridge and network produce, and
every request is recorded as a :class:`RequestRecord` (method, path, time,
status, and whether the response body was sent completely), so tests can
count attempts or see that downloads stopped after a client went away.
"""

from __future__ import annotations

import argparse
import enum
import io
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import blake3
import cbor2
import orjson
import trio

from ..errors import FabstirError, StorageError, StorageNotFound
from ..server.http import AbortConnection, FileBody, HttpRequest, HttpResponse, serve_http
from .local import LocalStore

__all__ = ["Action", "BridgeStandIn", "Faults", "RequestRecord", "Rule", "serve_bridge"]

_PREFIX = "/s5/fs/"


class Action(enum.StrEnum):
    """A misbehaviour for :meth:`Faults.inject`."""

    UNAVAILABLE = "unavailable"  #: 503 with a JSON error body
    STATUS = "status"  #: the rule's ``status`` with a JSON error body
    NOT_FOUND = "not_found"  #: 404 with the bridge's JSON error body
    DROP = "drop"  #: close the connection without any response
    TRUNCATE = "truncate"  #: declare the full length, send half the body, close
    TRICKLE = "trickle"  #: send ``prefix_bytes``, then stall (or drip a byte every ``interval``)


@attrs.define
class Rule:
    """One injected fault; ``times=None`` means for ever.  ``path=None`` matches every object."""

    action: Action
    path: str | None = None
    method: str | None = "GET"
    times: int | None = None
    status: int = 503
    prefix_bytes: int = 16
    interval: float | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and (self.method is None or self.method == method)
            and (self.path is None or self.path == path)
        )


@attrs.define
class Faults:
    """What the stand-in does wrong.  Mutable while the server runs.

    ``initialised=False`` makes every route answer 503, as the real bridge does
    while s5.js starts.  ``cbor_as_json=True`` re-serves stored CBOR files as
    JSON text, as the real bridge does for objects s5.js decoded as CBOR.
    ``chunked=True`` sends bodies without ``content-length`` (chunked encoding),
    so a client learns the size only while streaming.
    Rules for a specific path win over rules for every path; among those, the
    first added that still has ``times`` left applies.
    """

    initialised: bool = True
    cbor_as_json: bool = False
    chunked: bool = False
    latency: float = 0.0
    path_latency: dict[str, float] = attrs.field(factory=dict)
    rules: list[Rule] = attrs.field(factory=list)

    def inject(
        self, action: Action, *, path: str | None = None, times: int | None = None, **options: Any
    ) -> Rule:
        rule = Rule(Action(action), path=path, times=times, **options)
        self.rules.append(rule)
        return rule

    def fail(self, times: int, *, path: str | None = None) -> Rule:
        """``times`` consecutive 503s, then success."""
        return self.inject(Action.UNAVAILABLE, path=path, times=times)

    def delay(self, seconds: float, *, path: str | None = None) -> None:
        """Fixed latency before answering (for one path, or for all)."""
        if path is None:
            self.latency = seconds
        else:
            self.path_latency[path] = seconds

    def clear(self) -> None:
        self.rules.clear()
        self.path_latency.clear()
        self.latency = 0.0
        self.initialised = True
        self.cbor_as_json = False
        self.chunked = False

    def take(self, method: str, path: str) -> Rule | None:
        """The rule that applies to this request, counted as used."""
        candidates = [r for r in self.rules if r.path == path] + [r for r in self.rules if r.path is None]
        for rule in candidates:
            if rule.matches(method, path):
                rule.hits += 1
                return rule
        return None


@attrs.define
class RequestRecord:
    """One request the stand-in received.

    ``outcome`` is ``"pending"`` while the response is produced, then
    ``"complete"`` (the whole body was handed to the socket), ``"aborted"``
    (the client went away or the server stopped first), ``"dropped"`` or
    ``"truncated"``.  A trickling response is ``"trickled"`` once its first
    bytes are out, and ``"aborted"`` when the client gives up.
    """

    method: str
    path: str  #: the object path for ``/s5/fs/...``, else the HTTP path
    time: float  #: ``trio.current_time()`` on arrival
    status: int | None = None
    outcome: str = "pending"
    bytes_sent: int = 0


class BridgeStandIn:
    """The request handler of the stand-in bridge, with its faults and its request log."""

    def __init__(
        self, root: Path | str, faults: Faults | None = None, *, chunk_size: int = 1024 * 1024
    ) -> None:
        self.store = LocalStore(root, name="bridge-stand-in", max_bytes=None)
        self.faults = faults if faults is not None else Faults()
        self.records: list[RequestRecord] = []
        self.chunk_size = chunk_size
        self.port: int | None = None
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """The recorded requests, optionally only those with this method and path."""
        return [
            r
            for r in self.records
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        is_object = request.path.startswith(_PREFIX)
        path = request.path[len(_PREFIX):] if is_object else request.path
        record = RequestRecord(request.method, path, trio.current_time())
        self.records.append(record)
        try:
            response = await self._answer(request, path, is_object, record)
        except AbortConnection:
            record.outcome = "dropped"
            raise
        record.status = response.status
        if isinstance(response.body, bytes):
            record.outcome, record.bytes_sent = "complete", len(response.body)
        return response

    async def _answer(
        self, request: HttpRequest, path: str, is_object: bool, record: RequestRecord
    ) -> HttpResponse:
        faults = self.faults
        delay = faults.path_latency.get(path, faults.latency)
        if delay:
            await trio.sleep(delay)
        if not is_object:
            if path != "/health":
                return _error(404, path, "no such route")
            if not faults.initialised:
                return HttpResponse.json(503, {"status": "unhealthy", "initialized": False})
            return HttpResponse.json(200, {"status": "healthy", "initialized": True})
        if not faults.initialised:
            return _error(503, path, "S5 not initialized", error="Service unavailable")
        rule = faults.take(request.method, path)
        if rule is not None and rule.action is Action.UNAVAILABLE:
            return _error(503, path, "injected fault", error="Service unavailable")
        if rule is not None and rule.action is Action.STATUS:
            return _error(rule.status, path, "injected fault", error="Injected error")
        if rule is not None and rule.action is Action.NOT_FOUND:
            return _error(404, path, "injected fault")
        if rule is not None and rule.action is Action.DROP:
            raise AbortConnection
        if request.method == "PUT":
            return await self._put(path, request.body)
        if request.method == "DELETE":
            return await self._delete(path)
        if request.method != "GET":
            return _error(405, path, "method not allowed", error="Method not allowed")
        if rule is None and not faults.cbor_as_json and not faults.chunked:
            # the plain case, a load's chunks: the kernel copies the file to the socket
            try:
                fd, size = await self.store.open_file(path)
            except (FabstirError, StorageError) as exc:
                return _error(404, path, getattr(exc, "message", str(exc)))
            headers = [("content-type", "application/octet-stream"), ("content-length", str(size))]
            return HttpResponse(200, headers, FileBody(fd, size, sent=lambda n: _file_sent(record, n, size)))
        try:
            data = await self.store.get(path)
        except (FabstirError, StorageError) as exc:
            return _error(404, path, getattr(exc, "message", str(exc)))
        content_type = "application/octet-stream"
        if faults.cbor_as_json and (text := cbor_as_json_text(data)) is not None:
            data, content_type = text, "application/json"
        headers = [("content-type", content_type), ("content-length", str(len(data)))]
        if rule is not None and rule.action is Action.TRUNCATE:
            headers[1] = ("content-length", str(len(data) + 1))
            half = data[: len(data) // 2]
            return HttpResponse(200, headers, _stream(record, half, self.chunk_size, "truncated"))
        if rule is not None and rule.action is Action.TRICKLE:
            headers[1] = ("content-length", str(len(data) + 1_000_000))
            return HttpResponse(200, headers, _trickle(record, data, rule.prefix_bytes, rule.interval))
        if faults.chunked:
            del headers[1]
        return HttpResponse(200, headers, _stream(record, data, self.chunk_size, "complete"))

    async def _put(self, path: str, body: bytes) -> HttpResponse:
        try:
            await self.store.put(path, body)
        except FabstirError as exc:
            return _error(400, path, exc.message, error="Bad request")
        except StorageError as exc:
            return _error(500, path, exc.message, error="Write failed")
        cid = "standin-" + blake3.blake3(body).hexdigest()
        return HttpResponse.json(201, {"success": True, "path": path, "size": len(body), "cid": cid})

    async def _delete(self, path: str) -> HttpResponse:
        try:
            await self.store.delete(path)
        except (FabstirError, StorageNotFound) as exc:
            return _error(404, path, getattr(exc, "message", str(exc)))
        except StorageError as exc:
            return _error(500, path, exc.message, error="Delete failed")
        return HttpResponse(204)


def _error(status: int, path: str, message: str, *, error: str = "Not found") -> HttpResponse:
    return HttpResponse.json(status, {"error": error, "path": path, "message": message})


def _file_sent(record: RequestRecord, sent: int, size: int) -> None:
    record.bytes_sent = sent
    record.outcome = "complete" if sent == size else "aborted"


async def _stream(record: RequestRecord, data: bytes, chunk_size: int, outcome: str) -> AsyncIterator[bytes]:
    try:
        for start in range(0, len(data), chunk_size):
            piece = data[start : start + chunk_size]
            yield piece
            record.bytes_sent += len(piece)  # resumed: the server has sent it
        record.outcome = outcome
    finally:
        if record.outcome == "pending":
            record.outcome = "aborted"


async def _trickle(
    record: RequestRecord, data: bytes, prefix_bytes: int, interval: float | None
) -> AsyncIterator[bytes]:
    try:
        yield data[:prefix_bytes] or b"\0"
        record.bytes_sent += max(1, len(data[:prefix_bytes]))
        record.outcome = "trickled"
        while interval is not None:
            await trio.sleep(interval)
            yield b"\0"
            record.bytes_sent += 1
        await trio.sleep_forever()
    finally:
        record.outcome = "aborted"  # a trickle never completes


# --- CBOR re-served as JSON -----------------------------------------------------


def cbor_as_json_text(data: bytes) -> bytes | None:
    """What the real bridge returns for a file s5.js decoded as CBOR, or ``None`` if it is not CBOR.

    The file must be exactly one CBOR map or array.  The value is rendered the
    way Node's ``JSON.stringify`` renders what cbor-x decodes: ``undefined``
    drops an object key and becomes ``null`` in an array, an RFC 8746 typed
    array becomes an object with index keys, a byte string becomes Node's
    ``{"type": "Buffer", "data": [...]}``.
    """
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception:  # noqa: BLE001 - any malformed input: "not CBOR"
        return None
    if stream.tell() != len(data) or not isinstance(value, dict | list):
        return None
    try:
        return orjson.dumps(_as_js(value), default=str)
    except (RecursionError, orjson.JSONEncodeError):
        return None


def _as_js(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _as_js(v) for k, v in value.items() if v is not cbor2.undefined}
    if isinstance(value, list | tuple):
        return [None if v is cbor2.undefined else _as_js(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return {"type": "Buffer", "data": list(value)}
    if isinstance(value, cbor2.CBORTag):
        array = _typed_array(value)
        return array if array is not None else _as_js(value.value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(value)
    if value is cbor2.undefined or isinstance(value, cbor2.CBORSimpleValue):
        return None
    return value


def _typed_array(tag: cbor2.CBORTag) -> dict[str, float | int] | None:
    """An RFC 8746 typed array (tags 64-87) as JSON.stringify renders one, else ``None``."""
    if not (64 <= tag.tag <= 87 and tag.tag != 76 and isinstance(tag.value, bytes)):
        return None
    bits = tag.tag - 64
    is_float, signed, little, size_log = bits >> 4 & 1, bits >> 3 & 1, bits >> 2 & 1, bits & 3
    if is_float:
        if size_log == 3:
            return None  # float128: no JavaScript type
        code, size = "efd"[size_log], 2 << size_log
    else:
        size = 1 << size_log
        code = {1: "b", 2: "h", 4: "i", 8: "q"}[size]
        code = code if signed else code.upper()
    if len(tag.value) % size:
        return None
    values = struct.unpack(f"{'<' if little else '>'}{len(tag.value) // size}{code}", tag.value)
    return {str(i): v for i, v in enumerate(values)}


# --- serving --------------------------------------------------------------------


async def serve_bridge(
    root: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    faults: Faults | None = None,
    max_request_body: int = 512 * 1024 * 1024,
    response_timeout: float = 3600.0,
    task_status: trio.TaskStatus[BridgeStandIn] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``root`` as a bridge until cancelled; ``nursery.start`` returns the :class:`BridgeStandIn`."""
    bridge = BridgeStandIn(root, faults)
    bridge.host = host
    async with trio.open_nursery() as nursery:
        bridge.port = await nursery.start(
            lambda task_status: serve_http(
                bridge,
                host,
                port,
                task_status=task_status,
                max_request_body=max_request_body,
                response_timeout=response_timeout,
            )
        )
        task_status.started(bridge)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``ROOT [--host H] [--port P] [--latency S] [--cbor-as-json]``."""
    parser = argparse.ArgumentParser(description="Serve a directory as a stand-in Fabstir S5 bridge.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5522)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--cbor-as-json", action="store_true", help="re-serve CBOR files as JSON text")
    args = parser.parse_args(argv)
    faults = Faults(latency=args.latency, cbor_as_json=args.cbor_as_json)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            bridge = await nursery.start(
                lambda task_status: serve_bridge(
                    args.root, args.host, args.port, faults=faults, task_status=task_status
                )
            )
            print(f"stand-in S5 bridge serving {args.root} at {bridge.url}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
