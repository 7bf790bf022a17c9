"""The `sessions` console script."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from . import admin, server
from .config import Settings, describe_error, unknown_variables
from .embedded import EmbeddedError
from .logs import setup_logging
from .openapi import build_spec
from .supervisor import supervise

__all__ = ["main"]

log = logging.getLogger("sessions")


def _settings() -> Settings | None:
    unknown = unknown_variables(os.environ)
    if unknown:
        print(f"sessions: invalid configuration: unknown variables {', '.join(unknown)}", file=sys.stderr)
        return None
    try:
        return Settings()
    except ValidationError as error:
        print(f"sessions: {describe_error(error)}", file=sys.stderr)
        return None


def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve the API from this process."""
    setup_logging(settings.log_level, settings.log_format)
    log.info("configuration: %s", settings.model_dump_json())
    if not settings.api_keys and not settings.loopback_only:
        log.warning(
            "listening on %s without SESSIONS_API_KEYS (SESSIONS_ALLOW_OPEN=true): anyone who can "
            "reach this port can read and end every session",
            settings.host,
        )
    try:
        return server.run(settings, reuse_port=reuse_port)
    except (EmbeddedError, RuntimeError, OSError) as error:
        print(f"sessions: cannot serve on {settings.url(settings.port)}: {error}", file=sys.stderr)
        return 1


def serve_workers(settings: Settings) -> int:
    """Serve the API from `settings.workers` processes under a supervisor."""
    setup_logging(settings.log_level, settings.log_format)
    log.info("configuration: %s", settings.model_dump_json())
    try:
        return uvloop.run(supervise(settings))
    except (EmbeddedError, OSError) as error:
        print(f"sessions: cannot start: {error}", file=sys.stderr)
        return 1


# A token no session has: where /ready is not served, a `get` of it still asks Tarantool.
_NO_SUCH_TOKEN = "00000000-0000-4000-8000-000000000000"


def health(settings: Settings) -> int:
    """Exit 0 if the service on this machine answers /ready as its settings serve it (the ops
    port, a key when probes are closed), 1 otherwise: the container's healthcheck."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    port = settings.ops_port or settings.port
    path = "/ready" if settings.ops_enabled else f"/get?token={_NO_SUCH_TOKEN}"
    expected = 200 if settings.ops_enabled else 404
    headers = {}
    if settings.api_keys and not (settings.open_probes and settings.ops_enabled):
        headers["Authorization"] = f"Bearer {settings.api_keys[0].get_secret_value()}"
    url = settings.model_copy(update={"host": host}).url(port) + path
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"sessions health: {url.split('?')[0]}: {error}", file=sys.stderr)
        return 1
    if status != expected:
        print(f"sessions health: {url.split('?')[0]} answered {status}", file=sys.stderr)
        return 1
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def _print_stats(info: dict[str, Any]) -> None:
    print(f"sessions stored:    {info['sessions']}")
    print(f"memory used:        {info['memory_used']} bytes")
    print(f"next expiry:        {_when(info['next_expiry'])}")
    print(f"last checkpoint:    {_when(info['last_checkpoint'])}")
    print(f"purged since start: {info['purged']}")
    print(f"read-only:          {info['ro']}")
    print(f"role:               {info.get('role')}")
    print(f"storage full:       {info.get('storage_full', False)}")
    print(f"served untouched:   {info.get('touch_skipped', 0)} (gets while memory was full)")
    print(f"schema version:     {info['schema_version']} (Tarantool {info['tarantool_version']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sessions", description="Session store for web and mobile backends."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP API (settings from SESSIONS_* variables)")
    commands.add_parser("openapi", help="print the OpenAPI description of the API")
    backup_command = commands.add_parser(
        "backup", help="write a consistent archive of the running Tarantool's data to FILE"
    )
    backup_command.add_argument("file", type=Path)
    restore_command = commands.add_parser(
        "restore", help="check FILE and restore it into SESSIONS_DATA_DIR (service stopped)"
    )
    restore_command.add_argument("file", type=Path)
    commands.add_parser("stats", help="sessions stored, memory, next expiry, last checkpoint, memory full")
    commands.add_parser(
        "promote", help="make the Tarantool in SESSIONS_DATA_DIR the writable primary, for good (failover)"
    )
    rejoin_command = commands.add_parser(
        "rejoin", help="make the Tarantool in SESSIONS_DATA_DIR a replica of PRIMARY (host:port), for good"
    )
    rejoin_command.add_argument("primary")
    commands.add_parser(
        "health",
        help="exit 0 if the service serving on this machine with these settings is ready (healthchecks)",
    )
    # One of the processes `serve` starts when SESSIONS_WORKERS > 1.
    commands.add_parser("worker")
    args = parser.parse_args(argv)
    if args.command == "openapi":
        print(json.dumps(build_spec(), indent=2))
        return 0

    settings = _settings()
    if settings is None:
        return 2
    if args.command == "health":
        return health(settings)
    if args.command in ("serve", "worker"):
        refusal = settings.refusal_to_serve()
        if refusal is not None:
            print(f"sessions: invalid configuration: {refusal}", file=sys.stderr)
            return 2
    if args.command == "serve":
        return serve(settings) if settings.workers == 1 else serve_workers(settings)
    if args.command == "worker":
        return serve(settings, reuse_port=True)
    try:
        if args.command == "backup":
            manifest = admin.backup(settings, args.file)
            print(f"backed up {manifest['sessions']} sessions to {args.file}")
        elif args.command == "restore":
            manifest = admin.restore(settings, args.file)
            print(f"restored {manifest['sessions']} sessions from {args.file} (taken {manifest['created']})")
            if "previous_files_moved_to" in manifest:
                print(f"the files it replaced are in {manifest['previous_files_moved_to']}")
        elif args.command == "stats":
            _print_stats(admin.stats(settings))
        elif args.command == "promote":
            admin.promote(settings)
            print(f"the Tarantool in {settings.data_dir} is the writable primary now")
        elif args.command == "rejoin":
            admin.rejoin(settings, args.primary)
            print(f"the Tarantool in {settings.data_dir} is a replica of {args.primary} now")
        return 0
    except admin.BackupError as error:
        print(f"sessions {args.command}: {error}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2
