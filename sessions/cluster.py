"""Backup and restore of a sharded cluster: `sessions cluster-backup` and `cluster-restore`.

A cluster backup is a directory: one archive per replica set, each what `sessions backup`
writes, taken from the set's master, and a cluster manifest naming them with their SHA-256,
the buckets each set held at its checkpoint and its sessions. The command reaches each
storage as `sessions backup` reaches an instance: through the admin console socket in its
data dir, the data dirs given on the command line (on this host, or mounted into a tools
container), since the files it packs are read from there too. Which replica set a data dir
holds, and the configuration's sets and numbers, are asked of the storages themselves
(sessions/sharded.lua's `layout`), so nothing else has to say it.

Buckets stay put while the checkpoints are taken: vshard's rebalancer is disabled on every
master (for a lease, should this process die) and the backup waits until no bucket is on
its way, then takes each set's checkpoint and lets the rebalancer go again. The buckets each
archive holds are read from its snapshot, and the backup is refused unless they cover every
bucket exactly once (a bucket moved by hand meanwhile would be in two archives or in none).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import admin
from .admin import AdminError
from .config import Settings
from .console import Console, ConsoleError

__all__ = ["CLUSTER_MANIFEST", "cluster_backup", "cluster_restore", "covering"]

CLUSTER_MANIFEST = "cluster-manifest.json"
CLUSTER_FORMAT = 1
# How long the rebalancer may stay disabled if this process dies before it enables it
# again; the hold itself lasts the wait for buckets in transit and one checkpoint per set.
HOLD_LEASE = 600
_SHARDED = "require('sessions.sharded')"


@dataclass
class _Storage:
    data_dir: Path
    console: Console
    layout: dict[str, Any]
    hold: int | None = None
    files: list[str] | None = None


def _ranges(ids: list[int]) -> list[list[int]]:
    """Sorted bucket ids as [first, last] runs."""
    runs: list[list[int]] = []
    for bucket in sorted(ids):
        if runs and runs[-1][1] == bucket - 1:
            runs[-1][1] = bucket
        else:
            runs.append([bucket, bucket])
    return runs


def covering(sets: dict[str, list[list[int]]], count: int) -> str | None:
    """Why the sets' bucket runs do not hold each bucket 1..count exactly once; None if they do."""
    seen: dict[int, str] = {}
    for name, runs in sets.items():
        for first, last in runs:
            for bucket in range(first, last + 1):
                if not 1 <= bucket <= count:
                    return f"bucket {bucket} is outside 1..{count}"
                if bucket in seen:
                    return f"bucket {bucket} is in replica sets {seen[bucket]} and {name}"
                seen[bucket] = name
    missing = count - len(seen)
    if missing:
        first_missing = next(b for b in range(1, count + 1) if b not in seen)
        return f"{missing} buckets are in no replica set (the first: {first_missing})"
    return None


def _connect(data_dir: Path) -> _Storage:
    data_dir = data_dir.resolve()
    if not admin._in_use(data_dir):
        raise AdminError(f"no running Tarantool found in {data_dir}")
    console = Console(data_dir / "tarantool.control", timeout=600)
    try:
        layout = console.eval(f"return {_SHARDED}.layout()")
    except ConsoleError as error:
        console.close()
        raise AdminError(f"{data_dir}: {error}") from None
    return _Storage(data_dir, console, layout)


def _masters(storages: list[_Storage]) -> dict[str, _Storage]:
    """The writable storage of each replica set of the configuration, by set uuid."""
    numbers = storages[0].layout["numbers"]
    for storage in storages[1:]:
        if storage.layout["numbers"] != numbers:
            raise AdminError(
                f"{storages[0].data_dir} and {storage.data_dir} run different cluster configurations"
            )
    masters: dict[str, _Storage] = {}
    for storage in storages:
        if storage.layout["ro"]:
            continue
        replicaset = storage.layout["replicaset"]
        if replicaset in masters:
            raise AdminError(
                f"{masters[replicaset].data_dir} and {storage.data_dir} are both writable in replica set "
                f"{numbers[replicaset]}"
            )
        masters[replicaset] = storage
    lacking = sorted(numbers[r] for r in numbers if r not in masters)
    if lacking:
        raise AdminError(
            f"no writable storage of replica set(s) {', '.join(map(str, lacking))} among the data dirs given"
        )
    return masters


def _settle(masters: dict[str, _Storage], within: float) -> None:
    """Until no bucket is on its way on any master (the rebalancer is held)."""
    deadline = time.monotonic() + within
    while True:
        reasons = [
            f"replica set {s.layout['numbers'][r]}: {why}"
            for r, s in masters.items()
            if (why := s.console.eval(f"return {_SHARDED}.moving()")) is not None
        ]
        if not reasons:
            return
        if time.monotonic() > deadline:
            raise AdminError(
                f"buckets still moving after {within:.0f} s ({'; '.join(reasons)}): try again later"
            )
        # Polling: a bucket's move ends on its own, in tens of milliseconds each.
        time.sleep(0.1)


def cluster_backup(target: Path, data_dirs: list[Path], *, settle_within: float = 60.0) -> dict[str, Any]:
    """Back up every replica set from its master into the directory `target`; the cluster manifest."""
    if not data_dirs:
        raise AdminError("give the data dir of each replica set's master")
    if (target / CLUSTER_MANIFEST).exists():
        raise AdminError(f"{target} already holds a cluster backup")
    storages: list[_Storage] = []
    written: list[Path] = []
    try:
        for data_dir in data_dirs:
            storages.append(_connect(data_dir))
        masters = _masters(storages)
        numbers: dict[str, int] = storages[0].layout["numbers"]
        count = int(storages[0].layout["bucket_count"])
        try:
            for storage in masters.values():
                storage.hold = storage.console.eval(f"return {_SHARDED}.hold_buckets({HOLD_LEASE})")
            _settle(masters, settle_within)
            for storage in masters.values():
                storage.console.eval("box.snapshot()")
                storage.files = storage.console.eval("return box.backup.start()")
        finally:
            for storage in masters.values():
                if storage.hold is not None:
                    storage.console.eval(f"return {_SHARDED}.release({storage.hold})")
        # The checkpoints are pinned (box.backup): buckets may move again while they are read.
        held: dict[str, dict[str, Any]] = {}
        for replicaset, storage in masters.items():
            assert storage.files is not None
            snapshot = next(name for name in storage.files if str(name).endswith(".snap"))
            found = storage.console.eval(f"return {_SHARDED}.snapshot_buckets({json.dumps(snapshot)})")
            if found["unsettled"]:
                bucket, status = found["unsettled"][0]
                raise AdminError(
                    f"bucket {bucket} was {status} in replica set {numbers[replicaset]}'s checkpoint: "
                    "try again"
                )
            held[replicaset] = {"sessions": int(found["sessions"]), "buckets": _ranges(found["buckets"])}
        why = covering({str(numbers[r]): h["buckets"] for r, h in held.items()}, count)
        if why is not None:
            raise AdminError(f"buckets moved during the backup ({why}): nothing kept, try again")
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        sets: dict[str, Any] = {}
        for replicaset, storage in sorted(masters.items(), key=lambda item: numbers[item[0]]):
            assert storage.files is not None
            number = numbers[replicaset]
            name = f"set-{number}.tar.gz"
            archive = target / name
            written.append(archive)
            admin.write_archive(
                storage.console,
                storage.data_dir,
                storage.files,
                archive,
                sessions=held[replicaset]["sessions"],
                extra={"replicaset": replicaset, "number": number, "instance": storage.layout["instance"]},
            )
            sets[replicaset] = {
                "number": number,
                "instance": storage.layout["instance"],
                "archive": name,
                "sha256": admin._sha256(archive),
                "size": archive.stat().st_size,
                **held[replicaset],
            }
        manifest = {
            "format": CLUSTER_FORMAT,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "bucket_count": count,
            "numbers": numbers,
            "sessions": sum(s["sessions"] for s in sets.values()),
            "replicasets": sets,
        }
        path = target / CLUSTER_MANIFEST
        partial = path.with_name(path.name + ".partial")
        written.append(partial)
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            json.dump(manifest, out, indent=2)
        partial.replace(path)
        written.clear()
        return manifest
    except ConsoleError as error:
        raise AdminError(str(error)) from None
    except OSError as error:
        raise AdminError(f"cannot back up: {error.strerror or error}") from None
    finally:
        # A backup that failed leaves no archive behind: each holds sessions.
        for path in written:
            path.unlink(missing_ok=True)
        for storage in storages:
            try:
                if storage.files is not None:
                    storage.console.eval("box.backup.stop()")
            except (ConsoleError, OSError):
                pass
            storage.console.close()


def _well_formed(manifest: Any) -> bool:
    if not isinstance(manifest, dict) or manifest.get("format") != CLUSTER_FORMAT:
        return False
    sets = manifest.get("replicasets")
    if not isinstance(manifest.get("bucket_count"), int) or not isinstance(sets, dict) or not sets:
        return False
    for entry in sets.values():
        if not isinstance(entry, dict):
            return False
        runs = entry.get("buckets")
        if not (
            isinstance(entry.get("number"), int)
            and isinstance(entry.get("archive"), str)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("sessions"), int)
            and isinstance(runs, list)
            and all(isinstance(run, list) and len(run) == 2 for run in runs)
            and all(isinstance(bucket, int) for run in runs for bucket in run)
        ):
            return False
        name = entry["archive"]
        if "/" in name or name.startswith("."):
            return False
    return True


def _load(source: Path) -> tuple[Path, dict[str, Any]]:
    path = source / CLUSTER_MANIFEST if source.is_dir() else source
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdminError(f"no cluster manifest at {path}") from None
    except (OSError, ValueError) as error:
        raise AdminError(f"cannot read the cluster manifest {path}: {error}") from None
    if not _well_formed(manifest):
        raise AdminError(f"{path} is not a manifest `sessions cluster-backup` writes")
    return path.parent, manifest


def cluster_restore(settings: Settings, source: Path, which: str) -> dict[str, Any]:
    """Restore replica set `which` (its number or uuid) of the cluster backup `source` (its
    directory or manifest) into SESSIONS_DATA_DIR, after checking the whole backup: the
    manifest's buckets cover the count exactly once, and every set's archive is there with
    its checksum, so a backup that cannot be restored whole is refused on every set before
    any is touched. Then as `sessions restore`: the archive checked file by file, the
    replaced files moved aside."""
    folder, manifest = _load(source)
    sets: dict[str, Any] = manifest["replicasets"]
    held = {str(entry["number"]): entry["buckets"] for entry in sets.values()}
    why = covering(held, manifest["bucket_count"])
    if why is not None:
        raise AdminError(f"the cluster manifest's buckets are not each in one replica set: {why}")
    chosen = next(
        (uuid for uuid, entry in sets.items() if which in (uuid, str(entry["number"]))),
        None,
    )
    if chosen is None:
        known = ", ".join(str(entry["number"]) for entry in sets.values())
        raise AdminError(f"no replica set {which} in the cluster backup (it has {known})")
    if admin._in_use(settings.data_dir.resolve()):
        raise AdminError(f"a running Tarantool uses {settings.data_dir.resolve()}: stop it first")
    for entry in sets.values():
        archive = folder / entry["archive"]
        try:
            digest = admin._sha256(archive)
        except FileNotFoundError:
            raise AdminError(f"replica set {entry['number']}'s archive {archive} is missing") from None
        except OSError as error:
            raise AdminError(f"cannot read {archive}: {error.strerror or error}") from None
        if digest != entry["sha256"]:
            raise AdminError(
                f"replica set {entry['number']}'s archive {archive} is damaged (checksum mismatch)"
            )
    # The set's primary from its next start: after a failover and a swap back, the instance
    # the archive came from may be a replica now, which would come back read-only, following
    # an instance the restore emptied (a red-team helper found the set with no writer).
    restored = admin.restore(settings, folder / sets[chosen]["archive"], primary=True)
    restored["number"] = sets[chosen]["number"]
    restored["replicaset"] = chosen
    restored["instance"] = sets[chosen].get("instance")
    return restored
