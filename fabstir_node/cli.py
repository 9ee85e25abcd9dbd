"""``fabstir-node``: the command line.

Subcommands:

* ``serve``   run the daemon (flags override environment variables).
* ``publish`` write a vector database in the SDK layout to the store or bridge.
* ``search``  a client for operators: init a session, show loading, search.
* ``keygen``  make a host key pair.
* ``portal``  run a local S5 portal backed by a directory (docs/s5.md).
* ``config``  print every setting (``--markdown`` for the docs table).

A bad setting exits with status 2 and one line naming the variable or flag.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from . import __version__, collector
from .commands import HelpFormatter, paragraph, publish, search
from .commands.sample import ensure_sample_database
from .config import OPTIONS, ConfigError, Settings, markdown_table
from .crypto.keys import HostKey
from .logging import configure
from .memory import tune_allocator
from .priority import prefer_searches
from .server.daemon import check_directories, load_host_key, run_daemon
from .server.portal import serve_portal

#: What a flag's value looks like in ``--help`` (the variable's name is in the help text).
_METAVARS = {
    "--host": "ADDR", "--port": "PORT", "--metrics-host": "ADDR", "--metrics-port": "PORT",
    "--store-dir": "DIR", "--cache-dir": "DIR", "--embedded-portal": "DIR", "--s5-bridge": "URL",
    "--s5-portal": "URL[,URL...]", "--log-format": "FORMAT", "--log-level": "LEVEL",
    "--max-message-bytes": "BYTES",
}

DESCRIPTION = """\
The Fabstir host daemon: it loads users' vector databases from storage (native S5, an S5 bridge or
a local directory) and answers their vector searches over WebSocket (ws://HOST:PORT/v1/ws)."""

EPILOG = """\
start here:
  fabstir-node serve --sample       run the daemon with a sample database on ws://127.0.0.1:8080/v1/ws
  fabstir-node search --random \\
      --manifest-path home/vector-databases/0x0000000000000000000000000000000000000001/sample/manifest.json \\
      --user-address 0x0000000000000000000000000000000000000001
                                    query it as a client would
  fabstir-node config               show the settings in effect

Every setting is an environment variable; the common ones are also flags of `serve`, and a flag wins.
A bad setting (or a port in use, a directory that cannot be written) stops with exit status 2 and one
line naming the variable. `fabstir-node COMMAND --help` shows a command's options; docs/operations.md
explains every setting."""

def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        if option.flag:
            default = "" if option.default is None else f", default {option.default}"
            parser.add_argument(
                option.flag, dest=option.name, default=None, metavar=_METAVARS.get(option.flag, "VALUE"),
                help=f"{option.help} [env {option.env}{default}]",
            )


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS if option.flag}
    return Settings.from_sources(env if env is not None else dict(os.environ), flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabstir-node", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fabstir-node {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    serve = sub.add_parser(
        "serve", help="run the host daemon", formatter_class=HelpFormatter,
        description=paragraph(
            "Run the host daemon until SIGTERM or SIGINT: the WebSocket server, and the operations "
            "server (/metrics, /health, /ready) unless FABSTIR_METRICS_PORT=0. Settings come from "
            "the environment; the flags below override the common ones (`fabstir-node config` "
            "lists them all). Exit status 0 after a clean shutdown, 2 for a configuration error."
        ),
        epilog="examples:\n"
               "  fabstir-node serve --sample                       local store, sample database\n"
               "  fabstir-node serve --s5-bridge http://localhost:5522 --host 0.0.0.0\n"
               "  HOST_PRIVATE_KEY_FILE=/etc/fabstir-node/host-key fabstir-node serve   (encrypted sessions)",
    )
    _add_setting_flags(serve)
    serve.add_argument(
        "--sample", action="store_true",
        help="first publish a small sample database (5,000 vectors) into the local store, unless it is there",
    )

    keygen = sub.add_parser(
        "keygen", formatter_class=HelpFormatter, help="make a host key pair",
        description=paragraph(
            "Make a secp256k1 host key pair for encrypted sessions. The private key goes to FILE "
            "(mode 0600, never printed); the public key and address are printed. Point "
            "HOST_PRIVATE_KEY_FILE at FILE."
        ),
    )
    keygen.add_argument("--out", required=True, metavar="FILE", help="file for the private key (mode 0600)")
    keygen.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    portal = sub.add_parser(
        "portal", formatter_class=HelpFormatter, help="run a local S5 portal backed by a directory",
        description=paragraph(
            "Serve a directory as an S5 portal (blob downloads with Range, registry get/set with "
            "signature and revision checks, uploads), for tests and for hosts that keep their "
            "own S5 data. See docs/s5.md."
        ),
    )
    portal.add_argument("--dir", required=True, type=Path, help="directory of blobs and registry entries")
    portal.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                        help="address to bind (default 127.0.0.1)")
    portal.add_argument("--port", type=int, default=5050, help="port (default 5050; 0 = any free port)")
    portal.add_argument("--token-file", type=Path, metavar="FILE",
                        help="file with a bearer token that uploads and registry writes need")
    portal.add_argument("--redirect-base", metavar="URL",
                        help="answer /s5/blob/{id} with a redirect to URL/s5/download/{id} (default: this portal)")

    config = sub.add_parser(
        "config", formatter_class=HelpFormatter, help="print every setting",
        description=paragraph(
            "Print every setting as VARIABLE=value, as the daemon would see it with this "
            "environment and these flags (secrets show as (set) or (not set)). A bad value exits "
            "with status 2, as `serve` would."
        ),
    )
    config.add_argument("--markdown", action="store_true",
                        help="print the settings table of the docs instead")
    _add_setting_flags(config)

    publish.add_parser(sub)
    search.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_run(args) or 0)
    except ConfigError as exc:
        print(f"fabstir-node: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "config":
        return _config(args)
    if args.command == "portal":
        return _portal(args)
    return int(args.handler(args) or 0)


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        host_key = load_host_key(settings)
    except ValueError as exc:
        raise ConfigError(f"HOST_PRIVATE_KEY: {exc}") from None
    check_directories(settings)
    configure(settings.log_level, settings.log_format)
    if args.sample:
        ensure_sample_database(settings)
    tune_allocator()
    prefer_searches()
    collector.enable()
    trio.run(functools.partial(run_daemon, settings, host_key=host_key))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    key = HostKey.generate()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.out, flags, 0o600)
    except FileExistsError:
        print(f"fabstir-node: {args.out} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(key.private_key.hex() + "\n")
    print(f"private key written to {args.out} (mode 0600); set HOST_PRIVATE_KEY_FILE={args.out}")
    print(f"public key: {key.public_key_hex}")
    print(f"address:    {key.address}")
    return 0


def _portal(args: argparse.Namespace) -> int:
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file: cannot read {args.token_file}: {type(exc).__name__}") from None
    configure("info", "auto")
    trio.run(
        functools.partial(
            serve_portal, args.dir, args.host, args.port, token=token, redirect_base=args.redirect_base
        )
    )
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    settings = settings_from_args(args)
    for option in OPTIONS:
        value = getattr(settings, option.name)
        if option.secret:
            value = "(set)" if value else "(not set)"
        elif isinstance(value, tuple):
            value = ",".join(value)  # as the variable is written (portals, trusted proxies)
        print(f"{option.env}={value}")
    print(f"HOST_PRIVATE_KEY={'(set)' if settings.host_private_key else '(not set)'}")
    return 0


def run_main() -> Any:  # pragma: no cover - console entry point shim
    sys.exit(main())
