"""The event feed (SESSIONS_EVENTS=on): every change to a session once, in order, with its
reason, paged by `after`, long-polled by `wait`, across a kill -9 of Tarantool. The tests
taking `feed` run on a fresh instance and through a router of a cluster of two replica sets
(tests/sharded.py; the cluster's own checks are in test_sharded_events.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sessions.config import Settings
from sessions.console import Console
from sessions.limits import EVENTS_WAIT_MAX, LIST_MAX

from .conftest import (
    call,
    frozen_tarantool,
    make_instance,
    new_session,
    settings_for,
    wait_for_purge_passes,
)
from .service import Service
from .sharded import MODES, Cluster, sharded_cluster  # noqa: F401 (fixture: both modes)
from .test_edges import _fill_memory

# What these tests check is done by Tarantool: they run on each release (tests/conftest.py).
pytestmark = pytest.mark.each_release

T0 = 1_700_000_000


@pytest.fixture(params=MODES)
def feed(request: pytest.FixtureRequest) -> Settings:
    """Settings with the feed on: a fresh instance's, or the shared cluster's router's."""
    if request.param == "instance":
        return settings_for(request.getfixturevalue("fresh_tarantool"), events=True)
    cluster: Cluster = request.getfixturevalue("sharded_cluster")
    return cluster.service_settings(events=True)


def _storages(request: pytest.FixtureRequest, settings: Settings) -> list[Any]:
    """Consoles of the instance `feed` uses, or of every storage of the cluster."""
    if settings.tarantool_mode == "sharded":
        cluster: Cluster = request.getfixturevalue("sharded_cluster")
        return list(cluster.storages)
    admin = Console(request.getfixturevalue("fresh_tarantool").console_path)
    request.addfinalizer(admin.close)
    return [admin]


def _event_count(storages: list[Any]) -> int:
    return sum(int(storage.eval("return box.space.events:len()")) for storage in storages)


async def _events(client: TestClient, after: int = 0, **params: Any) -> dict[str, Any]:
    status, body = await call(client, "/events", params={"after": str(after), **params})
    assert status == 200, body
    return body["data"]


def _changes(page: dict[str, Any], user_id: int) -> list[str]:
    return [
        event["kind"] + (f"/{event['reason']}" if event["reason"] else "")
        for event in page["events"]
        if event["user_id"] == user_id
    ]


async def test_every_change_is_an_event_in_order_never_a_token(serve, feed, user_id):
    client = await serve(feed)
    start = (await _events(client))["next"]
    _, opened = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1", "with": "id"})
    made = opened["data"]
    await call(client, "/get", params={"token": made["token"], "ip": "192.0.2.2"})
    await call(client, "/get", params={"token": made["token"], "ip": "192.0.2.2"})  # no move
    _, rotated = await call(client, "/rotate", params={"token": made["token"]})
    await call(client, "/del", params={"token": rotated["data"]["token"]})
    await new_session(client, user_id, "192.0.2.3")
    await call(client, "/user/del", params={"id": str(user_id)})
    await new_session(client, user_id, "192.0.2.4")
    await call(client, "/ip/del", params={"ip": "192.0.2.4"})
    _, by_id = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.5", "with": "id"})
    await call(client, "/session/del", params={"id": by_id["data"]["id"]})

    _, body = await call(client, "/events", params={"after": str(start)})
    page = body["data"]
    assert _changes(page, user_id) == [
        "opened",
        "moved",
        "rotated",
        "ended/del",
        "opened",
        "ended/user/del",
        "opened",
        "ended/ip/del",
        "opened",
        "ended/session/del",
    ]
    seqs = [event["seq"] for event in page["events"]]
    if feed.tarantool_mode == "instance":
        # Without gaps on one instance; over a cluster, seqs carry their set and clock
        # (docs/api.md), so only ever greater.
        assert seqs == list(range(start + 1, start + 1 + len(seqs)))
    assert seqs == sorted(set(seqs)) and seqs[0] > start
    assert page["next"] == seqs[-1] and page["missed"] is False
    assert [event["ip"] for event in page["events"]][:2] == ["192.0.2.1", "192.0.2.2"]
    assert set(page["events"][0]) == {"seq", "time", "kind", "reason", "session", "user_id", "ip"}
    # The session's id, the same across its rotation; another session, another id.
    assert [event["session"] for event in page["events"][:4]] == [made["id"]] * 4
    assert len({event["session"] for event in page["events"]}) == 4
    assert page["events"][-1]["session"] == by_id["data"]["id"]
    for token in (made["token"], rotated["data"]["token"]):
        assert token not in str(body)
    # Paged one at a time from the same start: the same events.
    after, walked = start, []
    while True:
        one = await _events(client, after, limit="1")
        if not one["events"]:
            assert one["next"] == after
            break
        assert len(one["events"]) == 1
        walked += one["events"]
        after = one["next"]
    assert walked == page["events"]


async def test_ids_as_text_and_bad_parameters_are_4xx(serve, feed, user_id):
    client = await serve(feed)
    await new_session(client, user_id)
    status, body = await call(client, "/events", headers={"X-User-Id-Format": "string"})
    assert status == 200 and body["data"]["events"][-1]["user_id"] == str(user_id)
    bad = {
        "after": ["-1", "x", "1.5", str(2**63), " 1", "", "1e3"],
        "limit": ["0", str(LIST_MAX + 1), "x", ""],
        "wait": ["-1", str(EVENTS_WAIT_MAX + 1), "0.5", "x", ""],
    }
    codes = {"after": "invalid_cursor", "limit": "invalid_limit", "wait": "invalid_wait"}
    for name, values in bad.items():
        for value in values:
            status, body = await call(client, "/events", params={name: value})
            assert (status, body["code"]) == (400, codes[name]), (name, value)
        status, body = await call(client, f"/events?{name}=1&{name}=1")
        assert (status, body["code"]) == (400, codes[name]), name
    # The exact bounds are accepted.
    for params in ({"after": str(2**63 - 1)}, {"limit": str(LIST_MAX)}, {"limit": "1"}, {"wait": "0"}):
        status, _ = await call(client, "/events", params=params)
        assert status == 200, params


async def test_the_feed_off_writes_nothing_and_says_so(serve, feed, user_id, request):
    storages = _storages(request, feed)
    before = _event_count(storages)
    client = await serve(feed.model_copy(update={"events": False}))
    await new_session(client, user_id)
    status, body = await call(client, "/events")
    assert (status, body["code"]) == (404, "not_found")
    assert "SESSIONS_EVENTS" in body["message"]
    assert _event_count(storages) == before


async def test_a_long_poll_answers_when_an_event_comes(serve, feed, user_id):
    client = await serve(feed)
    head = (await _events(client))["next"]
    polls = [asyncio.create_task(_events(client, head, wait="30")) for _ in range(3)]
    await asyncio.sleep(0.2)  # they are waiting (or not yet: either way they must see it)
    started = time.monotonic()
    await new_session(client, user_id)
    pages = await asyncio.gather(*polls)
    assert time.monotonic() - started < 5
    for page in pages:
        assert _changes(page, user_id) == ["opened"]
    # Nothing comes: the poll ends after `wait` with an empty page.
    started = time.monotonic()
    page = await _events(client, pages[0]["next"], wait="1")
    assert page["events"] == [] and page["next"] == pages[0]["next"]
    assert 0.9 < time.monotonic() - started < 5


async def test_long_polls_hold_no_turn_of_bulk_work(serve, feed, user_id, request):
    """Many waiters, two bulk turns: listings still answer at once, and Tarantool serves
    one wait for this process, not one per waiter (through a router, one per replica set)."""
    client = await serve(feed.model_copy(update={"bulk_concurrency": 2, "bulk_queue": 0}))
    await new_session(client, user_id)
    head = (await _events(client))["next"]
    polls = [asyncio.create_task(_events(client, head, wait="30")) for _ in range(50)]
    await asyncio.sleep(0.5)
    for _ in range(5):
        status, body = await call(client, "/user", params={"id": str(user_id)})
        assert status == 200, body
    for storage in _storages(request, feed):
        assert storage.eval("return require('sessions.events').stats().waiting") == 1
    await new_session(client, user_id)
    for page in await asyncio.gather(*polls):
        assert _changes(page, user_id) == ["opened"]


@pytest.mark.parametrize("rule", ["idle", "cap", "lifetime"])
async def test_the_purge_the_cap_and_the_lifetime_each_write_their_event(serve, tmp_path, rule):
    """Time moves by the frozen clock, not by sleeping."""
    ttl = 100
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=ttl, at=T0) as (instance, admin):
        extra = {"max_per_user": 1} if rule == "cap" else {"max_lifetime": 50} if rule == "lifetime" else {}
        client = await serve(settings_for(instance, idle_ttl=ttl, events=True, **extra))
        first = await new_session(client, 9)
        if rule == "cap":
            await new_session(client, 9)
            expected = ["opened", "ended/cap", "opened"]
        else:
            # Live up to and including its last second: the purge leaves it there.
            last = T0 + (ttl if rule == "idle" else 50)
            admin.eval(f"require('sessions.clock').freeze({last})")
            await wait_for_purge_passes(admin, 2)
            assert _changes(await _events(client), 9) == ["opened"]
            admin.eval(f"require('sessions.clock').freeze({last + 1})")
            await wait_for_purge_passes(admin, 2)
            expected = ["opened", f"ended/{rule}"]
        page = await _events(client)
        assert _changes(page, 9) == expected
        ended = [event for event in page["events"] if event["kind"] == "ended"]
        assert ended[0]["ip"] == first["ip"] and ended[0]["time"] == (T0 if rule == "cap" else last + 1)


async def _head(client: TestClient) -> int:
    after = 0
    while (page := await _events(client, after, limit="1000"))["events"]:
        after = page["next"]
    return after


async def test_with_memory_full_sessions_still_end_and_consumers_are_told(serve, tmp_path, user_id):
    """Ending sessions is how memory comes back: with it full, `del` and the purge end them
    without their events rather than not at all, and a consumer behind is told `missed`."""
    instance = make_instance(tmp_path / "tarantool", memory=64 * 2**20, idle_ttl=60)
    await instance.start()
    admin = Console(instance.console_path)
    try:
        client = await serve(settings_for(instance, idle_ttl=60, events=True))
        admin.eval("require('sessions.clock').freeze(1700000000)")
        doomed = await new_session(client, user_id)
        start = await _head(client)
        filled = _fill_memory(admin, 1700000000)
        assert filled > 100
        status, body = await call(client, "/del", params={"token": doomed["token"]})
        assert status == 200, body
        # All lapse: the purge ends them, and memory comes back.
        admin.eval("require('sessions.clock').freeze(1700000061)")
        deadline = time.monotonic() + 30
        while admin.eval("return box.space.sessions:len()") > 0:
            assert time.monotonic() < deadline, "the purge did not finish"
            await asyncio.sleep(0.1)
        lost = admin.eval("return require('sessions.events').stats().lost")
        first = await _events(client, start)
        walked, after = [], start
        while (page := await _events(client, after, limit="1000"))["events"]:
            walked += page["events"]
            after = page["next"]
        ends = [event for event in walked if event["kind"] == "ended"]
        # Every end is in the feed or counted as lost, and a consumer is told when one is.
        assert len(ends) + lost == filled + 1
        assert first["missed"] is (lost > 0)
        await new_session(client, user_id + 1)
        page = await _events(client, after)
        assert _changes(page, user_id + 1) == ["opened"]
    finally:
        admin.close()
        await instance.stop()


@pytest.mark.timeout(180)
def test_a_consumer_misses_nothing_and_sees_nothing_twice_across_kill_9(tmp_path):
    """A writer opens and ends sessions, one user each; a consumer pages the feed keeping only
    its last seq; Tarantool is killed with -9 twice meanwhile. Every acknowledged change is in
    the feed exactly once, in order; an unacknowledged one at most once; the seqs the consumer
    sees follow each other without a gap or a repeat."""
    service = Service(tmp_path / "data", SESSIONS_EVENTS="on", SESSIONS_WAL_MODE="write")
    acknowledged: list[tuple[int, str]] = []
    attempted: list[tuple[int, str]] = []
    stop = threading.Event()

    def writer() -> None:
        user = 1
        while not stop.is_set():
            user += 1
            for path, kind in (
                (f"/new?user_id={user}&ip=192.0.2.1", "opened"),
                (f"/user/del?id={user}", "ended"),
            ):
                attempted.append((user, kind))
                try:
                    status, body = service.request(path)
                except OSError:
                    continue
                if status == 200 and (kind == "opened" or body["data"]["deleted"] == 1):
                    acknowledged.append((user, kind))

    seen: list[dict[str, Any]] = []

    def consume(after: int) -> int:
        status, body = service.request(f"/events?after={after}&limit=50&wait=1")
        if status != 200:
            assert body["code"] in ("storage_unavailable", "overloaded"), body
            return after
        assert body["data"]["missed"] is False
        seen.extend(body["data"]["events"])
        return int(body["data"]["next"])

    thread = threading.Thread(target=writer)
    try:
        thread.start()
        after = 0
        for _ in range(2):
            target = len(acknowledged) + 200
            while len(acknowledged) < target:
                after = consume(after)
            killed = service.tarantool_pid
            os.kill(killed, signal.SIGKILL)
            target, deadline = len(acknowledged) + 200, time.monotonic() + 60
            while len(acknowledged) < target:
                assert time.monotonic() < deadline, "Tarantool did not come back"
                after = consume(after)
            assert service.tarantool_pid != killed
        stop.set()
        thread.join()
        while (after := consume(after)) != seen[-1]["seq"] or len(seen) < len(acknowledged):
            pass
        # One more empty page: nothing was left.
        assert consume(after) == after
    finally:
        stop.set()
        thread.join()
        service.stop(signal.SIGTERM)

    seqs = [event["seq"] for event in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat"
    changes = [(event["user_id"], event["kind"]) for event in seen]
    assert len(changes) == len(set(changes)), "a change seen twice"
    assert set(acknowledged) <= set(changes), "an acknowledged change missing"
    assert set(changes) <= set(attempted)
    # Each user's end comes after its opening.
    position = {change: i for i, change in enumerate(changes)}
    for user, kind in changes:
        if kind == "ended":
            assert position[(user, "opened")] < position[(user, "ended")]
    assert len(acknowledged) >= 800
