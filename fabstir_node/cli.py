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
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import OPTIONS, ConfigError, Settings, markdown_table


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        if option.flag:
            parser.add_argument(
                option.flag, dest=option.name, default=None, metavar=option.env,
                help=f"{option.help} (env {option.env})",
            )


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS if option.flag}
    return Settings.from_sources(env if env is not None else dict(os.environ), flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fabstir-node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"fabstir-node {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the host daemon")
    _add_setting_flags(serve)
    serve.add_argument(
        "--sample", action="store_true",
        help="publish the sample database into the local store first (if it is not there yet)",
    )

    keygen = sub.add_parser("keygen", help="make a host key pair")
    keygen.add_argument("--out", required=True, help="file for the private key (written with mode 0600)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")

    portal = sub.add_parser("portal", help="run a local S5 portal backed by a directory")
    portal.add_argument("--dir", required=True, type=Path, help="directory of blobs and registry entries")
    portal.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    portal.add_argument("--port", type=int, default=5050, help="port (default 5050; 0 = any free port)")
    portal.add_argument("--token-file", type=Path, help="file with a bearer token that uploads and registry writes need")
    portal.add_argument("--redirect-base", metavar="URL",
                        help="answer /s5/blob/{id} with a redirect to URL/s5/download/{id} (default: this portal)")

    config = sub.add_parser("config", help="print every setting")
    config.add_argument("--markdown", action="store_true", help="as a Markdown table (for the docs)")
    _add_setting_flags(config)

    from .commands import publish, search

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
    import trio

    from .logging import configure
    from .memory import tune_allocator
    from .server.daemon import load_host_key, run_daemon

    settings = settings_from_args(args)
    try:
        host_key = load_host_key(settings)
    except ValueError as exc:
        raise ConfigError(f"HOST_PRIVATE_KEY: {exc}") from None
    configure(settings.log_level, settings.log_format)
    if args.sample:
        from .commands.sample import ensure_sample_database

        ensure_sample_database(settings)
    tune_allocator()
    trio.run(functools.partial(run_daemon, settings, host_key=host_key))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .crypto.keys import HostKey

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
    import trio

    from .logging import configure
    from .server.portal import serve_portal

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
