"""Operator commands on a Tarantool data dir: `sessions backup`, `restore`, `stats`, `promote`,
`rejoin` and `convert-tokens`.

Backup and restore work on the Tarantool data dir (SESSIONS_DATA_DIR): the embedded
instance's, or in compose the volume the Tarantool container writes, mounted into a
`sessions` container. A backup asks the running instance, through its admin console socket
in that dir, for a fresh checkpoint and for the files that make it up (box.backup), and packs
them with a manifest of checksums into one archive while the service keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import Settings
from .console import Console, ConsoleError
from .contract import INFO, Info
from .embedded import EmbeddedError, EmbeddedTarantool
from .storage import Storage

__all__ = ["AdminError", "backup", "convert_tokens", "promote", "restore", "stats"]

MANIFEST = "manifest.json"
FORMAT = 1
_DATA_SUFFIXES = (".snap", ".xlog", ".vylog")


class AdminError(RuntimeError):
    """An admin command (backup, restore, stats, promote, rejoin) that cannot be done; nothing was
    changed."""


def _console_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "tarantool.control"


def _in_use(data_dir: Path) -> bool:
    for name in ("tarantool.control", "tarantool.sock"):
        path = data_dir / name
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    continue
                return True
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Lua counting the rows of the sessions space in one snapshot file (a path, as JSON text).
_COUNT_IN_SNAPSHOT = (
    "local n, id = 0, box.space.sessions.id "
    "for _, row in require('xlog').pairs(%s) do "
    "if row.BODY and row.BODY.space_id == id then n = n + 1 end end return n"
)


def backup(settings: Settings, target: Path) -> dict[str, Any]:
    """Write a consistent archive of the running instance's data; returns the manifest."""
    data_dir = settings.data_dir.resolve()
    if not _in_use(data_dir):
        raise AdminError(
            f"no running Tarantool found in {data_dir} (SESSIONS_DATA_DIR): run this where the "
            "Tarantool's data dir is, with the service started"
        )
    with Console(_console_path(settings), timeout=600) as console:
        console.eval("box.snapshot()")
        files = console.eval("return box.backup.start()")
        try:
            return write_archive(console, data_dir, files, target)
        finally:
            console.eval("box.backup.stop()")


def write_archive(
    console: Console,
    data_dir: Path,
    files: list[str],
    target: Path,
    *,
    sessions: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pack `files` (what box.backup.start() named, the backup still started) with their
    manifest into `target`, created 0600; the manifest. `sessions` is the count in the
    snapshot when the caller has it, else it is counted here; `extra` goes into the manifest."""
    info = console.eval(
        "return {version = box.info.version, schema = package.loaded['sessions.schema'].version(), "
        "generation = (package.loaded['sessions.role'] or {generation = function() return 0 end})"
        ".generation() or 0}"
    )
    if sessions is None:
        # The sessions the archive holds: counted in its snapshot, not in the live space,
        # which writes since the checkpoint have changed.
        snapshots = [name for name in files if str(name).endswith(".snap")]
        sessions = sum(int(console.eval(_COUNT_IN_SNAPSHOT % json.dumps(name))) for name in snapshots)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tarantool_version": info["version"],
        "schema_version": info["schema"],
        "sessions": sessions,
        # The generation the instance numbered its events under (role.lua): a restore
        # numbers above it, even into a data dir that never ran.
        "generation": int(info["generation"]),
        **(extra or {}),
        "files": {},
    }
    if target.is_dir():
        raise AdminError(f"{target} is a directory: give the archive's file name")
    partial = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before a byte goes in: sessions are credentials.
        created = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(created, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for name in files:
                path = data_dir / name
                manifest["files"][path.name] = {"sha256": _sha256(path), "size": path.stat().st_size}
                archive.add(path, arcname=path.name)
            body = json.dumps(manifest, indent=2).encode()
            entry = tarfile.TarInfo(MANIFEST)
            entry.size, entry.mtime, entry.mode = len(body), int(time.time()), 0o600
            archive.addfile(entry, io.BytesIO(body))
        partial.replace(target)
    except OSError as error:
        # No archive, whole or partial, is left behind holding sessions.
        partial.unlink(missing_ok=True)
        raise AdminError(f"cannot write {target}: {error.strerror or error}") from None
    return manifest


def _well_formed(manifest: Any) -> bool:
    """Whether a manifest has every field restore reads, of its type (checked before anything
    in the data dir is touched)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return False
    files = manifest.get("files")
    return (
        isinstance(manifest.get("sessions"), int)
        and isinstance(manifest.get("created"), str)
        and isinstance(files, dict)
        and bool(files)
        and all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in files.values())
    )


def _verified(source: Path, into: Path) -> dict[str, Any]:
    """Unpack `source` into the empty dir `into`, checking everything; the manifest."""
    try:
        with tarfile.open(source, "r:gz") as archive:
            members = {member.name: member for member in archive.getmembers()}
            if MANIFEST not in members:
                raise AdminError("not a sessions backup: no manifest")
            extracted = archive.extractfile(members[MANIFEST])
            assert extracted is not None
            manifest: dict[str, Any] = json.loads(extracted.read())
            if not _well_formed(manifest):
                raise AdminError("the archive's manifest is not one `sessions backup` writes")
            expected = manifest["files"]
            if set(members) != {MANIFEST, *expected}:
                raise AdminError("the archive does not match its manifest")
            for name in expected:
                member = members[name]
                if not member.isfile() or "/" in name or not name.endswith(_DATA_SUFFIXES):
                    raise AdminError(f"unexpected entry {name!r} in the archive")
                content = archive.extractfile(member)
                assert content is not None
                with open(into / name, "wb") as out:
                    shutil.copyfileobj(content, out)
                if _sha256(into / name) != expected[name]["sha256"]:
                    raise AdminError(f"checksum mismatch for {name}")
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as error:
        raise AdminError(f"corrupt archive: {error}") from None
    return manifest


# The instance's role file (tarantool/sessions/role.lua's FILE), beside its data.
ROLE_FILE = "sessions-role.json"


def _next_generation(data_dir: Path, backed_up: int, primary: bool) -> None:
    """One more generation in the role file than both the data dir's and the backup's
    (`backed_up`): the event feed numbers its events generation * 2^32 + n (events.lua), and
    a restored feed would otherwise number again the events the instance handed out after
    the backup (consumers and webhook receivers, who drop what they have seen, would drop the
    new ones). A data dir that never ran gets a role file with only that generation; its
    role still comes from the environment (role.lua)."""
    path = data_dir / ROLE_FILE
    try:
        role = json.loads(path.read_text())
        role["generation"] = max(int(role.get("generation") or 0), backed_up) + 1
    except FileNotFoundError:
        role = {"generation": backed_up + 1}
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise AdminError(f"{path} is not a role file ({error}): move it away, then restore again") from None
    if primary:
        role["role"] = "primary"
        role.pop("primary_at", None)
    temporary = path.with_name(path.name + ".restore")
    temporary.write_text(json.dumps(role))
    os.chmod(temporary, 0o600)
    if os.geteuid() == 0:
        owner = data_dir.stat()
        os.chown(temporary, owner.st_uid, owner.st_gid)
    temporary.replace(path)


def restore(settings: Settings, source: Path, *, primary: bool = False) -> dict[str, Any]:
    """Replace the data in SESSIONS_DATA_DIR with the archive's; the old files are kept aside.
    `primary`: the instance is its set's primary from its next start, whatever its role file
    said (a cluster restore: the archive is the set's master's, and the set's other instances
    are emptied and seeded from this one)."""
    data_dir = settings.data_dir.resolve()
    if not source.is_file():
        raise AdminError(f"{source}: no such archive")
    if _in_use(data_dir):
        raise AdminError(f"a running Tarantool uses {data_dir}: stop the service first")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".restore-") as staging:
        manifest = _verified(source, Path(staging))
        # Only now, with the whole archive checked, is anything in the data dir touched.
        current = [p for p in data_dir.iterdir() if p.suffix in _DATA_SUFFIXES]
        if current:
            aside = data_dir / f"pre-restore-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir(mode=0o700)
            for path in current:
                path.rename(aside / path.name)
            manifest["previous_files_moved_to"] = str(aside)
        owner = data_dir.stat()
        generation = manifest.get("generation", 0)
        _next_generation(
            data_dir, generation if isinstance(generation, int) and generation >= 0 else 0, primary
        )
        for name in manifest["files"]:
            target = data_dir / name
            shutil.move(Path(staging) / name, target)
            os.chmod(target, 0o600)
            # Restored by root into a volume that Tarantool reads as its own user.
            if os.geteuid() == 0:
                os.chown(target, owner.st_uid, owner.st_gid)
    return manifest


_ROLE_CHANGE_TIMEOUT = 60


def _role_change(settings: Settings, call: str) -> Any:
    data_dir = settings.data_dir.resolve()
    if not _in_use(data_dir):
        raise AdminError(
            f"no running Tarantool found in {data_dir} (SESSIONS_DATA_DIR): run this where the Tarantool's "
            "data dir is"
        )
    # A promote may take its peers' answers (2 s each to connect and to answer) and up to 10 s
    # of catching up (role.lua) before it answers: well within the minute allowed here.
    try:
        with Console(_console_path(settings), timeout=_ROLE_CHANGE_TIMEOUT) as console:
            return console.eval(f"return require('sessions.role').{call}")
    except ConsoleError as error:
        raise AdminError(str(error)) from None
    except TimeoutError:
        raise AdminError(f"Tarantool in {data_dir} did not answer within {_ROLE_CHANGE_TIMEOUT} s") from None
    except OSError as error:
        raise AdminError(f"cannot reach Tarantool in {data_dir}: {error}") from None


def promote(settings: Settings) -> list[str]:
    """Make the instance whose data dir this is the writable primary, for good (its role
    file says so across restarts), after its primary is lost; refused while another
    instance is writable. Answers the peers that did not answer (the lost primary): sessions
    they acknowledged and this instance never received stay in their data."""
    answer = _role_change(settings, "promote()")
    unanswered = answer.get("unanswered") if isinstance(answer, dict) else None
    return [str(address) for address in unanswered or []]


def rejoin(settings: Settings, primary: str) -> None:
    """Make the instance whose data dir this is a read-only replica of `primary` (host:port),
    for good: an old primary after a failover, or one side of a swap back."""
    _role_change(settings, f"rejoin({json.dumps(primary)})")


def stats(settings: Settings) -> Info:
    """The instance's figures, from the local console if there is one, else as the service user."""
    if not settings.embedded:
        return asyncio.run(_remote_info(settings))
    if not _in_use(settings.data_dir.resolve()):
        raise AdminError(f"no running Tarantool found in {settings.data_dir.resolve()}")
    try:
        with Console(_console_path(settings)) as console:
            return Info.of(console.eval(f"return {INFO}()"))
    except (ConsoleError, ValueError) as error:
        raise AdminError(str(error)) from None


async def _remote_info(settings: Settings) -> Info:
    storage = Storage(settings.tarantool_addresses, settings, password=settings.service_password())
    try:
        await asyncio.wait_for(storage.connect(), settings.startup_timeout)
        return await storage.info()
    except TimeoutError:
        raise AdminError(f"Tarantool at {settings.tarantool} did not answer") from None
    except RuntimeError as error:  # the contract check's refusal, one line
        raise AdminError(str(error)) from None
    finally:
        await storage.close()


# Lua converting the store to hashed tokens (tarantool/sessions/hashing.lua), then a
# checkpoint after which Tarantool's garbage collector may remove every older snapshot and
# WAL file, the ones that hold the plain tokens: it is asked to keep one checkpoint until
# they are gone (or `within` seconds pass: a replica or a backup in progress may hold them).
_CONVERT = """
local converted = require('sessions.hashing').convert()
local fio, fiber = require('fio'), require('fiber')
local kept = box.cfg.checkpoint_count
box.cfg{checkpoint_count = 1}
box.snapshot()
local deadline = fiber.clock() + %d
local function older()
    local snaps = fio.glob(fio.pathjoin(box.cfg.memtx_dir, '*.snap'))
    table.sort(snaps)
    local newest = fio.basename(snaps[#snaps], '.snap')
    local found = {}
    for _, path in ipairs(snaps) do
        if fio.basename(path, '.snap') < newest then found[#found + 1] = fio.basename(path) end
    end
    for _, path in ipairs(fio.glob(fio.pathjoin(box.cfg.wal_dir, '*.xlog'))) do
        if fio.basename(path, '.xlog') < newest then found[#found + 1] = fio.basename(path) end
    end
    return found
end
while #older() > 0 and fiber.clock() < deadline do fiber.sleep(0.05) end
box.cfg{checkpoint_count = kept}
return {converted = converted, left = older()}
"""


def _convert(console_path: Path, within: int) -> dict[str, Any]:
    with Console(console_path, timeout=3600) as console:
        try:
            result: dict[str, Any] = console.eval(_CONVERT % within)
        except ConsoleError as error:
            raise AdminError(str(error)) from None
    return result


async def _convert_embedded(settings: Settings, within: int) -> dict[str, Any]:
    instance = EmbeddedTarantool.from_settings(settings, password=settings.service_password())
    try:
        await instance.start()
    except EmbeddedError as error:
        raise AdminError(str(error)) from None
    try:
        return await asyncio.to_thread(_convert, instance.console_path, within)
    finally:
        await instance.stop()


def _set_aside(data_dir: Path) -> list[str]:
    """The dirs a restore moved data files to (`pre-restore-*`) that still hold some."""
    return sorted(
        str(path)
        for path in data_dir.glob("pre-restore-*")
        if path.is_dir() and any(p.suffix in _DATA_SUFFIXES for p in path.iterdir())
    )


def convert_tokens(settings: Settings, *, within: int = 30) -> dict[str, Any]:
    """The conversion (`_convert_tokens`), and `aside`: the dirs a restore moved older data
    files to, which hold plain tokens still. They are left in place, named: the operator's
    copy of a store from before a restore is theirs to delete."""
    done = _convert_tokens(settings, within=within)
    done["aside"] = _set_aside(settings.data_dir.resolve())
    return done


def _convert_tokens(settings: Settings, *, within: int = 30) -> dict[str, Any]:
    """Convert the store in SESSIONS_DATA_DIR from plain tokens to their hashes, one way (for
    SESSIONS_TOKEN_STORAGE=hash): its running Tarantool through the console (the service
    stopped: refused while the service's user is connected), or the embedded one started on
    it for the purpose. Then a checkpoint, and the older data files, which hold the plain
    tokens, removed. Returns {converted: sessions,
    left: older files Tarantool still keeps (a replica or a backup holds them)}."""
    data_dir = settings.data_dir.resolve()
    if _in_use(data_dir):
        return _convert(_console_path(settings), within)
    if not settings.embedded:
        raise AdminError(
            f"no running Tarantool found in {data_dir}: start the Tarantool (not the service) first"
        )
    if not any(data_dir.glob("*.snap")):
        raise AdminError(f"no store in {data_dir}")
    return asyncio.run(_convert_embedded(settings, within))
