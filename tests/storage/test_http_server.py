"""The tiny HTTP server, driven by httpx (and raw sockets for misbehaving clients) over loopback."""

from __future__ import annotations

import os
import tempfile

import httpx
import pytest
import trio

from fabstir_node.server.http import AbortConnection, FileBody, HttpRequest, HttpResponse, serve_http

#: The file the "/file" routes send (1.5 MB: more than one socket buffer).
FILE_BYTES = bytes(range(256)) * 6000


class Recorder:
    """A handler with a few routes that remembers what it saw."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.files: list[tuple[int, list[int]]] = []  # each file body's descriptor and what it reported sent

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/abort":
            raise AbortConnection
        if request.path == "/stream":
            return HttpResponse(200, [], _chunks([b"alpha-", b"beta-", b"gamma"]))
        if request.path == "/short":
            return HttpResponse(200, [("content-length", "100")], _chunks([b"only ten.."]))
        if request.path == "/hang":
            self.started.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.set()
        if request.path in ("/file", "/file-short"):
            with tempfile.TemporaryFile() as file:
                file.write(FILE_BYTES)
                file.flush()
                fd = os.dup(file.fileno())
            sent: list[int] = []
            self.files.append((fd, sent))
            size = len(FILE_BYTES) + (1000 if request.path == "/file-short" else 0)
            return HttpResponse(200, [], FileBody(fd, size, sent=sent.append))
        if request.path == "/echo":
            return HttpResponse(200, [("x-method", request.method)], request.body)
        return HttpResponse.json(200, {"path": request.path, "query": request.query})


async def _chunks(parts: list[bytes]):
    for part in parts:
        yield part


@pytest.fixture
async def server(nursery):
    recorder = Recorder()
    port = await nursery.start(
        lambda task_status: serve_http(
            recorder,
            "127.0.0.1",
            0,
            task_status=task_status,
            max_request_body=1000,
            request_timeout=0.5,
            response_timeout=1.0,
        )
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        yield recorder, port, client


async def test_get_decodes_path_and_query(server):
    recorder, _, client = server
    response = await client.get("/a%20b/c", params={"x": "1", "y": ""})
    assert response.status_code == 200
    assert response.json() == {"path": "/a b/c", "query": {"x": "1", "y": ""}}
    assert recorder.requests[0].target == "/a%20b/c?x=1&y="
    assert response.headers["date"]


async def test_keep_alive_reuses_one_connection(server):
    recorder, _, client = server
    for _ in range(3):
        assert (await client.get("/")).status_code == 200
    assert len({r.client for r in recorder.requests}) == 1


async def test_post_body_and_head(server):
    _, _, client = server
    response = await client.post("/echo", content=b"x" * 999)
    assert response.content == b"x" * 999
    head = await client.head("/echo")
    assert head.status_code == 200 and head.headers["x-method"] == "HEAD" and head.content == b""


async def test_body_over_limit_is_413(server):
    recorder, _, client = server
    response = await client.post("/echo", content=b"x" * 1001)
    assert response.status_code == 413
    assert recorder.requests == []


async def test_handler_exception_is_500_and_server_lives_on(server):
    _, _, client = server
    assert (await client.get("/boom")).status_code == 500
    assert (await client.get("/")).status_code == 200


async def test_streamed_body_is_chunked(server):
    _, _, client = server
    response = await client.get("/stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"alpha-beta-gamma"


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def test_file_body_is_sent_whole_and_closed(server):
    recorder, _, client = server
    response = await client.get("/file")
    assert response.headers["content-length"] == str(len(FILE_BYTES))
    assert response.content == FILE_BYTES
    head = await client.head("/file")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(FILE_BYTES)))
    (first, sent), (second, head_sent) = recorder.files
    assert sent == [len(FILE_BYTES)] and head_sent == []
    assert _closed(first) and _closed(second)
    assert (await client.get("/")).status_code == 200  # the connection is still good


async def test_file_shorter_than_declared_closes_connection(server):
    recorder, _, client = server
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/file-short")
    [(fd, sent)] = recorder.files
    assert sent == [len(FILE_BYTES)] and _closed(fd)
    assert (await client.get("/")).status_code == 200


async def test_client_leaving_mid_file_closes_it(server):
    recorder, port, _ = server
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n")
    with trio.fail_after(2):
        await stream.receive_some(1000)
        await stream.aclose()
        while not recorder.files or not _closed(recorder.files[0][0]):
            await trio.sleep(0.01)


async def test_short_streamed_body_closes_connection(server):
    _, _, client = server
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/short")
    assert (await client.get("/")).status_code == 200


async def test_abort_connection_sends_nothing(server):
    _, _, client = server
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/abort")
    assert (await client.get("/")).status_code == 200


async def test_garbage_gets_400(server):
    _, port, _ = server
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        with trio.fail_after(2):
            reply = await _read_until_closed(stream)
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_slow_request_is_cut_off(server):
    recorder, port, _ = server
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n")  # never finishes the headers
        with trio.fail_after(3):
            reply = await _read_until_closed(stream)
    assert reply == b""
    assert recorder.requests == []


async def test_client_disconnect_cancels_handler(server):
    recorder, port, _ = server
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
    with trio.fail_after(2):
        await recorder.started.wait()
        await stream.aclose()
        await recorder.cancelled.wait()


async def test_handler_past_response_timeout_gets_503(server):
    _, _, client = server
    response = await client.get("/hang")
    assert response.status_code == 503


async def test_cancelling_the_server_closes_open_connections():
    recorder = Recorder()
    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_http, recorder, "127.0.0.1", 0)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
            await recorder.started.wait()
            nursery.cancel_scope.cancel()
        assert recorder.cancelled.is_set()
        assert await _read_until_closed(stream) == b""
        await stream.aclose()


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def test_percent_encoded_utf8_path_decodes_and_raw_bytes_are_refused(server):
    recorder, port, client = server
    await client.get("/caf%C3%A9")
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all("GET /café HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        with trio.fail_after(2):
            reply = await _read_until_closed(stream)
    assert [r.path for r in recorder.requests] == ["/café"]
    assert reply.startswith(b"HTTP/1.1 400 ")
