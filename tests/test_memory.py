"""What a client can make the service hold is bounded: listing answers (until written, their
JSON within the page budget), request bodies (counted before they are read), connections
(idle ones closed first) and the descriptors they take. Real processes, scaled-down
budgets, time through settings."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from .conftest import call, lua_bulk_insert, lua_session
from .service import Service, free_port
from .test_overload import _metric, _scrape

NOW = "require('sessions.clock').now()"


# --- pages: the JSON that is sent is what the budget counts --------------------------------


async def test_a_page_of_fat_json_stays_within_the_page_budget(serve, settings, console, user_id):
    # Control characters take one byte stored and six in JSON: 40 sessions of 5,000 of them
    # are 5 KB each in Tarantool and 30 KB each as sent.
    budget = 64 * 2**10
    client = await serve(settings.model_copy(update={"page_max_bytes": budget}))
    console.eval(
        lua_bulk_insert(
            40,
            lua_session(
                user_id, "'192.0.2.45'", "require('sessions.clock').now()", "{x = string.rep('\\1', 5000)}"
            ),
        )
    )
    seen: list[str] = []
    path: str | None = f"/user?id={user_id}"
    pages: list[tuple[int, list[dict[str, object]]]] = []
    while path is not None:
        response = await client.get(path)
        body = await response.read()
        assert response.status == 200
        pages.append((len(body), orjson.loads(body)["data"]))
        path = response.links["next"]["url"].path_qs if "next" in response.links else None
    for (size, _), following in itertools.pairwise(pages):
        assert size <= budget
        # The most that fit: the next page's first session would not have.
        assert size + 1 + len(orjson.dumps(following[1][0])) > budget
    for _, sessions in pages:
        seen += [str(session["token"]) for session in sessions]
    assert len(seen) == len(set(seen)) == 40


async def test_a_session_larger_than_the_page_budget_is_a_page_of_its_own(serve, settings, console, user_id):
    budget = 64 * 2**10
    client = await serve(settings.model_copy(update={"page_max_bytes": budget}))
    console.eval(
        lua_bulk_insert(
            2,
            lua_session(
                user_id, "'192.0.2.46'", "require('sessions.clock').now()", "{x = string.rep('\\1', 12000)}"
            ),
        )
    )
    status, body = await call(client, "/user", params={"id": str(user_id)})
    assert status == 200
    assert len(body["data"]) == 1


# --- real processes -----------------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(**kwargs: object) -> Service:
        service = Service(tmp_path / f"var{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop(signal.SIGTERM)


def _wait(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _closed(conn: socket.socket) -> bool:
    """Whether the service closed this connection (it sent nothing before)."""
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        conn.setblocking(True)


def _new(service: Service, user_id: int, extra: bytes) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", service.port)) as conn:
        conn.sendall(
            f"POST /new?user_id={user_id}&ip=192.0.2.9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(extra)}\r\n\r\n".encode()
            + extra
        )
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    answer: dict[str, object] = json.loads(body)
    assert head.startswith(b"HTTP/1.1 200"), answer
    return answer


def _get_ok(service: Service) -> None:
    token = "6f9619ff-8b86-4011-b42d-00cf4fc964ff"
    status, body = service.request(f"/get?token={token}")
    assert (status, body["code"]) == (404, "token_not_found")


def test_slow_readers_hold_the_answers_budget_and_are_cut(services):
    page = 8 * 2**20
    service = services(
        SESSIONS_OPS_PORT=str(free_port()),
        SESSIONS_PAGE_MAX_BYTES=str(page),
        SESSIONS_ANSWER_MEMORY=str(2 * page),
        SESSIONS_SEND_TIMEOUT="1.5",
        SESSIONS_QUEUE_TIMEOUT="0.3",
    )
    ops = int(service.output().split("operational endpoints on http://127.0.0.1:")[1].split()[0])
    extra = b'{"x":"' + b"y" * 60000 + b'"}'
    for _ in range(150):  # 9 MB: a full page, and more
        _new(service, 77, extra)
    before = _rss_mb(service.process.pid)
    readers = []
    for _ in range(2):
        reader = socket.socket()
        # A reader that takes nothing: the service, not the kernel, would hold the answer.
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", service.port))
        reader.sendall(b"GET /user?id=77 HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(reader)
    try:
        _wait(
            lambda: _metric(_scrape(ops), "sessions_memory_held_bytes", budget="answers") > page,
            "the slow readers hold their answers",
        )
        held = _metric(_scrape(ops), "sessions_memory_held_bytes", budget="answers")
        # Two pages, each its JSON's size: a third does not fit, and is shed after its wait.
        assert 2 * page - 2 * 60100 < held <= 2 * page
        status, body = service.request("/user?id=77")
        assert (status, body["code"]) == (503, "overloaded")
        _get_ok(service)
        # Cut after SESSIONS_SEND_TIMEOUT without progress; the budget is free again.
        _wait(
            lambda: _metric(_scrape(ops), "sessions_connections_closed_total", reason="slow_reader") == 2,
            "the slow readers are cut",
        )
        assert _metric(_scrape(ops), "sessions_memory_held_bytes", budget="answers") == 0
        # What the answers took is given back to the system (a few seconds at most).
        _wait(lambda: _rss_mb(service.process.pid) < before + 32, f"RSS back near {before} MB")
        status, body = service.request("/user?id=77&limit=1")
        assert status == 200
        assert _metric(_scrape(ops), "sessions_shed_total", work="bulk", reason="memory") == 1
    finally:
        for reader in readers:
            reader.close()


def _stalled_body(service: Service, length: int) -> socket.socket:
    """A `new` whose body never comes past its first bytes."""
    conn = socket.create_connection(("127.0.0.1", service.port))
    conn.sendall(
        f"POST /new?user_id=5&ip=192.0.2.9 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n{{".encode()
    )
    return conn


def test_bodies_count_against_their_budget_before_they_are_read(services):
    limit = 64 * 2**10
    ops_port = free_port()
    service = services(SESSIONS_OPS_PORT=str(ops_port), SESSIONS_BODY_MEMORY=str(4 * limit))

    def held() -> float:
        return _metric(_scrape(ops_port), "sessions_memory_held_bytes", budget="bodies")

    stalled = [_stalled_body(service, limit) for _ in range(3)]
    try:
        _wait(lambda: held() == 3 * limit, "three bodies are counted at their length")
        # Exactly the budget: the fourth body fits.
        exact = b'{"x":"' + b"y" * (limit - 8) + b'"}'
        assert len(exact) == limit
        _new(service, 6, exact)
        stalled.append(_stalled_body(service, limit))
        _wait(lambda: held() == 4 * limit, "four bodies fill the budget")
        # One byte more does not: answered at once, the body never read, the connection closed.
        status, body, elapsed = service.raw(
            b"POST /new?user_id=6&ip=192.0.2.9 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n"
        )
        assert (status, body["code"]) == (503, "overloaded")
        assert elapsed < 1
        # Requests without a body are not held up.
        _get_ok(service)
        assert _metric(_scrape(ops_port), "sessions_shed_total", work="check", reason="memory") == 1
    finally:
        for conn in stalled:
            conn.close()
    _wait(lambda: held() == 0, "the budget comes back as the stalled clients leave")
    _new(service, 6, b'{"a":1}')


# --- connections and descriptors ------------------------------------------------------------


def test_the_descriptor_limit_is_raised_to_the_hard_limit_and_logged(services):
    ops_port = free_port()
    service = services(fd_limit=200, fd_hard_limit=300, SESSIONS_OPS_PORT=str(ops_port))
    assert "file descriptors: soft limit 300 (raised from 200), hard limit 300; at most 236 connections" in (
        service.output()
    )
    metrics = _scrape(ops_port)
    assert _metric(metrics, "process_max_fds") == 300
    assert _metric(metrics, "sessions_connections_max") == 236


def test_an_idle_flood_closes_the_longest_idle_and_a_newcomer_gets_through(services):
    ops_port = free_port()
    cap = 20
    service = services(SESSIONS_OPS_PORT=str(ops_port), SESSIONS_MAX_CONNECTIONS=str(cap))
    idle = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(cap)]
    try:
        _wait(lambda: _metric(_scrape(ops_port), "sessions_connections") == cap, "all are open")
        assert not any(_closed(conn) for conn in idle)
        # One more than the cap: the one idle longest goes, and only it.
        _get_ok(service)
        _wait(lambda: _closed(idle[0]), "the oldest idle connection is closed")
        assert not any(_closed(conn) for conn in idle[1:])
        # A flood of a hundred more: each newcomer still gets through.
        idle += [socket.create_connection(("127.0.0.1", service.port)) for _ in range(100)]
        for _ in range(5):
            _get_ok(service)
        metrics = _scrape(ops_port)
        assert _metric(metrics, "sessions_connections") <= cap
        assert _metric(metrics, "sessions_connections_closed_total", reason="idle") >= 101
        assert _metric(metrics, "sessions_connections_closed_total", reason="refused") == 0
    finally:
        for conn in idle:
            conn.close()


def test_with_no_idle_connection_a_newcomer_is_closed_at_once(services):
    ops_port = free_port()
    service = services(SESSIONS_OPS_PORT=str(ops_port), SESSIONS_MAX_CONNECTIONS="3")
    # Three requests at work (their bodies still coming): none is idle.
    busy = [_stalled_body(service, 100) for _ in range(3)]
    try:
        _wait(
            lambda: _metric(_scrape(ops_port), "sessions_memory_held_bytes", budget="bodies") == 300, "busy"
        )
        status, _, _ = service.raw(b"GET /get?token=x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status is None
        assert _metric(_scrape(ops_port), "sessions_connections_closed_total", reason="refused") == 1
        assert not any(_closed(conn) for conn in busy)
    finally:
        for conn in busy:
            conn.close()
    _wait(lambda: _metric(_scrape(ops_port), "sessions_connections") == 0, "the busy ones left")
    _get_ok(service)
    # Refused quietly: aiohttp's task for the newcomer once failed an assertion and logged a
    # traceback for every connection refused.
    assert "Traceback" not in service.output()


def _poll(service: Service) -> socket.socket:
    """A long poll of /events waiting at the feed's head (30 s), its answer unread."""
    conn = socket.create_connection(("127.0.0.1", service.port))
    conn.sendall(b"GET /events?after=1000000000000&wait=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    return conn


def test_long_polls_at_the_cap_make_room_for_a_newcomer(services):
    """A waiting /events poll is at work, never closed as idle: with the cap full of them,
    the one waiting longest answers at once (an empty page, as at the end of its wait) and
    closes, and the newcomer is served. Sixty polls on a cap of fifty locked every other
    client out before."""
    ops_port = free_port()
    service = services(SESSIONS_OPS_PORT=str(ops_port), SESSIONS_MAX_CONNECTIONS="3", SESSIONS_EVENTS="on")
    polls = [_poll(service)]
    _wait(lambda: _metric(_scrape(ops_port), "sessions_connections") == 1, "the first poll is open")
    polls += [_poll(service) for _ in range(2)]
    try:
        _wait(lambda: _metric(_scrape(ops_port), "sessions_connections") == 3, "three polls wait")
        started = time.monotonic()
        _get_ok(service)
        assert time.monotonic() - started < 5
        # The oldest poll answered its empty page and closed; the others still wait.
        polls[0].settimeout(5)
        answer = b""
        while chunk := polls[0].recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
        assert json.loads(body)["data"] == {"events": [], "next": 1000000000000, "missed": False}
        assert not any(_closed(conn) for conn in polls[1:])
        metrics = _scrape(ops_port)
        assert _metric(metrics, "sessions_connections_closed_total", reason="long_poll") == 1
        assert _metric(metrics, "sessions_connections_closed_total", reason="refused") == 0
    finally:
        for conn in polls:
            conn.close()
