"""The `sessions` console script."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from . import admin, cluster, server
from .config import Settings, describe_error, unknown_variables
from .contract import Info
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


def _log_configuration(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format)
    # Secrets show as "**********". The listings as served: hash mode forces ids.
    shown = settings.model_dump(mode="json")
    shown["listings"] = "ids" if settings.listings_without_tokens else settings.listings
    if settings.log_format == "json":
        # A field of its own, not JSON inside the message.
        log.info("configuration", extra={"configuration": shown})
    else:
        log.info("configuration: %s", json.dumps(shown, separators=(",", ":")))


def _cannot_listen(settings: Settings) -> str | None:
    """Why the service could not listen where its settings say, found before anything starts
    (Tarantool included), naming the setting; None if it can."""
    places = [("SESSIONS_PORT", settings.port)]
    if settings.ops_enabled and settings.ops_port is not None:
        places.append(("SESSIONS_OPS_PORT", settings.ops_port))
    for name, port in places:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as error:
            return f"cannot listen on SESSIONS_HOST={settings.host} {name}={port}: {error.strerror or error}"
    return None


def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve the API from this process."""
    _log_configuration(settings)
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
    _log_configuration(settings)
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


def _print_stats(info: Info) -> None:
    print(f"sessions stored:    {info.sessions}")
    print(f"memory used:        {info.memory_used} bytes")
    print(f"next expiry:        {_when(info.next_expiry)}")
    print(f"last checkpoint:    {_when(info.last_checkpoint)}")
    print(f"purged since start: {info.purged}")
    print(f"read-only:          {info.ro}")
    raft = info.election
    if raft is not None:
        # Elections decide (SESSIONS_FAILOVER=election): no role of its own.
        print(f"election:           {raft['state']}, term {raft['term']}, leader id {raft['leader']}")
    else:
        print(f"role:               {info.role} (promotion generation {info.term})")
    print(f"replication stopped: {info.replication_stopped} upstream(s) (see its log if not 0)")
    print(f"storage full:       {info.storage_full}")
    print(f"served untouched:   {info.touch_skipped} (gets while memory was full)")
    print(f"schema version:     {info.schema_version} (Tarantool {info.tarantool_version})")


# Where the commands that work on an instance's files look, said in each one's --help.
_DATA_DIR = (
    "It works on the Tarantool whose data is in SESSIONS_DATA_DIR (./var by default, where `make run` "
    "keeps it; /var/lib/tarantool in the compose `tools` containers)."
)


def _command(
    commands: Any, name: str, summary: str, description: str = "", *, data_dir: bool = False
) -> argparse.ArgumentParser:
    text = " ".join(part for part in (summary[0].upper() + summary[1:] + ".", description) if part)
    if data_dir:
        text += " " + _DATA_DIR
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=text + " Settings come from SESSIONS_* variables (see docs/configuration.md).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sessions",
        description="Session store for web and mobile backends. `sessions COMMAND --help` tells more.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(
        commands,
        "serve",
        "serve the HTTP API",
        "With SESSIONS_TARANTOOL unset it starts an embedded Tarantool with its data in "
        "SESSIONS_DATA_DIR (./var by default) and stops it on exit; SIGTERM or Ctrl-C stops in order.",
    )
    _command(commands, "openapi", "print the OpenAPI description of the API", "JSON on standard output.")
    _command(
        commands,
        "backup",
        "write a consistent archive of the running Tarantool's data to FILE",
        "The service may keep serving meanwhile.",
        data_dir=True,
    ).add_argument("file", type=Path, help="the .tar.gz to write")
    _command(
        commands,
        "restore",
        "check FILE and restore it into SESSIONS_DATA_DIR",
        "Stop the service first; the files it replaces are moved aside, not deleted.",
        data_dir=True,
    ).add_argument("file", type=Path, help="an archive `sessions backup` wrote")
    backing_up = _command(
        commands,
        "cluster-backup",
        "back up a sharded cluster into DIR: one archive per replica set, from its master, and a manifest",
        "Give the data dir of each replica set's master (storages' data dirs on this host or mounted "
        "here; each one's console socket, tarantool.control, is used). The rebalancer is held while the "
        "checkpoints are taken; the service may keep serving.",
    )
    backing_up.add_argument("dir", type=Path, help="the directory to write (it must hold no cluster backup)")
    backing_up.add_argument(
        "data_dirs", type=Path, nargs="+", metavar="DATA_DIR", help="a storage's data dir"
    )
    restoring = _command(
        commands,
        "cluster-restore",
        "check the cluster backup in DIR and restore replica set SET of it into SESSIONS_DATA_DIR",
        "Stop the storage first. The whole backup is checked (every set's archive and the buckets' "
        "cover) before anything is touched; the files it replaces are moved aside, not deleted.",
        data_dir=True,
    )
    restoring.add_argument(
        "dir", type=Path, help="a directory `sessions cluster-backup` wrote, or its manifest"
    )
    restoring.add_argument("set", help="the replica set's number (or uuid)")
    _command(
        commands,
        "stats",
        "print sessions stored, memory, next expiry, last checkpoint, role",
        "With SESSIONS_TARANTOOL set it asks that instance as the service user instead.",
        data_dir=True,
    )
    _command(
        commands,
        "promote",
        "make this Tarantool the writable primary, for good (failover)",
        "Refused while another instance is writable; waits to have what its peers have.",
        data_dir=True,
    )
    _command(
        commands,
        "rejoin",
        "make this Tarantool a replica of PRIMARY (host:port), for good",
        "For an old primary after a failover, or one side of a swap back.",
        data_dir=True,
    ).add_argument("primary", help="the primary to follow, host:port")
    _command(
        commands,
        "convert-tokens",
        "convert the store's tokens to their SHA-256 hashes, one way, for SESSIONS_TOKEN_STORAGE=hash",
        "Stop the service first (refused while it is connected). Tokens keep working; the older data "
        "files, which hold them in plain, are removed after a checkpoint. Backups taken before still "
        "hold them.",
        data_dir=True,
    )
    _command(
        commands,
        "health",
        "exit 0 if the service on this machine is ready",
        "Probes /ready where the settings serve it (the ops port, with a key when probes are "
        "closed): the containers' healthcheck.",
    )
    # One of the processes `serve` starts when SESSIONS_WORKERS > 1.
    commands.add_parser("worker")
    args = parser.parse_args(argv)
    if args.command == "openapi":
        try:
            print(json.dumps(build_spec(), indent=2), flush=True)
        except BrokenPipeError:
            # `sessions openapi | head`: the reader has what it wanted.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

    settings = _settings()
    if settings is None:
        return 2
    if args.command == "health":
        return health(settings)
    if args.command in ("serve", "worker"):
        refusal = settings.refusal_to_serve() or (
            _cannot_listen(settings) if args.command == "serve" else None
        )
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
        elif args.command == "cluster-backup":
            manifest = cluster.cluster_backup(args.dir, args.data_dirs)
            for entry in sorted(manifest["replicasets"].values(), key=lambda e: e["number"]):
                print(
                    f"replica set {entry['number']}: {entry['sessions']} sessions, "
                    f"{sum(last - first + 1 for first, last in entry['buckets'])} buckets, {entry['archive']}"
                )
            print(f"backed up {manifest['sessions']} sessions to {args.dir}")
        elif args.command == "cluster-restore":
            manifest = cluster.cluster_restore(settings, args.dir, args.set)
            print(
                f"restored replica set {manifest['number']}: {manifest['sessions']} sessions from "
                f"{args.dir} (taken {manifest['created']}) into {settings.data_dir}"
            )
            if "previous_files_moved_to" in manifest:
                print(f"the files it replaced are in {manifest['previous_files_moved_to']}")
        elif args.command == "stats":
            _print_stats(admin.stats(settings))
        elif args.command == "promote":
            unanswered = admin.promote(settings)
            print(f"the Tarantool in {settings.data_dir} is the writable primary now")
            for address in unanswered:
                # Asynchronous replication: what it acknowledged last may not have come here.
                print(
                    f"{address} did not answer: sessions it acknowledged that never reached this instance "
                    "stay in its data only, served again once the roles are swapped back",
                    file=sys.stderr,
                )
        elif args.command == "convert-tokens":
            done = admin.convert_tokens(settings)
            print(f"{done['converted']} sessions in {settings.data_dir} now kept under their tokens' hashes")
            if done["left"]:
                print(
                    f"older files with plain tokens are still kept (by a replica or a backup): {done['left']}"
                )
            if done["aside"]:
                print(
                    "files a restore moved aside still hold plain tokens; delete them once they are not "
                    f"needed: {', '.join(done['aside'])}"
                )
        elif args.command == "rejoin":
            admin.rejoin(settings, args.primary)
            print(f"the Tarantool in {settings.data_dir} is a replica of {args.primary} now")
        return 0
    except admin.AdminError as error:
        print(f"sessions {args.command}: {error}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2
