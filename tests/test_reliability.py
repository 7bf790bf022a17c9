"""Faults: Tarantool gone, hung, killed or unable to restart; SIGTERM with work in flight."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from sessions.config import Settings

from .conftest import call, new_session, serving, settings_for
from .service import Service, alive, wait_gone

# What these tests check is done by Tarantool: they run on each release (tests/conftest.py).
pytestmark = pytest.mark.each_release


async def _first_success(
    client: TestClient, params: dict[str, str], within: float, path: str = "/get"
) -> float:
    """Seconds until a call answers 200; every answer before that must be a 503."""
    started = time.monotonic()
    while True:
        status, body = await call(client, path, params=params)
        if status == 200:
            return time.monotonic() - started
        assert (status, body["code"]) == (503, "storage_unavailable")
        assert time.monotonic() - started < within, "storage did not come back"
        await asyncio.sleep(0.02)


async def test_outage_answers_503_quickly_and_recovers_within_a_second(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool))
    session = await new_session(client, user_id)

    await fresh_tarantool.stop()
    for _ in range(5):
        started = time.monotonic()
        status, body = await call(client, "/get", params={"token": session["token"]})
        assert (status, body["code"]) == (503, "storage_unavailable")  # never token_not_found
        assert time.monotonic() - started < 1.5

    await fresh_tarantool.start()
    assert await _first_success(client, {"token": session["token"]}, within=5) < 1.0


async def test_hung_tarantool_answers_503_within_the_timeout(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool, tarantool_timeout=0.5))
    session = await new_session(client, user_id)
    assert fresh_tarantool.pid is not None
    os.kill(fresh_tarantool.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = await call(client, "/get", params={"token": session["token"]})
        assert (status, body["code"]) == (503, "storage_unavailable")
        assert 0.4 < time.monotonic() - started < 1.5
    finally:
        os.kill(fresh_tarantool.pid, signal.SIGCONT)
    assert await _first_success(client, {"token": session["token"]}, within=5) < 2


async def test_embedded_tarantool_is_restarted_when_it_dies(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    async with serving(settings) as client:
        session = await new_session(client, user_id)
        pid = int((tmp_path / "data" / "tarantool.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        await _first_success(client, {"token": session["token"]}, within=10)
        assert int((tmp_path / "data" / "tarantool.pid").read_text()) != pid


async def test_kill_9_during_a_burst_of_new_loses_no_acknowledged_session(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data", wal_mode="write")
    acknowledged: list[dict] = []
    async with serving(settings) as client:
        pid = int((tmp_path / "data" / "tarantool.pid").read_text())

        async def writer(worker: int) -> None:
            for i in range(60):
                status, body = await call(
                    client, "/new", params={"user_id": str(user_id), "ip": f"10.0.{worker}.{i + 1}"}
                )
                if status == 200:
                    acknowledged.append(body["data"])
                else:
                    assert (status, body["code"]) == (503, "storage_unavailable")
                await asyncio.sleep(0.005)

        async def killer() -> None:
            while len(acknowledged) < 300:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            os.kill(pid, signal.SIGKILL)

        await asyncio.gather(killer(), *(writer(w) for w in range(20)))
        # A listing, unlike a get, leaves every field as it was.
        await _first_success(client, {"id": str(user_id)}, within=10, path="/user")
        _, body = await call(client, "/user", params={"id": str(user_id)})

    stored = {s["token"]: s for s in body["data"]}
    missing = [s for s in acknowledged if stored.get(s["token"]) != s]
    assert len(acknowledged) >= 300
    assert missing == []


def test_service_exits_non_zero_when_tarantool_cannot_come_back(tmp_path):
    scripts = tmp_path / "scripts"
    shutil.copytree(Path(__file__).resolve().parent.parent / "tarantool", scripts)
    # Back-off set short: the five restarts it tries take 0.3 s rather than 8.
    service = Service(
        tmp_path / "data", SESSIONS_TARANTOOL_SCRIPTS=str(scripts), SESSIONS_RESTART_BACKOFF="0.01"
    )
    (scripts / "init.lua").write_text("error('broken on purpose')\n")
    os.kill(service.tarantool_pid, signal.SIGKILL)
    assert service.process.wait(timeout=60) == 1
    assert "giving up" in service.output()


def test_sigterm_finishes_requests_in_flight_then_stops(tmp_path):
    service = Service(tmp_path / "data", SESSIONS_TARANTOOL_TIMEOUT="5")
    tarantool_pid = service.tarantool_pid
    # Paused, Tarantool holds the request inside its storage call: in flight for sure.
    os.kill(tarantool_pid, signal.SIGSTOP)
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
            conn.sendall(b"GET /new?user_id=5&ip=192.0.2.1 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            service.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            # No new connections while the one in flight finishes.
            try:
                socket.create_connection(("127.0.0.1", service.port), timeout=1).close()
                refused = False
            except OSError:
                refused = True
            os.kill(tarantool_pid, signal.SIGCONT)
            answer = conn.recv(65536)
    finally:
        os.kill(tarantool_pid, signal.SIGCONT)
    assert refused
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert service.process.wait(timeout=30) == 0
    wait_gone(tarantool_pid)
    assert not alive(tarantool_pid)
