"""The operations endpoint: ``/metrics``, ``/health`` and ``/ready`` over plain HTTP.

It runs on its own port (trio-websocket cannot answer ordinary HTTP requests,
engine-notes §3.1) with the project's small h11 server
(:mod:`fabstir_node.server.http`), inside the daemon's root nursery: no
threads, and it stops with the daemon.

* ``GET /health``: liveness.  Answering at all proves the event loop runs;
  always ``200`` with ``{"status": "ok", "version", "uptime_seconds"}``.
* ``GET /ready``: readiness.  ``200`` when the storage backend reports
  healthy (a writable local store, or a bridge whose own ``/health`` is ok)
  and the daemon is not shutting down; else ``503`` with
  ``{"status": "not_ready", "reason": ...}``.  A health check that takes
  longer than ``ready_timeout`` seconds counts as not ready.
* ``GET /metrics``: the Prometheus exposition of :class:`Metrics` (OpenMetrics
  when the scraper's ``Accept`` header asks for it).

``HEAD`` works wherever ``GET`` does; other methods get ``405``, other paths
``404``.  Readiness reasons name the store or bridge but never carry secrets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from .. import __version__
from ..logging import get_logger
from ..service.node import Node
from .http import HttpRequest, HttpResponse, serve_http
from .metrics import Metrics

__all__ = ["Probes"]

log = get_logger(__name__)


class Probes:
    """The HTTP handler for the operations endpoint (an awaitable ``request -> response``).

    ``closing`` tells whether the daemon is shutting down (``/ready`` is then
    503, so load balancers stop sending new clients).  ``metrics`` may be
    ``None``: ``/metrics`` answers 404 then.
    """

    def __init__(
        self,
        node: Node,
        metrics: Metrics | None,
        *,
        closing: Callable[[], bool] = lambda: False,
        ready_timeout: float = 5.0,
    ) -> None:
        self.node = node
        self.metrics = metrics
        self.closing = closing
        self.ready_timeout = ready_timeout

    async def run(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on ``host:port`` until cancelled; ``nursery.start`` returns the bound port."""
        await serve_http(
            self, host, port, task_status=task_status,
            max_request_body=16 * 1024, request_timeout=30.0, response_timeout=self.ready_timeout + 5.0,
        )

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        route = _ROUTES.get(request.path)
        if route is None:
            return HttpResponse.text(404, "not found: try /health, /ready or /metrics\n")
        if request.method not in ("GET", "HEAD"):
            return HttpResponse.text(405, "method not allowed\n", [("allow", "GET, HEAD")])
        return await route(self, request)

    # --- routes ----------------------------------------------------------------------

    def _base(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "version": __version__,
            "uptime_seconds": round(max(0.0, time.time() - self.node.started_at), 3),
        }

    async def _health(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._base("ok"), _NO_STORE)

    async def _ready(self, request: HttpRequest) -> HttpResponse:
        storage = self.node.storage
        backend = str(getattr(storage, "name", type(storage).__name__))
        if self.closing():
            return self._not_ready("shutting down")
        if storage is None:
            return self._not_ready("no storage backend configured")
        with trio.move_on_after(self.ready_timeout):
            try:
                health = await storage.health()
            except Exception as exc:  # noqa: BLE001 - health() should not raise; never let a probe crash
                log.warning("ready_check_failed", backend=backend, error=type(exc).__name__)
                return self._not_ready(f"storage health check failed: {type(exc).__name__}", backend)
            if not health.ok:
                return self._not_ready(health.detail, backend)
            body = self._base("ready")
            body["storage"] = {"backend": backend, "ok": True, "detail": health.detail}
            return HttpResponse.json(200, body, _NO_STORE)
        return self._not_ready(f"storage health check took longer than {self.ready_timeout:g} s", backend)

    def _not_ready(self, reason: str, backend: str | None = None) -> HttpResponse:
        """503 with ``reason``; ``backend`` names the storage when its check is what failed."""
        body = self._base("not_ready")
        body["reason"] = reason
        if backend is not None:
            body["storage"] = {"backend": backend, "ok": False, "detail": reason}
        return HttpResponse.json(503, body, _NO_STORE)

    async def _metrics(self, request: HttpRequest) -> HttpResponse:
        if self.metrics is None:
            return HttpResponse.text(404, "metrics are disabled\n")
        body, content_type = self.metrics.exposition(request.header("accept"))
        return HttpResponse(200, [("content-type", content_type), *_NO_STORE], body)


_NO_STORE = [("cache-control", "no-store")]

_ROUTES = {
    "/health": Probes._health,
    "/healthz": Probes._health,
    "/ready": Probes._ready,
    "/readyz": Probes._ready,
    "/metrics": Probes._metrics,
}
