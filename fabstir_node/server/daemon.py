"""The daemon: build the node, run the servers, stop cleanly on a signal.

One root nursery owns everything: the WebSocket server and (when enabled)
the metrics/health HTTP server.  SIGINT or SIGTERM starts a graceful
shutdown (stop accepting, let in-flight requests finish within the grace
period, close every connection with a close frame, cancel loads); a second
signal cuts the grace short.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import attrs
import httpx
import trio

from .. import __version__, collector
from ..config import ConfigError, Settings
from ..crypto.keys import HostKey
from ..logging import configure, get_logger
from ..service.node import Node
from ..storage.base import Storage
from ..storage.bridge import BridgeStore
from ..storage.local import LocalStore
from ..storage.s5_portal import PortalClient, parse_portals
from ..storage.s5_store import S5Store
from ..storage.transfer import RetryPolicy, make_http_client
from .metrics import Metrics
from .portal import embedded_seed_phrase, serve_portal
from .probes import Probes
from .websocket import WebSocketService

log = get_logger(__name__)


def http_connections(settings: Settings) -> int:
    """Connections the node opens to storage at most (its HTTP pool; the bridge's bulk downloads)."""
    return max(20, settings.s5_max_parallel_chunks * 4)


def needs_http_client(settings: Settings) -> bool:
    return bool(settings.s5_bridge_url or settings.s5_portal_url or settings.s5_embedded_portal_dir)


def build_storage(settings: Settings, http_client: httpx.AsyncClient | None) -> Storage:
    """The storage backend the settings select: native S5 portals, the S5 bridge, else the local store."""
    if settings.s5_portal_url:
        return build_s5_store(settings, http_client)
    if settings.s5_bridge_url:
        assert http_client is not None
        return BridgeStore(
            settings.s5_bridge_url,
            client=http_client,
            max_retries=settings.s5_max_retries,
            timeout_seconds=settings.s5_download_timeout_seconds,
            max_body_bytes=int(settings.s5_max_body_mb * 1024 * 1024),
            max_bulk_connections=http_connections(settings),
        )
    ensure_writable_dir(settings.store_path, "FABSTIR_STORE_DIR")
    return LocalStore(settings.store_path)


def build_s5_store(settings: Settings, http_client: httpx.AsyncClient | None) -> S5Store:
    """Native S5 through the portals of ``S5_PORTAL_URL`` (which must be set)."""
    assert settings.s5_portal_url and http_client is not None
    try:
        portals = parse_portals(settings.s5_portal_url, settings.s5_portal_token)
    except ValueError as exc:
        raise ConfigError(f"S5_PORTAL_URL / S5_PORTAL_TOKEN: {exc}") from None
    portal = PortalClient(
        portals,
        client=http_client,
        policy=RetryPolicy(settings.s5_max_retries, settings.s5_download_timeout_seconds),
        max_body_bytes=int(settings.s5_max_body_mb * 1024 * 1024),
    )
    return S5Store(
        portal,
        seed_phrase=settings.s5_seed_phrase,
        allow_wallet_identity=settings.s5_allow_wallet_identity,
    )


def uses_local_store(settings: Settings) -> bool:
    return not needs_http_client(settings)


def ensure_writable_dir(path: Path, variable: str, hint: str = "") -> None:
    """Create ``path`` if needed and prove it writable (a file is created and removed).

    Raises :class:`ConfigError` naming ``variable``: one line for the operator instead of a traceback
    the first time a database is saved.
    """
    probe = path / f".fabstir-write-check-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{variable}: cannot write to {path} ({reason}){hint}") from None


def check_directories(settings: Settings) -> None:
    """Fail fast, naming the setting, when the store or cache directory cannot be written."""
    if uses_local_store(settings):
        ensure_writable_dir(settings.store_path, "FABSTIR_STORE_DIR")
    if settings.cache_dir is not None:
        ensure_writable_dir(settings.cache_dir, "FABSTIR_CACHE_DIR", "; or set FABSTIR_CACHE_DIR=off")


def listen_error(exc: OSError, host: str, port: int, variable: str, flag: str) -> ConfigError:
    """The one line naming the port and its setting when a server cannot listen."""
    if exc.errno == errno.EADDRINUSE:
        what = f"port {port} on {host} is already in use by another process"
    elif exc.errno == errno.EACCES:
        what = f"not allowed to listen on port {port} on {host} (ports below 1024 need privileges)"
    else:
        what = f"cannot listen on {host}:{port} ({exc.strerror or type(exc).__name__})"
    return ConfigError(f"{variable}: {what}; choose another with {variable} or {flag}")


def load_host_key(settings: Settings) -> HostKey | None:
    if not settings.host_private_key:
        return None
    return HostKey.from_hex(settings.host_private_key)


async def run_daemon(
    settings: Settings,
    *,
    host_key: HostKey | None = None,
    task_status: trio.TaskStatus[DaemonHandle] = trio.TASK_STATUS_IGNORED,
    handle_signals: bool = True,
) -> None:
    """Run until SIGINT/SIGTERM (or ``handle.stop``); returns after a clean shutdown.

    ``task_status.started`` receives a :class:`DaemonHandle` once the server listens.
    """
    http_client = None
    if needs_http_client(settings):
        http_client = make_http_client(
            max_connections=http_connections(settings),
            timeout=settings.s5_download_timeout_seconds,
        )
    # the embedded portal's storage is built once the portal listens (below)
    check_directories(settings)
    storage = None if settings.s5_embedded_portal_dir else build_storage(settings, http_client)
    node = Node(settings, storage=storage, host_key=host_key)
    ws = WebSocketService(node)
    try:
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            if handle_signals:  # before anything listens, so an early SIGTERM is a clean stop too
                await nursery.start(_set_on_signal, stop)
                await nursery.start(_reconfigure_logging_on_sighup, settings)
            if settings.s5_embedded_portal_dir is not None:
                node.storage = storage = await _start_embedded_portal(nursery, settings, http_client)
            await nursery.start(node.cache.run)
            await nursery.start(lambda task_status: node.decoders.run(warm_after=1.0, task_status=task_status))
            try:
                port = await nursery.start(ws.run, settings.host, settings.port)
            except OSError as exc:
                raise listen_error(exc, settings.host, settings.port, "FABSTIR_PORT", "--port") from None
            metrics_port = None
            if settings.metrics_enabled:
                metrics = Metrics(node)
                node.metrics = metrics
                probes = Probes(node, metrics, closing=lambda: ws.closing)
                try:
                    metrics_port = await nursery.start(
                        probes.run, settings.metrics_host, settings.metrics_port
                    )
                except OSError as exc:
                    raise listen_error(
                        exc, settings.metrics_host, settings.metrics_port,
                        "FABSTIR_METRICS_PORT", "--metrics-port",
                    ) from None
            frozen = collector.settle()  # what start-up made, out of later collector passes
            log.info(
                "server_started",
                host=settings.host,
                port=port,
                metrics_port=metrics_port,
                version=__version__,
                storage=getattr(storage, "name", type(storage).__name__),
                encryption=host_key is not None,
                host_public_key=host_key.public_key_hex if host_key is not None else None,
                host_address=host_key.address if host_key is not None else None,
                access_policy=settings.access_policy,
                max_connections_per_ip=settings.max_connections_per_ip,
                trusted_proxies=list(settings.trusted_proxies or ()),
                frozen_objects=frozen,
            )
            _log_access_policy(settings, host_key)
            task_status.started(DaemonHandle(node=node, websocket=ws, port=port, stop=stop, metrics_port=metrics_port))
            await stop.wait()
            log.info("shutdown_started", grace_seconds=settings.shutdown_grace_seconds, connections=ws.connection_count)
            async with trio.open_nursery() as shutdown:
                if handle_signals:
                    shutdown.start_soon(_cut_short_on_signal, shutdown.cancel_scope)
                await ws.shutdown(settings.shutdown_grace_seconds)
                shutdown.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = _single_config_error(group)
        if error is None:
            raise
        raise error from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            if storage is not None and hasattr(storage, "aclose"):
                await storage.aclose()
            if http_client is not None:
                await http_client.aclose()
    log.info("server_stopped")


def _log_access_policy(settings: Settings, host_key: HostKey | None) -> None:
    """Say which access policy runs, and warn when `open` meets storage that holds other users' data."""
    from ..service.access import holds_other_users_data

    log.info("access_policy", policy=settings.access_policy)
    if settings.access_policy == "open" and holds_other_users_data(settings):
        log.warning(
            "access_policy_open",
            policy="open",
            message="any client that can reach this node may load any database it can name from this "
                    "node's storage (local store, S5 bridge or host S5 tree); set "
                    "FABSTIR_ACCESS_POLICY=signed once your clients send encrypted_session_init "
                    "(docs/operations.md)",
        )
    if settings.access_policy == "signed" and host_key is None:
        log.warning(
            "access_policy_signed_without_host_key",
            message="FABSTIR_ACCESS_POLICY=signed needs encrypted_session_init, which needs a host key: "
                    "only databases reached through a shared directory key can be loaded",
        )


async def _start_embedded_portal(
    nursery: trio.Nursery, settings: Settings, http_client: httpx.AsyncClient | None
) -> Storage:
    """Run a local portal over ``S5_EMBEDDED_PORTAL_DIR`` in ``nursery``; storage that reads through it first."""
    root = settings.s5_embedded_portal_dir
    assert root is not None
    port = await nursery.start(serve_portal, root, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    token = settings.s5_portal_token
    if token and "," in token:  # one token per configured portal: none for the embedded one
        token = "," + token
    evolved = attrs.evolve(
        settings,
        s5_portal_url=(url, *(settings.s5_portal_url or ())),
        s5_portal_token=token,
        s5_seed_phrase=settings.s5_seed_phrase or embedded_seed_phrase(root),
    )
    return build_storage(evolved, http_client)


def _single_config_error(group: BaseExceptionGroup) -> ConfigError | None:
    """The ConfigError a failed start-up raised inside the nursery, when that is all that went wrong."""
    matched, rest = group.split(ConfigError)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, ConfigError) else None


@attrs.frozen
class DaemonHandle:
    """What :func:`run_daemon` reports when it is serving (for tests and embedders)."""

    node: Node
    websocket: WebSocketService
    port: int
    #: Set it to start a graceful shutdown, as SIGTERM does.
    stop: trio.Event
    #: Port of /metrics, /health and /ready (None when disabled).
    metrics_port: int | None = None


async def _set_on_signal(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            stop.set()
            return


async def _reconfigure_logging_on_sighup(
    settings: Settings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """SIGHUP re-applies the logging configuration; sessions and connections are untouched."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            configure(settings.log_level, settings.log_format)
            log.info("logging_reconfigured", level=settings.log_level, format=settings.log_format)


async def _cut_short_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.warning("shutdown_forced")
            scope.cancel()
            return
