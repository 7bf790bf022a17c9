"""Backup and restore through the CLI's functions, and failover between two Tarantools."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sessions.admin import BackupError, backup, promote, restore
from sessions.config import Settings
from sessions.console import Console

from .conftest import PASSWORD, call, make_instance, new_session, serving, settings_for


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
    restore(settings, archive)

    async with serving(settings) as client:
        _, body = await call(client, "/user", params={"id": str(user_id)})
    stored = {s["token"]: s for s in body["data"]}
    assert [s for s in before if stored.get(s["token"]) != s] == []


def _snapshot(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}


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
    for bad in ("damaged.tar.gz", "garbage.tar.gz", "missing.tar.gz"):
        with pytest.raises(BackupError):
            restore(settings, tmp_path / bad)
        assert _snapshot(tmp_path / "data") == before

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


async def test_restore_refuses_a_data_dir_in_use(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    archive = tmp_path / "sessions.tar.gz"
    async with serving(settings):
        await asyncio.to_thread(backup, settings, archive)
        with pytest.raises(BackupError, match="stop the service"):
            restore(settings, archive)


async def test_failover_to_a_promoted_replica_keeps_serving(serve, tmp_path, user_id):
    primary = make_instance(tmp_path / "primary", environment={"SESSIONS_REPLICATION_PASSWORD": "rpw"})
    await primary.start()
    replica = make_instance(
        tmp_path / "replica",
        environment={"TT_REPLICATION": f"replicator:rpw@unix/:{primary.socket_path}", "TT_READ_ONLY": "true"},
    )
    await replica.start()
    try:
        both = f"unix/:{primary.socket_path},unix/:{replica.socket_path}"
        client = await serve(settings_for(primary, tarantool=both))
        made = [await new_session(client, user_id, f"192.0.2.{i}") for i in range(1, 21)]
        with Console(replica.console_path) as console:
            for _ in range(100):
                if console.eval("return box.space.sessions:len()") >= 20:
                    break
                await asyncio.sleep(0.05)
            await primary.stop()
        await asyncio.to_thread(promote, Settings(data_dir=tmp_path / "replica"))

        deadline = asyncio.get_running_loop().time() + 10
        while (await call(client, "/get", params={"token": made[0]["token"]}))[0] != 200:
            assert asyncio.get_running_loop().time() < deadline, "did not fail over"
            await asyncio.sleep(0.1)
        for session in made:
            status, body = await call(client, "/get", params={"token": session["token"]})
            assert (status, body["data"]["user_id"]) == (200, user_id)
        assert (await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.99"}))[0] == 200
    finally:
        await replica.stop()
        await primary.stop()


def test_compose_files_and_dockerfile_are_valid():
    root = Path(__file__).resolve().parent.parent
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed")
    env = {
        "PATH": "/usr/bin:/bin",
        "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
        "SESSIONS_REPLICATION_PASSWORD": "r",
    }
    for files in (["docker-compose.yml"], ["docker-compose.yml", "dc.sample.yml"]):
        args = [arg for name in files for arg in ("-f", str(root / name))]
        result = subprocess.run(
            ["docker-compose", *args, "config", "-q"], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
