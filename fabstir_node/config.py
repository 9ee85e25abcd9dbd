"""Settings: one attrs object built from the environment and flags (flags win).

Every setting is declared once in :data:`OPTIONS` with its environment
variable, its command-line flag (if any), its parser, its default and its
meaning.  The CLI builds its flags from that table, ``Settings.from_sources``
applies it, and ``fabstir-node config --markdown`` prints it for the docs, so
the three can never drift apart.

A bad value raises :class:`ConfigError`, whose message names the variable or
flag; the CLI turns it into exit status 2 with that one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from .errors import FabstirError
from .s5.seed import phrase_to_entropy


class ConfigError(Exception):
    """A setting has a value we cannot use."""


# --- value parsers -----------------------------------------------------------


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}, got {value}")
        return value

    return parse


def _float(lo: float | None = None, *, strict: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {text!r}")
        if lo is not None and (value <= lo if strict else value < lo):
            raise ValueError(f"must be {'>' if strict else '>='} {lo}, got {value}")
        return value

    return parse


def _workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    return _int(0, 64)(text)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _str(text: str) -> str:
    return text.strip()


def _optional_str(text: str) -> str | None:
    return text.strip() or None


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")
    return Path(text.strip()).expanduser()


def _url(text: str) -> str | None:
    value = text.strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return value


def _url_list(text: str) -> tuple[str, ...] | None:
    urls = tuple(url for url in (_url(part) for part in text.split(",")) if url)
    return urls or None


def _portal_urls(value: Any) -> tuple[str, ...] | None:
    """``Settings.s5_portal_url`` from a comma-separated string or a sequence."""
    if value is None or isinstance(value, tuple):
        return value or None
    if isinstance(value, str):
        return _url_list(value)
    return tuple(value) or None


def _networks(text: str) -> tuple[str, ...] | None:
    """Comma-separated IP addresses or networks (CIDR), normalised; empty means none."""
    import ipaddress

    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(
                f"expected IP addresses or networks (a.b.c.d or a.b.c.d/nn), got {part!r}"
            ) from None
    return tuple(networks) or None


def _network_list(value: Any) -> tuple[str, ...] | None:
    """``Settings.trusted_proxies`` from a comma-separated string or a sequence."""
    if value is None:
        return None
    if isinstance(value, str):
        return _networks(value)
    return _networks(",".join(value))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _seed_phrase(text: str) -> str | None:
    """A 15-word S5 seed phrase, checked; the message never repeats a word of it."""
    phrase = " ".join(text.split())
    if not phrase:
        return None
    try:
        phrase_to_entropy(phrase)
    except FabstirError as exc:
        raise ValueError(f"not a valid S5 seed phrase ({exc.message})") from None
    return phrase


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/fabstir-node`` or ``~/.local/share/fabstir-node``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fabstir-node"


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/fabstir-node`` or ``~/.cache/fabstir-node``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fabstir-node"


def _cache_dir(text: str) -> Path | None:
    return None if text.strip().lower() == "off" else _path(text)


@attrs.frozen
class Option:
    """One setting: attribute name, environment variable, flag, parser, default, help."""

    name: str
    env: str
    flag: str | None
    parse: Callable[[str], Any]
    default: Any
    help: str
    group: str = "server"
    #: A secret: never printed by ``fabstir-node config``, never a flag, never logged.
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    # --- server
    Option("host", "FABSTIR_HOST", "--host", _str, "127.0.0.1", "Address the WebSocket server binds to."),
    Option("port", "FABSTIR_PORT", "--port", _int(0, 65535), 8080, "WebSocket port (0 = any free port)."),
    Option(
        "max_message_bytes", "FABSTIR_MAX_MESSAGE_BYTES", "--max-message-bytes", _int(1024), 16 * 1024 * 1024,
        "Largest WebSocket message accepted (an SDK upload of 1000 x 384 vectors is ~8 MB of JSON); "
        "larger messages close the connection with code 1009.",
    ),
    Option(
        "shutdown_grace_seconds", "FABSTIR_SHUTDOWN_GRACE_SECONDS", None, _float(0), 10.0,
        "On SIGTERM/SIGINT, how long in-flight requests may finish before connections are closed.",
    ),
    Option("log_format", "LOG_FORMAT", "--log-format", _choice("auto", "json", "console"), "auto",
           "json (one JSON object per line), console, or auto (json unless stdout is a terminal).", "logging"),
    Option("log_level", "LOG_LEVEL", "--log-level", _choice("debug", "info", "warning", "error"), "info",
           "Lowest level logged.", "logging"),
    # --- observability
    Option("metrics_host", "FABSTIR_METRICS_HOST", "--metrics-host", _str, "127.0.0.1",
           "Address the operations server (/metrics, /health, /ready) binds to.", "observability"),
    Option("metrics_port", "FABSTIR_METRICS_PORT", "--metrics-port", _int(0, 65535), 9090,
           "Port of the operations server; 0 disables it (and the metrics).", "observability"),
    # --- storage
    Option("store_dir", "FABSTIR_STORE_DIR", "--store-dir", _path, None,
           "Local store directory (the embedded default backend). Default: "
           "$XDG_DATA_HOME/fabstir-node/store (~/.local/share/fabstir-node/store).", "storage"),
    Option("s5_bridge_url", "ENHANCED_S5_URL", "--s5-bridge", _url, None,
           "Base URL of a Fabstir S5 bridge (e.g. http://localhost:5522). When set, databases are read "
           "through the bridge instead of the local store.", "storage"),
    Option("s5_max_retries", "S5_MAX_RETRIES", None, _int(0, 20), 3,
           "Retries of a failed download (5xx, connection errors, timeouts), with exponential backoff and jitter.",
           "storage"),
    Option("s5_download_timeout_seconds", "S5_DOWNLOAD_TIMEOUT_SECONDS", None, _float(0, strict=True), 30.0,
           "Deadline of one download attempt, body included.", "storage"),
    Option("s5_max_body_mb", "S5_MAX_BODY_MB", None, _float(0, strict=True), 512.0,
           "Largest file accepted from storage; larger bodies are refused while streaming.", "storage"),
    # --- loading
    Option("s5_max_parallel_chunks", "S5_MAX_PARALLEL_CHUNKS", None, _int(1, 256), 4,
           "Chunks downloaded in parallel per load. Fewer streams finish their chunks sooner, so decoding "
           "overlaps the downloads (100K over a local bridge on 2 cores: 10 → 3.1 s, 4 → 2.2 s); raise it "
           "for a distant, high-latency bridge. The original plan said 10.", "loading"),
    Option("decode_workers", "FABSTIR_DECODE_WORKERS", None, _workers, None,
           "Processes that decode chunks (decrypt, parse, normalise), started at the first load and kept: "
           "'auto' (the default) one per core, 0 decodes in threads of the daemon instead (decoding is "
           "mostly Python, so threads share one core: a 1M load decodes twice as fast in two processes).",
           "loading"),
    Option("s5_loading_timeout_minutes", "S5_LOADING_TIMEOUT_MINUTES", None, _float(0, strict=True), 5.0,
           "Deadline of a whole database load (fractions allowed); past it the load fails with TIMEOUT.", "loading"),
    # --- rate limits
    Option("s5_rate_limit_requests", "S5_RATE_LIMIT_REQUESTS", None, _int(1), 100,
           "Databases (manifest downloads) one session may ask for per window. The chunks a load "
           "fetches for a database are not counted: FABSTIR_MAX_CHUNKS and VECTOR_MEMORY_LIMIT_MB bound "
           "them.", "limits"),
    Option("s5_rate_limit_window_seconds", "S5_RATE_LIMIT_WINDOW_SECONDS", None, _float(0, strict=True), 60.0,
           "The window of S5_RATE_LIMIT_REQUESTS.", "limits"),
    Option("s5_rate_limit_max_delay_seconds", "S5_RATE_LIMIT_MAX_DELAY_SECONDS", None, _float(0), 10.0,
           "Over its download budget a load waits for a free slot up to this long, then fails with "
           "RATE_LIMIT_EXCEEDED.", "limits"),
    Option("request_rate_per_second", "FABSTIR_RATE_LIMIT_PER_SECOND", None, _float(0, strict=True), 100.0,
           "Requests per second one connection may send on average (token bucket).", "limits"),
    Option("request_rate_burst", "FABSTIR_RATE_LIMIT_BURST", None, _float(1), 400.0,
           "Requests one connection may send in a burst; beyond it they get RATE_LIMIT_EXCEEDED.", "limits"),
    # --- access: who may load a database, how many connections one client may hold
    Option("access_policy", "FABSTIR_ACCESS_POLICY", "--access-policy", _choice("open", "signed"), "open",
           "Who may load a database. open: a session whose claimed user address is the manifest's owner "
           "(what SDK versions that send a plaintext session_init need). signed: only a session opened by "
           "an encrypted_session_init whose signer (client_address) is the owner, or one that reaches the "
           "database through a shared S5 directory key; other loads get ACCESS_DENIED before any chunk is "
           "read (docs/operations.md: the SDK's signing key is not always the wallet).", "access"),
    Option("max_connections_per_ip", "FABSTIR_MAX_CONNECTIONS_PER_IP", None, _int(0), 32,
           "WebSocket connections one client address may hold at once; beyond it the handshake is refused "
           "with HTTP 429 (0 = no cap). The SDK keeps one connection per host, so 32 leaves room for browser "
           "tabs and a small office behind one NAT, while 32 x FABSTIR_MAX_SESSIONS_PER_CONNECTION (16) is "
           "about half of FABSTIR_MAX_SESSIONS: one address cannot take all of the daemon's sessions.",
           "access"),
    Option("trusted_proxies", "FABSTIR_TRUSTED_PROXIES", None, _networks, None,
           "Reverse proxies whose X-Forwarded-For header is believed (addresses or networks, "
           "comma-separated, e.g. 127.0.0.1,10.0.0.0/8): behind them a connection counts for the last "
           "address in that header that is not itself a trusted proxy. Unset: the header is ignored; the "
           "peer address counts.", "access"),
    # --- engine and cache
    Option("vector_dtype", "VECTOR_DTYPE", None, _choice("f32", "f16", "bf16"), "f16",
           "How loaded databases hold their vectors: f16 (half the memory of f32, scores within ~5e-5 of "
           "float32 arithmetic), bf16 (the same memory, coarser: within ~5e-4) or f32. Uploaded vectors are "
           "always f32, so their search is exact to the last digit.", "cache"),
    Option("cache_entries", "VECTOR_INDEX_CACHE_SIZE", None, _int(1), 10,
           "Loaded databases kept in memory and shared by sessions (LRU).", "cache"),
    Option("cache_ttl_hours", "VECTOR_INDEX_CACHE_TTL_HOURS", None, _float(0, strict=True), 24.0,
           "An unused cached database is dropped after this many hours.", "cache"),
    Option("cache_max_memory_mb", "VECTOR_CACHE_MAX_MEMORY_MB", None, _float(0, strict=True), 1000.0,
           "Memory budget of the cache, counted from the real sizes of loaded databases. "
           "Databases in use by a session are never evicted.", "cache"),
    Option("cache_dir", "FABSTIR_CACHE_DIR", "--cache-dir", _cache_dir, None,
           "Where loaded databases and their HNSW indexes are saved, by content digest, and reused after a "
           "restart (memory-mapped, validated on open). Default: $XDG_CACHE_HOME/fabstir-node "
           "(~/.cache/fabstir-node); off disables the disk cache and HNSW (every search exact).", "cache"),
    Option("hnsw_min_vectors", "HNSW_MIN_VECTORS", None, _int(1), 20_000,
           "Databases with at least this many vectors get an HNSW index, built in a background process "
           "while exact search answers; smaller ones are searched exactly.", "cache"),
    Option("hnsw_dtype", "HNSW_DTYPE", None, _choice("i8", "f16", "bf16"), "i8",
           "Number type of the vectors inside the HNSW graph. The graph only steers the search: its "
           "candidates are re-scored on the stored rows, so i8 (half the memory of f16, a faster build) "
           "keeps recall@10 above 0.99. A graph already on disk keeps the type it was built with.", "cache"),
    Option("hnsw_connectivity", "HNSW_CONNECTIVITY", None, _int(2, 256), 16,
           "HNSW graph degree (M).", "cache"),
    Option("hnsw_expansion_add", "HNSW_EXPANSION_ADD", None, _int(1, 4096), 160,
           "HNSW build-time candidate list (efConstruction): higher = better recall, slower build. (A 1M "
           "graph built with 72 instead reached recall@10 0.36-0.88 at search efforts 64-1024: an 8-bit "
           "graph of a million tightly clustered vectors needs the full effort.)", "cache"),
    Option("hnsw_expansion_search", "HNSW_EXPANSION_SEARCH", None, _int(1, 4096), 64,
           "Lowest HNSW search-time candidate list (efSearch). Each graph measures its own recall when it "
           "is built (a held-out sample near, between and far from the data, against exact search) and "
           "searches with the lowest effort from this one up (to 1024) that reaches recall@10 >= 0.99; "
           "answers it cannot trust (k-th score under the floor it learned) are answered exactly.", "cache"),
    Option("ivf_min_vectors", "IVF_MIN_VECTORS", None, _int(1), 500_000,
           "Databases with at least this many vectors get an inverted-file index instead of an HNSW graph: "
           "rows grouped by their nearest of ~n/500 centroids, stored as 8-bit codes list by list; a search "
           "scores the lists nearest to the query and re-scores the best on the stored rows. At 1M x 384 it "
           "was ready 48 s after the load began (a graph: 188 s), built and measured at idle priority, and "
           "answered every search at p99 3.7 ms with recall 1.0 where the graph declined most. Its recall "
           "is measured like a graph's (the number of lists probed is its effort) and untrusted answers "
           "are answered exactly.", "cache"),
    # --- limits
    Option("max_upload_batch", "FABSTIR_MAX_UPLOAD_BATCH", None, _int(1), 1000,
           "Vectors per uploadVectors message.", "limits"),
    Option("max_uploaded_vectors", "FABSTIR_MAX_UPLOADED_VECTORS", None, _int(1), 100_000,
           "Uploaded vectors kept per session.", "limits"),
    Option("max_k", "FABSTIR_MAX_K", None, _int(1, 10_000), 100, "Largest k of a search.", "limits"),
    Option("max_dimensions", "FABSTIR_MAX_DIMENSIONS", None, _int(1, 65_536), 4096,
           "Largest vector dimension accepted.", "limits"),
    Option("max_metadata_bytes", "FABSTIR_MAX_METADATA_BYTES", None, _int(2), 64 * 1024,
           "Largest metadata object per vector (encoded JSON bytes).", "limits"),
    Option("max_sessions_per_connection", "FABSTIR_MAX_SESSIONS_PER_CONNECTION", None, _int(1), 16,
           "Sessions one WebSocket connection may hold.", "limits"),
    Option("max_sessions", "FABSTIR_MAX_SESSIONS", None, _int(1), 1000,
           "Sessions the daemon holds at once.", "limits"),
    Option("max_manifest_bytes", "FABSTIR_MAX_MANIFEST_BYTES", None, _int(1024), 32 * 1024 * 1024,
           "Largest manifest file accepted from storage.", "limits"),
    Option("max_chunks", "FABSTIR_MAX_CHUNKS", None, _int(1), 100_000,
           "Largest chunkCount accepted in a manifest.", "limits"),
    Option("vector_memory_limit_mb", "VECTOR_MEMORY_LIMIT_MB", None, _float(0, strict=True), 1536.0,
           "Largest database a session may load, counted as the node holds it: vectorCount x dimensions "
           "x 2 bytes for f16/bf16 rows (4 for f32), plus ids and metadata as they arrive (the HNSW graph "
           "is a memory-mapped file beside them). The default admits 1M x 384 with ~750 MB of ids and "
           "metadata; above the limit a load fails with MEMORY_LIMIT_EXCEEDED.", "limits"),
    # --- encryption
    Option("host_private_key_file", "HOST_PRIVATE_KEY_FILE", None, _path, None,
           "File holding the host's secp256k1 private key (64 hex chars). HOST_PRIVATE_KEY may hold the "
           "key itself instead; neither is ever a command-line flag. Without a key, encrypted_session_init "
           "is answered with ENCRYPTION_NOT_SUPPORTED.", "encryption"),
    # --- native S5 (docs/s5.md)
    Option("s5_portal_url", "S5_PORTAL_URL", "--s5-portal", _url_list, None,
           "S5 portals to read through natively, comma-separated, tried in order (e.g. https://s5.example). "
           "When set, databases are resolved in S5 trees and every blob is BLAKE3-verified; no bridge is used.",
           "s5"),
    Option("s5_portal_token", "S5_PORTAL_TOKEN", None, _optional_str, None,
           "Bearer token for the portals: one for all, or comma-separated in portal order. Sent only to "
           "the portal's own origin, never to a host it redirects to.", "s5", secret=True),
    Option("s5_seed_phrase", "S5_SEED_PHRASE", None, _seed_phrase, None,
           "The host's own S5 identity (15 words): paths are resolved in this tree. A secret.", "s5", secret=True),
    Option("s5_allow_wallet_identity", "S5_ALLOW_WALLET_IDENTITY", None, _bool, False,
           "Also resolve paths in the tree the Fabstir SDK derives from the user's address and chain id. "
           "Anyone who knows the address can read AND write that tree (docs/s5.md).", "s5"),
    Option("s5_embedded_portal_dir", "S5_EMBEDDED_PORTAL_DIR", "--embedded-portal", _path, None,
           "Run a local S5 portal over this directory inside the daemon (loopback, free port) and read "
           "through it first; without S5_SEED_PHRASE the host identity is kept in DIR/host-seed-phrase.", "s5"),
)

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


@attrs.frozen
class Settings:
    """The daemon's configuration, validated.  Build with :meth:`from_sources`."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_message_bytes: int = 16 * 1024 * 1024
    shutdown_grace_seconds: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"
    #: 0 disables the operations server; ``metrics_enabled`` is what the daemon reads.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    #: False when ``metrics_port`` is 0.  Set it True with port 0 to get any free port (tests).
    metrics_enabled: bool = attrs.field(default=attrs.Factory(lambda self: self.metrics_port != 0, takes_self=True))
    store_dir: Path | None = None
    s5_bridge_url: str | None = None
    s5_max_retries: int = 3
    s5_download_timeout_seconds: float = 30.0
    s5_max_body_mb: float = 512.0
    s5_max_parallel_chunks: int = 4
    s5_loading_timeout_minutes: float = 5.0
    #: None: one per core (``service/decoders.py``); 0: decode in threads.
    decode_workers: int | None = None
    max_upload_batch: int = 1000
    max_uploaded_vectors: int = 100_000
    max_k: int = 100
    max_dimensions: int = 4096
    max_metadata_bytes: int = 64 * 1024
    max_sessions_per_connection: int = 16
    max_sessions: int = 1000
    max_chunks: int = 100_000
    max_manifest_bytes: int = 32 * 1024 * 1024
    vector_memory_limit_mb: float = 1536.0
    vector_dtype: Literal["f32", "f16", "bf16"] = "f16"  # engine.matrix.DType
    s5_rate_limit_requests: int = 100
    s5_rate_limit_window_seconds: float = 60.0
    s5_rate_limit_max_delay_seconds: float = 10.0
    request_rate_per_second: float = 100.0
    request_rate_burst: float = 400.0
    access_policy: str = "open"
    max_connections_per_ip: int = 32
    trusted_proxies: tuple[str, ...] | None = attrs.field(default=None, converter=_network_list)
    cache_entries: int = 10
    cache_ttl_hours: float = 24.0
    cache_max_memory_mb: float = 1000.0
    #: None: no disk cache and no HNSW (what ``Settings()`` gives tests); ``from_sources`` fills in the default.
    cache_dir: Path | None = None
    hnsw_min_vectors: int = 20_000
    hnsw_dtype: str = "i8"
    hnsw_connectivity: int = 16
    hnsw_expansion_add: int = 160
    hnsw_expansion_search: int = 64
    ivf_min_vectors: int = 500_000
    host_private_key_file: Path | None = None
    s5_portal_url: tuple[str, ...] | None = attrs.field(default=None, converter=_portal_urls)
    #: Secrets: never logged, never shown by ``fabstir-node config``.
    s5_portal_token: str | None = attrs.field(default=None, repr=False)
    s5_seed_phrase: str | None = attrs.field(default=None, repr=False)
    s5_allow_wallet_identity: bool = False
    s5_embedded_portal_dir: Path | None = None
    #: The host key itself (hex), from HOST_PRIVATE_KEY or the key file; never logged.
    host_private_key: str | None = attrs.field(default=None, repr=False)

    @property
    def store_path(self) -> Path:
        return self.store_dir if self.store_dir is not None else default_data_dir() / "store"

    @classmethod
    def from_sources(
        cls, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, overridden by ``env``, overridden by ``flags`` (already parsed values or strings).

        Raises :class:`ConfigError` naming the variable or flag of a bad value.
        """
        env = os.environ if env is None else env
        flags = flags or {}
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw_flag = flags.get(option.name)
            if raw_flag is not None:
                source, raw = option.flag or option.env, raw_flag
            elif env.get(option.env, "").strip() != "":
                source, raw = option.env, env[option.env]
            else:
                continue
            try:
                values[option.name] = option.parse(raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        values.setdefault("cache_dir", default_cache_dir(env))
        values["host_private_key"] = _read_host_key(env, values.get("host_private_key_file"))
        return cls(**values)


def _read_host_key(env: Mapping[str, str], key_file: Path | None) -> str | None:
    inline = env.get("HOST_PRIVATE_KEY", "").strip()
    if inline and key_file is not None:
        raise ConfigError("HOST_PRIVATE_KEY and HOST_PRIVATE_KEY_FILE are both set; set one")
    if key_file is not None:
        _check_key_file_mode(key_file)
        try:
            text = key_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"HOST_PRIVATE_KEY_FILE: cannot read {key_file}: {exc.__class__.__name__}") from None
        if not text:
            raise ConfigError(f"HOST_PRIVATE_KEY_FILE: {key_file} is empty")
        return text
    return inline or None


def _check_key_file_mode(key_file: Path) -> None:
    """Refuse a key file that group or others may read or change (as ssh does)."""
    try:
        mode = key_file.stat().st_mode
    except OSError:
        return  # reading it reports the error
    if mode & 0o077:
        raise ConfigError(
            f"HOST_PRIVATE_KEY_FILE: {key_file} is open to group or others (mode {mode & 0o777:04o}); "
            f"run chmod 600 {key_file}"
        )


def markdown_table() -> str:
    """The settings as a Markdown table (README and docs/operations.md)."""
    lines = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        default = "—" if option.default is None else f"`{option.default}`"
        flag = f"`{option.flag}`" if option.flag else ""
        lines.append(f"| `{option.env}` | {flag} | {default} | {option.help} |")
    lines.append(
        "| `HOST_PRIVATE_KEY` | | — | The host's secp256k1 private key (64 hex chars, `0x` optional). "
        "Prefer HOST_PRIVATE_KEY_FILE. |"
    )
    return "\n".join(lines)
