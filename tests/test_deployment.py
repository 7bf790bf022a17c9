"""Backup and restore through the CLI's functions, and failover between two Tarantools."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from sessions.admin import MANIFEST, ROLE_FILE, AdminError, backup, promote, rejoin, restore
from sessions.config import Settings
from sessions.console import Console
from sessions.embedded import EmbeddedTarantool

from .conftest import (
    PASSWORD,
    call,
    lua_session,
    make_instance,
    make_pair,
    new_session,
    serving,
    settings_for,
)
from .partition import Link

ROOT = Path(__file__).resolve().parent.parent
# A session the tests below hold unconfirmed.
HELD = "0b9e5a52-8f2d-4c1e-9a47-3d2f6b8c1e70"


@pytest.mark.each_release
async def test_backup_under_writes_then_wipe_restore_start(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    archive = tmp_path / "backups" / "sessions.tar.gz"
    async with serving(settings) as client:
        acknowledged: list[dict] = []
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                status, body = await call(
                    client, "/new", params={"user_id": str(user_id), "ip": f"10.1.{i // 250}.{i % 250 + 1}"}
                )
                assert status == 200
                acknowledged.append(body["data"])

        writing = asyncio.create_task(writer())
        while len(acknowledged) < 200:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        before = list(acknowledged)
        manifest = await asyncio.to_thread(backup, settings, archive)
        await asyncio.sleep(0.1)
        stop.set()
        await writing
        assert manifest["sessions"] >= len(before)

    shutil.rmtree(tmp_path / "data")
    restored = restore(settings, archive)

    async with serving(settings) as client:
        _, body = await call(client, "/user", params={"id": str(user_id)})
        # The count the backup and the restore report is the count restored, not one taken
        # while writes went on.
        with Console(settings.data_dir.resolve() / "tarantool.control") as console:
            assert (
                restored["sessions"]
                == manifest["sessions"]
                == console.eval("return box.space.sessions:len()")
            )
    stored = {s["token"]: s for s in body["data"]}
    assert [s for s in before if stored.get(s["token"]) != s] == []


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


def _with_manifest(archive: Path, manifest: bytes, into: Path) -> None:
    """A copy of `archive` with another manifest."""
    with tarfile.open(archive, "r:gz") as source, tarfile.open(into, "w:gz") as target:
        for member in source.getmembers():
            if member.name == MANIFEST:
                member.size = len(manifest)
                target.addfile(member, io.BytesIO(manifest))
            else:
                target.addfile(member, source.extractfile(member))


def _snapshot(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}


@pytest.mark.each_release
async def test_a_corrupt_archive_is_refused_and_nothing_changes(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    archive = tmp_path / "sessions.tar.gz"
    async with serving(settings) as client:
        await new_session(client, user_id)
        await asyncio.to_thread(backup, settings, archive)
    before = _snapshot(tmp_path / "data")

    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "damaged.tar.gz").write_bytes(bytes(damaged))
    (tmp_path / "garbage.tar.gz").write_bytes(b"not an archive at all")
    # Manifests restore could not read: refused before anything moves, without a traceback.
    good = json.loads(_member(archive, MANIFEST))
    files = good["files"]
    manifests = {
        "list": [1, 2],
        "null": None,
        "files-list": good | {"files": list(files)},
        "files-strings": good | {"files": {name: "x" for name in files}},
        "no-count": {k: v for k, v in good.items() if k != "sessions"},
        "no-date": {k: v for k, v in good.items() if k != "created"},
    }
    for name, manifest in manifests.items():
        _with_manifest(archive, json.dumps(manifest).encode(), tmp_path / f"{name}.tar.gz")
    for bad in ("damaged.tar.gz", "garbage.tar.gz", "missing.tar.gz", *(f"{n}.tar.gz" for n in manifests)):
        with pytest.raises(AdminError):
            restore(settings, tmp_path / bad)
        assert _snapshot(tmp_path / "data") == before, bad

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sessions", "restore", str(tmp_path / "damaged.tar.gz")],
        env={"SESSIONS_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "sessions restore:" in result.stderr and "Traceback" not in result.stderr
    assert _snapshot(tmp_path / "data") == before


async def test_a_backup_to_a_place_it_cannot_write_says_so_and_leaves_nothing(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    (tmp_path / "out").mkdir()
    async with serving(settings) as client:
        await new_session(client, user_id)
        for target, said in (
            (tmp_path / "out", "is a directory"),
            (Path("/proc/nope.tar.gz"), "cannot write"),
        ):
            with pytest.raises(AdminError, match=said):
                await asyncio.to_thread(backup, settings, target)
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "out.partial").exists()


async def test_after_a_restore_the_event_feed_numbers_above_what_it_handed_out(tmp_path, user_id):
    """A restore takes the feed back to the backup's last event; the events after it number
    in the next generation, so no seq (nor webhook id) is handed out twice."""
    settings = Settings(data_dir=tmp_path / "data", events=True)
    archive = tmp_path / "sessions.tar.gz"
    async with serving(settings) as client:
        await new_session(client, user_id)
        await asyncio.to_thread(backup, settings, archive)
        await new_session(client, user_id)
        handed_out = (await call(client, "/events", params={"after": "0"}))[1]["data"]["events"]
    restore(settings, archive)
    async with serving(settings) as client:
        await new_session(client, user_id + 1)
        now = (await call(client, "/events", params={"after": "0"}))[1]["data"]["events"]
    newest = max(event["seq"] for event in handed_out)
    assert [event["user_id"] for event in now if event["seq"] > newest] == [user_id + 1]
    assert {e["seq"] for e in now} - {e["seq"] for e in handed_out} == {
        e["seq"] for e in now if e["seq"] > newest
    }


async def test_restored_into_a_data_dir_that_never_ran_the_feed_numbers_above_the_backups(tmp_path, user_id):
    """The restore to a new machine: the data dir never ran, so it has no role file of its
    own; the backup's generation (in its manifest) still puts the events after the restore
    above every one the instance handed out, after the backup too."""
    settings = Settings(data_dir=tmp_path / "data", events=True)
    archive = tmp_path / "sessions.tar.gz"
    async with serving(settings) as client:
        await new_session(client, user_id)
        manifest = await asyncio.to_thread(backup, settings, archive)
        await new_session(client, user_id)
        handed_out = (await call(client, "/events", params={"after": "0"}))[1]["data"]["events"]
    assert manifest["generation"] == 0
    fresh = Settings(data_dir=tmp_path / "fresh", events=True)
    restore(fresh, archive)
    assert json.loads((fresh.data_dir / ROLE_FILE).read_text()) == {"generation": 1}
    async with serving(fresh) as client:
        await new_session(client, user_id + 1)
        now = (await call(client, "/events", params={"after": "0"}))[1]["data"]["events"]
    newest = max(event["seq"] for event in handed_out)
    assert [event["user_id"] for event in now if event["seq"] > newest] == [user_id + 1]
    assert len(now) == 2  # the backup's one event and the new one


@pytest.mark.each_release
async def test_restore_refuses_a_data_dir_in_use(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    archive = tmp_path / "sessions.tar.gz"
    async with serving(settings):
        await asyncio.to_thread(backup, settings, archive)
        with pytest.raises(AdminError, match="stop the service"):
            restore(settings, archive)


def test_restore_of_an_archive_that_is_not_there_says_so(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    for missing in (tmp_path / "nonexistent.tar.gz", tmp_path):
        with pytest.raises(AdminError, match="no such archive"):
            restore(settings, missing)
    assert not settings.data_dir.exists()


async def _until(check: Any, what: str, within: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)
    return result


@pytest.mark.each_release
async def test_the_failover_runbook_loses_no_acknowledged_session(serve, tmp_path, user_id):
    """The operator's story, on two real instances: primary lost, replica promoted, the
    promoted one killed and restarted (still writable), the old primary back (a replica of
    the promoted one, by itself), and the roles swapped back; every session acknowledged on
    the way is there at the end."""
    primary, replica, paths, socket = make_pair(tmp_path)
    await primary.start()
    await replica.start()
    acknowledged: list[str] = []

    async def write(n: int) -> bool:
        for i in range(n):
            status, body = await call(
                client, "/new", params={"user_id": str(user_id), "ip": f"192.0.2.{i + 1}"}
            )
            if status != 200:
                return False
            acknowledged.append(body["data"]["token"])
        return True

    def state(path: Path) -> dict[str, Any]:
        with Console(path / "tarantool.control") as console:
            return console.eval(
                "return {ro = box.info.ro, role = require('sessions.role').get().role, "
                "n = box.space.sessions:len()}"
            )

    try:
        client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
        assert await write(10)
        await _until(lambda: asyncio.to_thread(lambda: state(paths["replica"])["n"] >= 10), "no replication")
        assert state(paths["replica"]) == {"ro": True, "role": "replica", "n": 10}

        # 1. The primary is lost; the replica is promoted and the service follows it.
        await primary.stop()
        await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
        await _until(lambda: write(1), "the service did not follow the promoted replica")

        # 2. The promoted instance is killed and comes back: still the writable primary.
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGKILL)
        await replica.stop()  # only reaps what the kill left
        await replica.start()
        assert state(paths["replica"])["ro"] is False and state(paths["replica"])["role"] == "primary"
        await _until(lambda: write(5), "the restarted primary does not take writes")

        # 3. The old primary comes back: it finds the peer promoted after it and follows it
        #    as a replica by itself, catching up.
        await primary.start()
        assert {k: v for k, v in state(paths["primary"]).items() if k != "n"} == {
            "ro": True,
            "role": "replica",
        }
        assert await write(5)  # the service stays where the data is
        with pytest.raises(AdminError, match=r"^[^ ]+ is writable: make it a replica first") as refused:
            promote(Settings(data_dir=paths["primary"]))  # no second writer, whoever asks
        assert ".lua" not in str(refused.value)  # the operator's line, not the Lua's position
        total = len(acknowledged)
        await _until(
            lambda: asyncio.to_thread(lambda: state(paths["primary"])["n"] >= total), "the rejoined one lags"
        )

        # 4. The roles are swapped back: the current primary first becomes a replica.
        rejoin(Settings(data_dir=paths["replica"]), socket["primary"])
        promote(Settings(data_dir=paths["primary"]))
        assert state(paths["primary"])["ro"] is False and state(paths["replica"])["ro"] is True
        await _until(lambda: write(3), "the service did not follow the swap back")
        for token in acknowledged:
            status, body = await call(client, "/get", params={"token": token})
            assert (status, body["data"]["user_id"]) == (200, user_id)
        await _until(
            lambda: asyncio.to_thread(lambda: state(paths["replica"])["n"] >= len(acknowledged)),
            "the swapped replica does not follow",
        )

        # 5. The replica learns the generation of the primary it follows (one above its own
        #    promotion's), so that promoting it while that primary is out of reach makes a
        #    later generation, which the service and the old primary then follow.
        def generation(path: Path) -> int:
            with Console(path / "tarantool.control") as console:
                return int(console.eval("return require('sessions.role').get().generation"))

        await _until(
            lambda: asyncio.to_thread(lambda: generation(paths["replica"]) == generation(paths["primary"])),
            "the replica does not learn its primary's generation",
        )
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_rejoin_to_an_address_that_is_no_peer_changes_nothing(tmp_path):
    """`sessions rejoin` to a port nothing listens on, to one out of range, or to the instance
    itself is refused in one line, and the primary stays writable: unchecked, a typo made a
    live primary read-only, following nobody."""
    primary, replica, paths, socket = make_pair(tmp_path)
    await primary.start()
    try:
        settings = Settings(data_dir=paths["primary"])
        for address, said in (
            ("127.0.0.1:1", "does not answer"),
            ("127.0.0.1:99999", "does not answer"),
            (socket["primary"], "is this instance"),
        ):
            with pytest.raises(AdminError, match=said):
                await asyncio.to_thread(rejoin, settings, address)
            with Console(paths["primary"] / "tarantool.control") as console:
                assert console.eval("return {box.info.ro, require('sessions.role').get().role}") == [
                    False,
                    "primary",
                ]
        # A peer that answers is taken: the replica, started and following.
        await replica.start()
        await asyncio.to_thread(rejoin, settings, socket["replica"])
        with Console(paths["primary"] / "tarantool.control") as console:
            assert console.eval("return require('sessions.role').get().role") == "replica"
    finally:
        await primary.stop()
        await replica.stop()


async def test_a_promoted_replica_that_lagged_is_followed_and_loses_nothing_after(
    serve, tmp_path, user_id, caplog
):
    """Issue 30's lagging-replica path: the replica stops following, a user signs in on the
    primary (A), the primary is lost, the replica is promoted, the service follows it without
    a restart (logging what it accepted losing), the same user signs in from the same address
    again (B, a seq of its own, so it never collides with A), the old primary comes back
    and follows the promoted one, the roles are swapped back: A and B are both everywhere."""
    primary, replica, paths, socket = make_pair(tmp_path)
    await primary.start()
    await replica.start()
    params = {"user_id": str(user_id), "ip": "192.0.2.77"}

    def count(name: str) -> int:
        with Console(paths[name] / "tarantool.control") as console:
            return int(console.eval("return box.space.sessions:len()"))

    try:
        client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
        first = await new_session(client, user_id, "192.0.2.77")
        await _until(lambda: asyncio.to_thread(lambda: count("replica") == 1), "no replication")
        with Console(paths["replica"] / "tarantool.control") as console:
            console.eval("box.cfg{replication = {}}")  # it lags from here on
        a = await new_session(client, user_id, "192.0.2.77")
        await asyncio.sleep(0.6)  # one look of the watcher (every 0.5 s) notes what A added
        await primary.stop()
        await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
        # Followed without a restart, within a few seconds, the loss of A logged.
        started = time.monotonic()
        await _until(lambda: _opens(client, user_id), "the service did not follow the promoted replica")
        assert time.monotonic() - started < 5
        assert "sessions written only there are lost" in caplog.text
        status, body = await call(client, "/new", params=params)
        assert status == 200
        b = body["data"]
        # The old primary comes back, follows the promoted one by itself and gets B.
        await primary.start()
        await _until(lambda: asyncio.to_thread(lambda: count("primary") >= 4), "the old primary lags")
        # Swapped back: the old primary writes again, and the replica follows it.
        rejoin(Settings(data_dir=paths["replica"]), socket["primary"])
        promote(Settings(data_dir=paths["primary"]))
        await _until(lambda: _opens(client, user_id), "the service did not follow the swap back")
        for session in (first, a, b):
            status, body = await call(client, "/get", params={"token": session["token"]})
            assert (status, body["data"]["token"]) == (200, session["token"])
        for name in paths:
            with Console(paths[name] / "tarantool.control") as console:
                assert console.eval("return sessions.info().replication_stopped") == 0
                stored = console.eval(
                    f"local t = {{}} for _, s in box.space.sessions.index.user_seq:pairs({{{user_id}}}) do "
                    "t[#t + 1] = s.token:str() end return t"
                )
            assert {a["token"], b["token"]} <= set(stored), name
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_a_replica_promoted_across_a_split_leaves_one_writer(serve, tmp_path, user_id):
    """Issue 30's partition: the link between the two instances is cut (the service still
    reaches both), the operator, seeing the primary unreachable, promotes the replica. The
    service writes only to the promoted one from then on, a service started during the split
    too; once the link heals, the old primary stops writing and follows the promoted one by
    itself. Every session acknowledged after the promotion is on both at the end; every one
    acknowledged before the split is too."""
    links = {
        name: Link((tmp_path / f"to-{name}.sock").resolve(), (tmp_path / name / "tarantool.sock").resolve())
        for name in ("primary", "replica")
    }
    primary, replica, paths, socket = make_pair(tmp_path, via={n: link.address for n, link in links.items()})
    both = f"{socket['primary']},{socket['replica']}"

    def state(name: str) -> dict[str, Any]:
        with Console(paths[name] / "tarantool.control") as console:
            return console.eval(  # type: ignore[no-any-return]
                "return {ro = box.info.ro, role = require('sessions.role').get().role}"
            )

    def tokens(name: str) -> set[str]:
        with Console(paths[name] / "tarantool.control") as console:
            return set(
                console.eval(
                    f"local t = {{}} for _, s in box.space.sessions.index.user_seq:pairs({{{user_id}}}) do "
                    "t[#t + 1] = s.token:str() end return t"
                )
            )

    with links["primary"], links["replica"]:
        await primary.start()
        await replica.start()
        try:
            client = await serve(settings_for(primary, tarantool=both))
            before = [(await new_session(client, user_id))["token"] for _ in range(3)]
            await _until(
                lambda: asyncio.to_thread(lambda: set(before) <= tokens("replica")), "no replication"
            )

            for link in links.values():
                link.cut()
            await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
            # The old primary cannot know; the service, which reaches both, follows the later
            # promotion within a look or two.
            assert state("primary") == {"ro": False, "role": "primary"}

            async def lands_on_the_promoted() -> bool:
                token = (await new_session(client, user_id))["token"]
                return token in await asyncio.to_thread(tokens, "replica")

            await _until(lands_on_the_promoted, "the service does not follow the promotion across the split")
            after = [(await new_session(client, user_id))["token"] for _ in range(5)]
            # A service (re)started during the split picks the promoted one too.
            restarted = await serve(settings_for(primary, tarantool=both))
            after.append((await new_session(restarted, user_id))["token"])
            assert set(after) <= tokens("replica") and not set(after) & tokens("primary")
            assert state("primary")["ro"] is False  # still cut off: two writable, one used

            for link in links.values():
                link.heal()
            await _until(
                lambda: asyncio.to_thread(lambda: state("primary") == {"ro": True, "role": "replica"}),
                "the old primary goes on writing once it reaches the promoted one",
            )
            log = (paths["primary"] / "tarantool.log").read_text()
            assert "was promoted after this instance" in log
            after.append((await new_session(client, user_id))["token"])
            await _until(
                lambda: asyncio.to_thread(lambda: set(before + after) <= tokens("primary")),
                "the old primary does not catch up",
            )
            assert set(before + after) <= tokens("replica")
            for token in before + after:
                assert await _served(client, token), token
        finally:
            await replica.stop()
            await primary.stop()


async def test_the_service_reconnects_to_an_instance_that_left_the_network_without_a_word(
    serve, tmp_path, user_id, caplog
):
    """The service reaches the replica over a link that goes silent (its connection stays
    open and carries nothing ever again: a container disconnected from its network and
    reconnected at another address); the primary is lost and the replica promoted once the
    link is back. The service drops the silent connection after three looks without an
    answer, connects again, and writes to the promoted replica."""
    link = Link((tmp_path / "to-replica.sock").resolve(), (tmp_path / "replica" / "tarantool.sock").resolve())
    primary, replica, paths, socket = make_pair(tmp_path)
    with link:
        await primary.start()
        await replica.start()
        try:
            client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{link.address}"))
            await new_session(client, user_id)
            link.cut(silent=True)
            await primary.stop()
            link.heal()
            await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))

            async def writes() -> bool:
                status, _ = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
                return status == 200

            await _until(writes, "the service never reconnects to the promoted replica", within=20)
            assert await _logged(caplog, "answered nothing for 3 looks over an open connection: reconnecting")
        finally:
            await replica.stop()
            await primary.stop()


@pytest.mark.each_release
async def test_two_promoted_in_one_generation_both_stop_until_one_is_promoted(serve, tmp_path, user_id):
    """Both sides of a split promoted (the same generation each): once they meet, neither
    writes (no silent divergence) and each says so; `promote` of one makes the other follow it."""
    links = {
        name: Link((tmp_path / f"to-{name}.sock").resolve(), (tmp_path / name / "tarantool.sock").resolve())
        for name in ("primary", "replica")
    }
    primary, replica, paths, socket = make_pair(tmp_path, via={n: link.address for n, link in links.items()})

    def state(name: str) -> dict[str, Any]:
        with Console(paths[name] / "tarantool.control") as console:
            return console.eval(  # type: ignore[no-any-return]
                "return {ro = box.info.ro, role = require('sessions.role').get().role}"
            )

    with links["primary"], links["replica"]:
        await primary.start()
        await replica.start()
        try:
            client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
            # The service's first calls write on the primary (its settings, kept in the store):
            # the replica has them before the split, else it rightly refuses the promote below
            # (after 10 s) as lacking rows the other has (CI failed so once).
            await new_session(client, user_id)
            await _until(lambda: asyncio.to_thread(_caught_up, primary, replica), "the replica lags")
            for link in links.values():
                link.cut()
            await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
            await asyncio.to_thread(promote, Settings(data_dir=paths["primary"]))
            for link in links.values():
                link.heal()
            fenced = {"ro": True, "role": "fenced"}
            await _until(
                lambda: asyncio.to_thread(lambda: state("primary") == state("replica") == fenced),
                "two writers of one generation go on",
            )
            assert "promoted in the same generation" in (paths["primary"] / "tarantool.log").read_text()
            await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
            await _until(
                lambda: asyncio.to_thread(lambda: state("primary") == {"ro": True, "role": "replica"}),
                "the other does not follow the one promoted",
            )
            await _until(lambda: _opens(client, user_id), "the service does not write again")
        finally:
            await replica.stop()
            await primary.stop()


async def test_an_outage_is_logged_once_and_its_end_too(serve, tmp_path, user_id, caplog):
    """Issue 30: while the only writable instance is down, the service says so at once, then
    every ten seconds, and once when writes are back; the client library's warning at each
    failed reconnect (ten a second) goes through once a minute per instance."""
    primary, replica, _, socket = make_pair(tmp_path)
    await primary.start()
    await replica.start()
    try:
        client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
        await new_session(client, user_id)
        caplog.clear()
        await primary.stop()
        await asyncio.sleep(2.5)  # 12 reconnect attempts per connection
        failed = [r for r in caplog.records if r.name == "asynctnt" and "failed" in r.getMessage()]
        lost = [r for r in caplog.records if "no writable Tarantool among the 2 listed" in r.getMessage()]
        assert (len(failed), len(lost)) == (1, 1), caplog.text
        await primary.start()
        await _until(lambda: _opens(client, user_id), "writes do not come back")
        await _until(lambda: _logged(caplog, "without one"), "the end of the outage is not logged")
        assert "still no writable" not in caplog.text  # the reminder comes after ten seconds
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_a_restore_older_than_its_running_replica_fences_the_primary(serve, tmp_path, user_id):
    """Restored from a backup older than what its replica holds, the primary would write rows
    the replica never takes (replication goes by vclock): it starts fenced and says so; the
    documented way on (empty the replica, promote, start the replica) re-seeds the replica."""
    primary, replica, paths, socket = make_pair(tmp_path)
    await primary.start()
    await replica.start()

    def state(name: str) -> dict[str, Any]:
        with Console(paths[name] / "tarantool.control") as console:
            return console.eval(  # type: ignore[no-any-return]
                "return {ro = box.info.ro, role = require('sessions.role').get().role, "
                "n = box.space.sessions:len()}"
            )

    archive = tmp_path / "older.tar.gz"
    try:
        client = await serve(settings_for(primary, tarantool=socket["primary"]))
        for _ in range(10):
            await new_session(client, user_id)
        await asyncio.to_thread(backup, Settings(data_dir=paths["primary"]), archive)
        for _ in range(10):
            await new_session(client, user_id)
        await _until(lambda: asyncio.to_thread(lambda: state("replica")["n"] == 20), "no replication")
        await primary.stop()
        restore(Settings(data_dir=paths["primary"]), archive)
        await primary.start()
        assert state("primary") == {"ro": True, "role": "fenced", "n": 10}
        assert (
            "rows this primary lacks (restored from an older backup?)"
            in (paths["primary"] / "tarantool.log").read_text()
        )
        # The way on: the replica emptied, the primary promoted, the replica seeded again.
        await replica.stop()
        shutil.rmtree(paths["replica"])
        promote(Settings(data_dir=paths["primary"]))
        replica = make_pair(tmp_path)[1]
        await replica.start()
        await _until(lambda: _opens(client, user_id), "the restored primary does not write")
        await _until(
            lambda: asyncio.to_thread(lambda: state("replica")["n"] == 11), "the replica was not seeded"
        )
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_the_service_never_switches_to_an_instance_that_lacks_its_data(
    serve, tmp_path, user_id, caplog
):
    """With the instance in use read-only, a writable one that lacks what the first had (an
    old primary with stale data, a replica far behind) is not used: requests fail rather
    than lose sessions, until the instance with the data is writable again."""
    current = make_instance(tmp_path / "current")
    stale = make_instance(tmp_path / "stale")
    await current.start()
    await stale.start()
    try:
        both = f"unix/:{current.socket_path},unix/:{stale.socket_path}"
        client = await serve(settings_for(current, tarantool=both))
        made = [await new_session(client, user_id) for _ in range(30)]
        with Console(current.console_path) as console:
            console.eval("box.cfg{read_only = true}")
            await asyncio.sleep(1.5)  # three looks of the watcher
            status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
            assert (status, body["code"]) == (503, "storage_unavailable")
            with Console(stale.console_path) as other:
                assert other.eval("return box.space.sessions:len()") == 0
            assert "not switching to the writable Tarantool" in caplog.text
            console.eval("box.cfg{read_only = false}")
        await _until(lambda: _served(client, made[0]["token"]), "the service did not come back")
    finally:
        await stale.stop()
        await current.stop()


@pytest.mark.each_release
async def test_with_synchronous_replication_a_killed_primary_loses_no_acknowledged_session(
    serve, tmp_path, user_id
):
    """SESSIONS_SYNC_REPLICAS=1 (on both, as compose sets it): a `new` is answered only once
    the replica has it, so kill -9 of the primary in the middle of a burst loses none that
    were answered 200."""
    primary, replica, paths, socket = make_pair(tmp_path, SESSIONS_SYNC_REPLICAS="1")
    await primary.start()
    await replica.start()
    try:
        with Console(paths["primary"] / "tarantool.control") as console:
            assert console.eval("return box.space.sessions.is_sync") is True
        client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
        first = await new_session(client, user_id)  # a sync write, answered once the replica has it
        acknowledged: list[str] = [first["token"]]

        async def one(i: int) -> None:
            params = {"user_id": str(user_id), "ip": f"192.0.2.{i % 250 + 1}"}
            status, body = await call(client, "/new", params=params)
            if status == 200:
                acknowledged.append(body["data"]["token"])

        async def writer(n: int) -> None:
            for i in range(200):
                await one(n * 200 + i)

        burst = [asyncio.ensure_future(writer(n)) for n in range(20)]
        await _until(lambda: _at_least(acknowledged, 30), "the burst does not get through")
        # The replica falls behind (stopped), writes go on for a moment, then the primary dies:
        # asynchronous replication would have acknowledged sessions only the primary had.
        assert primary.pid is not None and replica.pid is not None
        os.kill(replica.pid, signal.SIGSTOP)
        await asyncio.sleep(0.3)
        os.kill(primary.pid, signal.SIGKILL)
        os.kill(replica.pid, signal.SIGCONT)
        await asyncio.gather(*burst)
        await primary.stop()  # reaps it
        assert len(acknowledged) < 4001, "the kill came after the burst"
        await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
        with Console(paths["replica"] / "tarantool.control") as console:
            stored = set(
                console.eval(
                    f"local t = {{}} for _, s in box.space.sessions.index.user_seq:pairs({{{user_id}}}) do "
                    "t[#t + 1] = s.token:str() end return t"
                )
            )
        assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged sessions lost"
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_with_synchronous_replication_and_no_replica_writes_fail_and_gets_serve(
    serve, tmp_path, user_id
):
    """The replica stops answering: a write times out after SESSIONS_SYNC_TIMEOUT and is a
    503 that changed nothing; a `get` still serves its session (untouched), so nobody is
    signed out; once the replica is back, writes go through again."""
    paths = {name: (tmp_path / name).resolve() for name in ("primary", "replica")}
    common = {"SESSIONS_REPLICATION_PASSWORD": "replication-pw-8d1f"}
    primary = make_instance(paths["primary"], environment={**common, "SESSIONS_SYNC_REPLICAS": "1"})
    replica = make_instance(
        paths["replica"],
        environment={
            **common,
            "SESSIONS_ROLE": "replica",
            "SESSIONS_PRIMARY": f"unix/:{paths['primary'] / 'tarantool.sock'}",
        },
    )
    await primary.start()
    await replica.start()
    try:
        client = await serve(settings_for(primary))
        session = await new_session(client, user_id)
        with Console(paths["primary"] / "tarantool.control") as console:
            # Last used a while ago, so that a `get` has an activity to write.
            session["activity"] -= 100
            console.eval(
                f"box.space.sessions:update(require('uuid').fromstr('{session['token']}'), "
                f"{{{{'=', 'activity', {session['activity']}}}}})"
            )
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            params = {"user_id": str(user_id), "ip": "192.0.2.1"}
            started = asyncio.get_running_loop().time()
            status, body = await call(client, "/new", params=params)
            assert (status, body["code"]) == (503, "storage_write_failed")
            assert asyncio.get_running_loop().time() - started < 1.0
            status, body = await call(client, "/get", params={"token": session["token"]})
            assert status == 200 and body["data"]["activity"] == session["activity"]
            status, body = await call(client, "/get", params={"token": session["token"]}, json={"a": 1})
            assert (status, body["code"]) == (503, "storage_write_failed")
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        await _until(lambda: _opens(client, user_id), "writes do not come back with the replica")
        assert len((await call(client, "/user", params={"id": str(user_id)}))[1]["data"]) == 2
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_with_synchronous_replication_and_the_replica_gone_it_says_so_at_once(serve, tmp_path, user_id):
    """The replica stopped: the primary knows no write can be confirmed, so writes are refused
    at once with a message about replicas, gets serve as stored without waiting, /ready and
    the metric say so; back with the replica, writes go through."""
    paths = {name: (tmp_path / name).resolve() for name in ("primary", "replica")}
    common = {"SESSIONS_REPLICATION_PASSWORD": "replication-pw-8d1f"}
    primary = make_instance(paths["primary"], environment={**common, "SESSIONS_SYNC_REPLICAS": "1"})
    replica_env = {
        **common,
        "SESSIONS_ROLE": "replica",
        "SESSIONS_PRIMARY": f"unix/:{paths['primary'] / 'tarantool.sock'}",
    }
    replica = make_instance(paths["replica"], environment=replica_env)
    await primary.start()
    await replica.start()
    try:
        client = await serve(settings_for(primary))
        session = await new_session(client, user_id)
        await replica.stop()

        def unconfirmable() -> bool:
            with Console(paths["primary"] / "tarantool.control") as console:
                return console.eval("return sessions.info().writes_confirmable") is False

        await _until(lambda: asyncio.to_thread(unconfirmable), "the primary does not see its replica gone")
        params = {"user_id": str(user_id), "ip": "192.0.2.1"}
        for path, query in (("/new", params), ("/del", {"token": session["token"]})):
            started = asyncio.get_running_loop().time()
            status, body = await call(client, path, params=query)
            assert (status, body["code"]) == (503, "storage_write_failed"), body
            assert "replicas" in body["message"]
            assert asyncio.get_running_loop().time() - started < 0.3
        started = asyncio.get_running_loop().time()
        status, body = await call(client, "/get", params={"token": session["token"]})
        assert status == 200 and asyncio.get_running_loop().time() - started < 0.3
        status, body = await call(client, "/ready")
        assert status == 503 and "replicas" in body["message"]
        metrics = await (await client.get("/metrics")).text()
        assert "sessions_tarantool_writes_confirmable 0.0" in metrics
        await replica.start()
        await _until(lambda: _opens(client, user_id), "writes do not come back with the replica")
    finally:
        await replica.stop()
        await primary.stop()


def _role(instance: EmbeddedTarantool) -> dict[str, Any]:
    with Console(instance.console_path) as console:
        return console.eval("return {ro = box.info.ro, role = require('sessions.role').get().role}")


def _caught_up(primary: EmbeddedTarantool, replica: EmbeddedTarantool) -> bool:
    """Whether the replica has every row the primary wrote."""
    with Console(primary.console_path) as console:
        origin, lsn = console.eval("return {box.info.id, box.info.lsn}")
    with Console(replica.console_path) as console:
        return bool((console.eval(f"return box.info.vclock[{origin}]") or 0) >= lsn)


def _hold_a_write(primary: EmbeddedTarantool, replica: EmbeddedTarantool, user_id: int, token: str) -> None:
    """A session the replica has but whose confirmation it never gets, as when the primary
    confirmed it (and answered 200) and died before the confirmation left: the primary's
    quorum raised out of reach, the write waits there, and the replica receives it."""
    with Console(primary.console_path) as console:
        console.eval("box.cfg{replication_synchro_quorum = 3, replication_synchro_timeout = 60}")
        insert = lua_session(user_id, "'192.0.2.99'", "math.floor(require('fiber').time())", token=token)
        before = console.eval("return box.info.lsn")
        console.eval(f"require('fiber').create(function() box.space.sessions:insert({insert}) end)")
        # The insert's row has an LSN once the WAL wrote it, which may be after this answer.
        deadline = time.monotonic() + 10
        while (lsn := console.eval("return box.info.lsn")) <= before:
            assert time.monotonic() < deadline, "the primary does not write the held session"
            time.sleep(0.05)
        origin = console.eval("return box.info.id")
    deadline = time.monotonic() + 10
    with Console(replica.console_path) as console:
        while (console.eval(f"return box.info.vclock[{origin}]") or 0) < lsn:
            assert time.monotonic() < deadline, "the replica does not receive the write"
            time.sleep(0.05)


@pytest.mark.each_release
async def test_with_synchronous_replication_promote_keeps_what_the_lost_primary_left_unconfirmed(
    serve, tmp_path, user_id
):
    """SESSIONS_SYNC_REPLICAS=1 on both (as in compose). The primary dies while the replica
    holds a write it never saw confirmed; `promote` confirms it (it may have been answered
    200), never rolls it back. Alone, the promoted instance refuses writes cleanly; the old
    primary comes back and follows it by itself, and writes go through again, and again once
    the roles are swapped back."""
    primary, replica, paths, socket = make_pair(tmp_path, SESSIONS_SYNC_REPLICAS="1")
    await primary.start()
    await replica.start()
    try:
        client = await serve(settings_for(primary, tarantool=f"{socket['primary']},{socket['replica']}"))
        first = await new_session(client, user_id)
        await asyncio.to_thread(_hold_a_write, primary, replica, user_id, HELD)
        assert primary.pid is not None
        os.kill(primary.pid, signal.SIGKILL)
        await primary.stop()  # reaps it

        await asyncio.to_thread(promote, Settings(data_dir=paths["replica"]))
        assert _role(replica) == {"ro": False, "role": "primary"}
        for token in (first["token"], HELD):
            await _until(lambda token=token: _served(client, token), f"{token} is not served")
        # Alone, it has no replica to confirm a write: each fails and changes nothing.
        await _until(lambda: _write_fails_cleanly(client, user_id), "writes do not fail cleanly")

        await primary.start()
        assert _role(primary) == {"ro": True, "role": "replica"}
        await _until(lambda: _opens(client, user_id), "writes do not come back once the old primary rejoins")

        rejoin(Settings(data_dir=paths["replica"]), socket["primary"])
        promote(Settings(data_dir=paths["primary"]))
        await _until(lambda: _opens(client, user_id), "the service did not follow the swap back")
        for token in (first["token"], HELD):
            assert await _served(client, token)
    finally:
        await replica.stop()
        await primary.stop()


@pytest.mark.each_release
async def test_with_synchronous_replication_a_restarted_primary_takes_its_queue_back(
    serve, tmp_path, user_id, tarantool_release
):
    """kill -9 of the primary while a write waits for its confirmation, and the primary is
    started again (as its restart policy does): on 2.11 its queue comes back frozen, read-only;
    it takes it back once its replica answers, which confirms that write, and is writable."""
    if tarantool_release == "2.6":
        pytest.skip(
            "Tarantool 2.6 does not finish such a start: its first write waits behind the "
            "unconfirmed one, which only a replica connected after the start can confirm"
        )
    primary, replica, _, _ = make_pair(tmp_path, SESSIONS_SYNC_REPLICAS="1")
    await primary.start()
    await replica.start()
    try:
        client = await serve(settings_for(primary))
        first = await new_session(client, user_id)
        await asyncio.to_thread(_hold_a_write, primary, replica, user_id, HELD)
        assert primary.pid is not None
        os.kill(primary.pid, signal.SIGKILL)
        await primary.stop()  # reaps it
        await primary.start()
        await _until(lambda: _opens(client, user_id), "the restarted primary does not take writes")
        assert _role(primary) == {"ro": False, "role": "primary"}
        for token in (first["token"], HELD):
            assert await _served(client, token)
    finally:
        await replica.stop()
        await primary.stop()


async def _opens(client: Any, user_id: int) -> bool:
    status, _ = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
    return status == 200


async def _logged(caplog: Any, text: str) -> bool:
    return text in caplog.text


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def _served(client: Any, token: str) -> bool:
    return (await call(client, "/get", params={"token": token}))[0] == 200


async def _write_fails_cleanly(client: Any, user_id: int) -> bool:
    status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
    assert status != 200, "a write went through with no replica to confirm it"
    return body["code"] == "storage_write_failed"


def test_compose_files_and_dockerfile_are_valid(tmp_path):
    root = Path(__file__).resolve().parent.parent
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed")
    env = {
        "PATH": "/usr/bin:/bin",
        "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
        "SESSIONS_REPLICATION_PASSWORD": "r",
        "SESSIONS_VSHARD_PASSWORD": "v",
    }
    for files in (
        ["docker-compose.yml"],
        ["docker-compose.yml", "dc.sample.yml"],
        ["docker-compose.yml", "dc.sample.yml", "dc.ha.yml"],
        ["docker-compose.yml", "dc.sample.yml", "dc.sharded.yml"],
    ):
        args = [arg for name in files for arg in ("-f", str(root / name))]
        result = subprocess.run(
            ["docker-compose", *args, "config", "-q"], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    # Elections need the replication user: dc.ha.yml is refused without its password.
    env.pop("SESSIONS_REPLICATION_PASSWORD")
    # An empty .env of its own: a developer's .env beside the files may well set it.
    (tmp_path / "env").touch()
    files = ("docker-compose.yml", "dc.sample.yml", "dc.ha.yml")
    result = subprocess.run(
        [
            "docker-compose",
            "--env-file",
            str(tmp_path / "env"),
            *(arg for name in files for arg in ("-f", str(root / name))),
            "config",
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "set SESSIONS_REPLICATION_PASSWORD" in result.stderr, result.stderr


def test_the_lock_pins_every_runtime_dependency_within_its_range():
    """The service image installs requirements.lock (Dockerfile): it must hold every runtime
    dependency of pyproject.toml at a version pyproject.toml allows (`make lock` renews it)."""
    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for line in (root / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = Version(version)
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock: run make lock"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} is outside {requirement}"


def test_the_installed_package_holds_every_module(tmp_path):
    """What `pip install .` puts in the image is the whole package, subpackages included (an
    editable install, as in the suite, would hide a missing one)."""
    # Built from a copy: a build/ directory left in the checkout would leak into the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "sessions", source / "sessions", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".py")}
    package = ROOT / "sessions"
    wanted = {str(path.relative_to(ROOT)) for path in package.rglob("*.py")}
    assert wanted <= shipped, wanted - shipped


def test_the_sample_deployment_shows_the_defaults_as_they_are():
    """dc.sample.yml shows settings with their values; each value it spells out is the
    setting's default, so copying the sample changes nothing until you edit it."""
    import yaml
    from pydantic import TypeAdapter

    sample = yaml.safe_load((ROOT / "dc.sample.yml").read_text())
    environment = sample["services"]["sessions"]["environment"]
    defaults = Settings.model_fields
    shown = 0
    for name, value in environment.items():
        field = name.removeprefix("SESSIONS_").lower()
        if "${" in str(value) or field in ("host", "port"):
            continue  # from .env, or where the container listens (the image's own)
        read = TypeAdapter(defaults[field].annotation).validate_python(str(value))
        assert read == defaults[field].default, name
        shown += 1
    assert shown >= 10
