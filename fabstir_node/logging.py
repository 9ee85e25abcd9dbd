"""Structured logs: JSON lines for aggregators, readable lines on a terminal.

Every event is one line with an ISO-8601 UTC ``timestamp``, ``level``,
``event``, ``logger`` and whatever context is bound (``conn_id``,
``session_id``, ``request_id``, ...).  Exceptions become a structured
``exception`` field on the same line.  Libraries that log through the
standard library (trio-websocket, httpx) are routed through the same
renderer, at WARNING and above.

Secrets never reach a line: :func:`redact_secrets` drops any field whose name
says it holds a key, as a last line of defence behind the rule that code never
logs them in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

#: Field names whose values are never written (compared lower-case, without ``_``).
_SECRET_NAMES = frozenset(
    {"sessionkey", "privatekey", "hostprivatekey", "key", "secret", "seed", "seedphrase", "password", "token"}
)


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: replace values of secret-named fields with ``"[redacted]"``."""
    for name in list(event_dict):
        if name.replace("_", "").lower() in _SECRET_NAMES:
            event_dict[name] = "[redacted]"
    return event_dict


#: Exceptions as structured fields, without local variables (they may hold keys).
_EXCEPTION_DICT = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _shared_processors() -> list[Any]:
    """What every line gets, ours and the standard library's alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _stdlib_logger_name(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor (standard library records only): the record's logger name as ``logger``."""
    record = event_dict.get("_record")
    if record is not None and "logger" not in event_dict:
        event_dict["logger"] = record.name
    return event_dict


def _logger_name(logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor (our events): the name the module's logger was made with as ``logger``."""
    name = getattr(logger, "name", None)
    if name is not None and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


class _HandlerWriter:
    """structlog's output: each rendered line written to the root handler's stream under that handler's
    lock, so the standard library's lines (trio-websocket, httpx) never interleave with ours."""

    __slots__ = ("_handler", "name")

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str | None = None) -> None:
        self._handler = handler
        #: The module that logs (``get_logger(__name__)``), written as ``logger``.
        self.name = name

    def msg(self, message: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream (as the standard library's handler does): logging never fails a caller
        finally:
            handler.release()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library logging once, at start-up.

    ``fmt`` is ``json``, ``console`` or ``auto`` (json unless ``stream`` is a
    terminal).  Calling it again reconfigures (used by SIGHUP and tests).

    Our events go through structlog's own filtering logger straight to the stream (a per-request
    line costs ~15 µs on the event loop instead of ~40 µs through the standard library's
    ``Logger``, ``LogRecord`` and formatter); the standard library's records are rendered by the
    same processors through :class:`structlog.stdlib.ProcessorFormatter`.
    """
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    final: list[structlog.typing.Processor]
    if fmt == "json":
        final = [_EXCEPTION_DICT, structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=False)]
    numeric = getattr(logging, level.upper())

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), _stdlib_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in ("trio-websocket", "httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[*_shared_processors(), _logger_name, structlog.processors.StackInfoRenderer(), *final],
        logger_factory=lambda name=None, *_args: _HandlerWriter(handler, name),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A logger named for its module, e.g. ``get_logger(__name__)`` (its lines carry ``logger``)."""
    return structlog.get_logger(name)
