"""Overload: bulk work never starves the check path, refused work says why and is counted,
no work is done for a caller who has left, and a retried `new` is safe."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from sessions.console import Console, ConsoleError
from sessions.errors import Overloaded
from sessions.overload import Gate

from .conftest import (
    call,
    frozen_tarantool,
    lua_bulk_insert,
    lua_session,
    new_session,
    settings_for,
    wait_for_purge_passes,
)
from .service import Service


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus exposition (0 if absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, rest = sample.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


# --- the gate on its own -------------------------------------------------------------


async def test_a_gate_admits_its_concurrency_then_queues_then_sheds():
    gate = Gate("bulk", concurrency=2, queue=1)
    await gate.enter(1.0)
    await gate.enter(1.0)
    assert gate.active == 2
    waiter = asyncio.ensure_future(gate.enter(5.0))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(Overloaded, match="waiting"):
        await gate.enter(5.0)  # the queue of one is full
    gate.leave()
    await waiter  # the waiter got the freed turn
    assert (gate.active, gate.waiting) == (2, 0)
    assert gate.shed == {"queue_full": 1}


async def test_a_gate_sheds_a_waiter_at_its_deadline():
    gate = Gate("bulk", concurrency=1, queue=5)
    await gate.enter(1.0)
    started = time.monotonic()
    with pytest.raises(Overloaded, match="in time"):
        await gate.enter(0.05)
    assert time.monotonic() - started < 1
    assert gate.shed == {"deadline": 1}
    assert (gate.active, gate.waiting) == (1, 0)
    gate.leave()
    await gate.enter(0.05)  # the turn it never took is still free


async def test_a_gate_without_a_queue_sheds_at_once():
    gate = Gate("check", concurrency=1, queue=0)
    await gate.enter(1.0)
    with pytest.raises(Overloaded):
        await gate.enter(10.0)
    assert gate.shed == {"queue_full": 1}


# --- deadlines in Tarantool ----------------------------------------------------------


RULES = "rules = {ttl = 15552000, lifetime = 0, cap = 0}, token_storage = 'plain'"


@pytest.mark.each_release
def test_a_batch_past_its_deadline_does_nothing(console, user_id):
    token = "'" + "\\x40" * 16 + "'"  # 16 bytes, a v4-looking token
    call_new = f"{{token = {token}, user_id = {user_id}, ip = '192.0.2.9'}}"
    late = f"{{{RULES}, deadline = require('fiber').time() - 0.001}}"
    with pytest.raises(ConsoleError, match="deadline"):
        console.eval(f"return sessions.batch('new', {{{call_new}}}, {late})")
    assert console.eval(f"return box.space.sessions.index.user:count({{{user_id}}})") == 0
    # The same call within its deadline opens it.
    console.eval(
        f"return sessions.batch('new', {{{call_new}}}, {{{RULES}, deadline = require('fiber').time() + 5}})"
    )
    assert console.eval(f"return box.space.sessions.index.user:count({{{user_id}}})") == 1


@pytest.mark.parametrize("procedure", ["list", "delete_all"])
@pytest.mark.each_release
def test_bulk_work_past_its_deadline_is_not_started(console, user_id, procedure):
    console.eval(lua_bulk_insert(3, lua_session(user_id, "'192.0.2.9'", "require('sessions.clock').now()")))
    args = f"{{kind = 'user', key = {user_id}}}"
    if procedure == "list":
        args = f"{{kind = 'user', key = {user_id}, limit = 10, page_bytes = 1048576}}"
    late = f"{{{RULES}, deadline = require('fiber').time() - 0.001}}"
    with pytest.raises(ConsoleError, match="deadline"):
        console.eval(f"return sessions.call('{procedure}', {args}, {late})")
    assert console.eval(f"return box.space.sessions.index.user:count({{{user_id}}})") == 3


# --- the service under a burst -------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# The bound the burst test holds the service process to (the bench's target is 256 MB).
SERVICE_RSS_MB = 256
TARANTOOL_GROWTH_MB = 128


def test_a_burst_of_listings_fails_no_get_and_stays_within_memory(tmp_path, user_id):
    """Far more listings than one process can serve, with a steady `get` stream beside them:
    every `get` answers 200, each listing is either served or shed as `overloaded`, and
    neither process grows past its bound."""
    service = Service(tmp_path / "var", SESSIONS_BULK_QUEUE="8")
    try:
        status, body = service.request(f"/new?user_id={user_id + 1}&ip=192.0.2.1")
        assert status == 200, body
        token = body["data"]["token"]
        with Console(tmp_path / "var" / "tarantool.control") as admin:
            # 1,000 sessions of about 2 KB: each page is about 2 MiB to decode and encode.
            admin.eval(
                lua_bulk_insert(
                    1000,
                    lua_session(
                        user_id,
                        "'192.0.2.5'",
                        "require('sessions.clock').now()",
                        "{x = string.rep('y', 2000)}",
                    ),
                )
            )
        tarantool_before = _rss_mb(service.tarantool_pid)
        outcome = asyncio.run(_burst(service.port, user_id, token, rounds=3, concurrency=300))
        gets, listings = outcome
        assert set(gets) == {200}, gets
        assert set(listings) <= {"success", "overloaded"}, listings
        assert listings.get("overloaded", 0) > 0, listings  # the burst was beyond what it serves
        assert listings.get("success", 0) > 0, listings
        assert _rss_mb(service.process.pid) < SERVICE_RSS_MB
        assert _rss_mb(service.tarantool_pid) - tarantool_before < TARANTOOL_GROWTH_MB
        status, body = service.request("/ready")
        assert status == 200, body  # shedding bulk work is not unreadiness
        metrics = _scrape(service.port)
        assert _metric(metrics, "sessions_shed_total", work="bulk", reason="queue_full") > 0
        assert (
            _metric(metrics, "sessions_requests_total", method="user", code="overloaded")
            == listings["overloaded"]
        )
    finally:
        service.stop(signal.SIGTERM)


def _scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


async def _burst(
    port: int, user_id: int, token: str, *, rounds: int, concurrency: int
) -> tuple[dict[int, int], dict[str, int]]:
    base = f"http://127.0.0.1:{port}"
    gets: dict[int, int] = {}
    listings: dict[str, int] = {}
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)

    async def get_stream(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(f"{base}/get", headers={"X-Session-Token": token}) as answer:
                await answer.read()
                gets[answer.status] = gets.get(answer.status, 0) + 1
            await asyncio.sleep(0.01)

    async def listing(session: aiohttp.ClientSession) -> None:
        async with session.get(f"{base}/user", params={"id": str(user_id)}) as answer:
            body = await answer.json()
            code = "success" if answer.status == 200 else body["code"]
            if answer.status == 503:
                assert answer.headers["Retry-After"] == "1"
            listings[code] = listings.get(code, 0) + 1

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with (
        aiohttp.ClientSession(timeout=timeout) as one,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as many,
    ):
        stream = asyncio.create_task(get_stream(one))
        for _ in range(rounds):
            await asyncio.gather(*(listing(many) for _ in range(concurrency)))
        stop.set()
        await stream
    return gets, listings


async def test_a_caller_who_left_while_queued_gets_no_work_done(serve, fresh_tarantool, user_id):
    client = await serve(
        settings_for(fresh_tarantool, bulk_concurrency=1, queue_timeout=10, tarantool_timeout=0.5)
    )
    await new_session(client, user_id)
    assert fresh_tarantool.pid is not None
    os.kill(fresh_tarantool.pid, signal.SIGSTOP)
    try:
        # The first holds the only turn until Tarantool's timeout; the second waits behind
        # it and its client gives up meanwhile.
        first = asyncio.ensure_future(client.get("/user", params={"id": str(user_id)}))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await client.get("/user", params={"id": str(user_id)}, timeout=aiohttp.ClientTimeout(total=0.1))
        await asyncio.sleep(0.6)  # past the first one's Tarantool timeout
    finally:
        os.kill(fresh_tarantool.pid, signal.SIGCONT)
    assert (await first).status == 503
    await asyncio.sleep(0.2)
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "sessions_requests_total", method="user", code="client_gone") == 1


async def test_parser_refusals_are_counted_under_other(client):
    before = _metric(
        await (await client.get("/metrics")).text(),
        "sessions_requests_total",
        method="other",
        code="bad_request",
    )
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await reader.read(4096)).startswith(b"HTTP/1.0 400")
    writer.close()
    await writer.wait_closed()
    after = _metric(
        await (await client.get("/metrics")).text(),
        "sessions_requests_total",
        method="other",
        code="bad_request",
    )
    assert after == before + 1


def test_running_out_of_file_descriptors_is_logged_and_counted(tmp_path):
    # A connection cap set above what the descriptors allow: running out is still seen.
    service = Service(tmp_path / "var", fd_limit=96, SESSIONS_MAX_CONNECTIONS="1000")
    conns: list[socket.socket] = []
    try:
        for _ in range(120):
            conns.append(socket.create_connection(("127.0.0.1", service.port), timeout=2))
        deadline = time.monotonic() + 10
        while "out of file descriptors" not in service.output():
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
    finally:
        for conn in conns:
            conn.close()
    try:
        time.sleep(0.5)
        metrics = _scrape(service.port)
        assert _metric(metrics, "sessions_fds_exhausted_total") >= 1
        assert _metric(metrics, "process_max_fds") == 96
        assert _metric(metrics, "process_open_fds") > 0
        # At most one line in ten seconds however long it lasts.
        assert len(re.findall("out of file descriptors", service.output())) == 1
    finally:
        service.stop(signal.SIGTERM)


# --- idempotent `new` ----------------------------------------------------------------


# Every idempotency_conflict is said alike: a sentence that says to use a new key.
_A_SENTENCE = re.compile(r"[A-Z].*; use a new key\.")


async def test_a_repeated_new_with_the_same_key_answers_the_same_session(client, user_id):
    params = {"user_id": str(user_id), "ip": "192.0.2.7"}
    key = {"Idempotency-Key": "sign-in-7f3a"}
    first = await call(client, "/new", "POST", params=params, headers=key, json={"device": "phone"})
    again = await call(client, "/new", "POST", params=params, headers=key, json={"device": "phone"})
    assert first[0] == again[0] == 200
    assert again[1]["data"] == first[1]["data"]
    status, body = await call(client, "/user", params={"id": str(user_id)})
    assert [s["token"] for s in body["data"]] == [first[1]["data"]["token"]]
    # The same key with anything else different is a conflict, and opens nothing.
    for other in (
        {"params": {**params, "ip": "192.0.2.8"}, "json": {"device": "phone"}},
        {"params": {**params, "ttl": "60"}, "json": {"device": "phone"}},
        {"params": params, "json": {"device": "tablet"}},
    ):
        status, body = await call(client, "/new", "POST", headers=key, **other)
        assert (status, body["code"]) == (409, "idempotency_conflict"), other
        assert _A_SENTENCE.fullmatch(body["message"]) and "new key" in body["message"], body
    status, body = await call(client, "/user", params={"id": str(user_id)})
    assert len(body["data"]) == 1
    # A key is its user's: another user's `new` with it opens that user's own session, and
    # repeated answers that one.
    other = {"user_id": str(user_id + 1), "ip": "192.0.2.7"}
    theirs = await call(client, "/new", "POST", params=other, headers=key, json={"device": "phone"})
    again = await call(client, "/new", "POST", params=other, headers=key, json={"device": "phone"})
    assert theirs[0] == again[0] == 200 and again[1]["data"] == theirs[1]["data"], theirs
    assert theirs[1]["data"]["token"] != first[1]["data"]["token"]


async def test_without_a_key_every_new_opens_a_session(client, user_id):
    first = await new_session(client, user_id)
    second = await new_session(client, user_id)
    assert first["token"] != second["token"]


async def test_a_key_whose_session_ended_is_a_conflict(client, user_id):
    params = {"user_id": str(user_id), "ip": "192.0.2.7"}
    key = {"Idempotency-Key": "k-ended"}
    _, body = await call(client, "/new", params=params, headers=key)
    await call(client, "/del", params={"token": body["data"]["token"]})
    status, body = await call(client, "/new", params=params, headers=key)
    assert (status, body["code"]) == (409, "idempotency_conflict")
    assert "ended" in body["message"] and _A_SENTENCE.fullmatch(body["message"]), body


@pytest.mark.parametrize("key", ["", "x" * 65, "has space", "tab\there", "é"])
async def test_a_bad_idempotency_key_is_refused(client, user_id, key):
    status, body = await call(
        client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.7"}, headers={"Idempotency-Key": key}
    )
    assert (status, body["code"]) == (400, "bad_request")
    assert "Idempotency-Key" in body["message"]


async def test_the_longest_and_widest_keys_are_taken(client, user_id):
    for key in ("x" * 64, "!~", "a"):
        status, _ = await call(
            client,
            "/new",
            params={"user_id": str(user_id), "ip": "192.0.2.7"},
            headers={"Idempotency-Key": key},
        )
        assert status == 200


@pytest.mark.each_release
async def test_a_key_is_remembered_exactly_its_window(serve, tmp_path, user_id):
    at = 1_900_000_000
    async with frozen_tarantool(tmp_path / "t", idle_ttl=86400, at=at) as (instance, admin):
        client = await serve(settings_for(instance, idle_ttl=86400, idempotency_window=600))
        params = {"user_id": str(user_id), "ip": "192.0.2.7"}
        key = {"Idempotency-Key": "windowed"}
        _, first = await call(client, "/new", params=params, headers=key)
        admin.eval(f"require('sessions.clock').freeze({at + 600})")
        _, again = await call(client, "/new", params=params, headers=key)
        assert again["data"]["token"] == first["data"]["token"]
        admin.eval(f"require('sessions.clock').freeze({at + 601})")
        _, later = await call(client, "/new", params=params, headers=key)
        assert later["data"]["token"] != first["data"]["token"]


async def test_a_new_retried_after_503_opens_exactly_one_session(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool, tarantool_timeout=0.3))
    params = {"user_id": str(user_id), "ip": "192.0.2.7"}
    key = {"Idempotency-Key": "retry-after-503"}
    assert fresh_tarantool.pid is not None
    os.kill(fresh_tarantool.pid, signal.SIGSTOP)
    try:
        status, body = await call(client, "/new", params=params, headers=key)
        assert (status, body["code"]) == (503, "storage_unavailable")
    finally:
        os.kill(fresh_tarantool.pid, signal.SIGCONT)
    await asyncio.sleep(0.5)  # the late call, if Tarantool took it, is done by now
    status, body = await call(client, "/new", params=params, headers=key)
    assert status == 200
    status, listed = await call(client, "/user", params={"id": str(user_id)})
    assert [s["token"] for s in listed["data"]] == [body["data"]["token"]]


@pytest.mark.each_release
async def test_the_purge_forgets_a_key_after_its_window(serve, tmp_path, user_id):
    at = 1_900_000_000
    async with frozen_tarantool(tmp_path / "t", idle_ttl=86400, at=at) as (instance, admin):
        client = await serve(settings_for(instance, idle_ttl=86400, idempotency_window=600))
        params = {"user_id": str(user_id), "ip": "192.0.2.7"}
        await call(client, "/new", params=params, headers={"Idempotency-Key": "forgotten"})
        remembered = f"return box.space.idempotency:get('{user_id} forgotten') ~= nil"
        admin.eval(f"require('sessions.clock').freeze({at + 600})")
        await wait_for_purge_passes(admin, 2)
        assert admin.eval(remembered) is True  # its last second
        admin.eval(f"require('sessions.clock').freeze({at + 601})")
        await wait_for_purge_passes(admin, 2)
        assert admin.eval(remembered) is False
