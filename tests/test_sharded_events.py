"""The event feed through a router (SESSIONS_TARANTOOL_MODE=sharded, SESSIONS_EVENTS=on), on
real processes (tests/sharded.py): events stay on the replica set that wrote them, the router
merges every set's page by seq up to the lowest `stable` bound of the sets, and a consumer
walking `after` meets every event exactly once, in seq order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from sessions.buckets import bucket_of_user
from sessions.config import Settings

from .conftest import call, new_session
from .sharded import Cluster, Storage
from .test_webhooks import SECRET, _until, receiver  # noqa: F401 (fixture)

pytestmark = pytest.mark.each_release

# Events written on a set's console in one transaction: 20,000 take the set's counter about
# 2 s past its clock (100 µs ticks, events.lua), as a burst of ends (an /ip/del, the purge)
# does, or a set whose clock is ahead of the others'.
BURST = 20_000


@pytest.fixture
async def cluster(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[Cluster]:
    started = Cluster(tmp_path / "cluster", tarantool_bin)
    try:
        await started.start()
        yield started
    finally:
        await started.stop()


def _settings(cluster: Cluster) -> Settings:
    return cluster.service_settings(events=True)


def _holder_of_bucket(cluster: Cluster, bucket: int) -> int:
    """The index of the storage where `bucket` is active."""
    active = f"local b = box.space._bucket:get({bucket}) return b ~= nil and b.status == 'active'"
    for i, storage in enumerate(cluster.storages):
        if storage.eval(active):
            return i
    raise AssertionError(f"no storage holds bucket {bucket}")


def _holder(cluster: Cluster, user: int) -> int:
    """The index of the storage where `user`'s bucket is active."""
    return _holder_of_bucket(cluster, bucket_of_user(user))


def _users_on(cluster: Cluster, holder: int, count: int, start: int) -> list[int]:
    users, user = [], start
    while len(users) < count:
        if _holder(cluster, user) == holder:
            users.append(user)
        user += 1
    return users


def _stored(storage: Storage, after: int) -> list[int]:
    """The seqs of a storage's events after `after`."""
    found = storage.eval(
        f"local r = {{}} for _, e in box.space.events.index.seq:pairs({{{after}}}, {{iterator = 'GT'}}) "
        "do r[#r + 1] = tostring(e.seq) end return r"
    )
    # Read back as 64-bit cdata: "155649357033984ULL".
    return [int(seq.rstrip("UL")) for seq in found]


async def _page(client: TestClient, after: int, **params: str) -> dict[str, Any]:
    status, body = await call(client, "/events", params={"after": str(after), **params})
    assert status == 200, body
    data: dict[str, Any] = body["data"]
    assert data["missed"] is False
    return data


async def _walk(client: TestClient, after: int, seen: list[dict[str, Any]]) -> int:
    """Every page from `after` until one is empty, into `seen`; the last `next`."""
    while (page := await _page(client, after, limit="1000"))["events"]:
        seen.extend(page["events"])
        after = page["next"]
    return after


def _in_order_once(seen: list[dict[str, Any]]) -> list[int]:
    seqs = [event["seq"] for event in seen]
    assert seqs == sorted(seqs), "an event before a cursor already passed"
    assert len(seqs) == len(set(seqs)), "an event seen twice"
    return seqs


@pytest.mark.timeout(120)
async def test_a_consumer_meets_every_event_once_in_order_while_both_sets_are_written(cluster, serve):
    """Writers open and end sessions of users on both replica sets at once; a consumer long
    polls the feed through the router keeping only `next`. It meets exactly the events the
    storages hold, each once, in increasing seq, with both sets' events interleaved."""
    client = await serve(_settings(cluster))
    start = await _walk(client, 0, [])
    users = [_users_on(cluster, holder, 20, 7_500_000 + 10_000 * holder) for holder in (0, 1)]
    done = asyncio.Event()

    async def writer(mine: list[int]) -> None:
        for user in mine:
            opened = await new_session(client, user)
            await call(client, "/get", params={"token": opened["token"], "ip": "192.0.2.77"})
            await call(client, "/del", params={"token": opened["token"]})

    seen: list[dict[str, Any]] = []

    async def consumer() -> None:
        after = start
        while not done.is_set():
            page = await _page(client, after, limit="7", wait="1")
            seen.extend(page["events"])
            after = page["next"]
        await _walk(client, after, seen)

    reading = asyncio.create_task(consumer())
    await asyncio.gather(*(writer(mine[i::4]) for mine in users for i in range(4)))
    # Past the router's bound of the last write (a few ms on one clock): the consumer's next
    # pages hold everything written.
    await asyncio.sleep(0.5)
    done.set()
    await reading
    seqs = _in_order_once(seen)
    stored = sorted(seq for storage in cluster.storages for seq in _stored(storage, start))
    assert seqs == stored
    assert len(seqs) == 2 * 20 * 3
    holders = [_holder(cluster, event["user_id"]) for event in seen]
    # Interleaved: each set's events are not all before the other's.
    assert holders != sorted(holders) and holders != sorted(holders, reverse=True)
    for user in users[0] + users[1]:
        kinds = [event["kind"] for event in seen if event["user_id"] == user]
        assert kinds == ["opened", "moved", "ended"]


@pytest.mark.timeout(120)
async def test_an_event_a_set_writes_later_never_sorts_before_a_cursor_handed_out(cluster, serve):
    """Set A's counter runs 2 s past its clock (a burst of 20,000 events in one transaction);
    set B then opens a session, whose event numbers by B's clock, below A's burst's end.
    The router serves A's burst only up to B's stable bound, so B's event comes in its
    place and the consumer, which walks to the end before and after, meets it; without the
    bound it would already be past it."""
    client = await serve(_settings(cluster))
    start = await _walk(client, 0, [])
    first, second = _users_on(cluster, 0, 1, 7_600_000)[0], _users_on(cluster, 1, 1, 7_600_000)[0]
    await new_session(client, first)
    cluster.storages[0].eval(
        "local events = require('sessions.events') "
        f"local t = box.space.sessions.index.user:min({{{first}}}) "
        f"box.begin() for _ = 1, {BURST} do events.emit('moved', nil, t) end box.commit()"
    )
    burst_top = max(_stored(cluster.storages[0], start))
    # Its last event is about 2 s ahead of B's clock: not served yet.
    held = await _page(client, burst_top - 1)
    assert (held["events"], held["next"]) == ([], burst_top - 1), "served above another set's stable bound"
    # A long poll there answers once the other set's clock has passed it (about 2 s).
    started = time.monotonic()
    poll = asyncio.create_task(_page(client, burst_top - 1, wait="10"))
    answered: list[float] = []
    poll.add_done_callback(lambda _: answered.append(time.monotonic()))
    seen: list[dict[str, Any]] = []
    after = await _walk(client, start, seen)
    await new_session(client, second)
    deadline = time.monotonic() + 30
    while after < burst_top:
        assert time.monotonic() < deadline, "the feed did not reach the burst's end"
        after = await _walk(client, after, seen)
        await asyncio.sleep(0.1)
    # B's event, if the walks took past the burst's end (B's clock passed it meanwhile).
    await asyncio.sleep(0.1)
    await _walk(client, after, seen)
    seqs = _in_order_once(seen)
    polled = await poll
    # Woken by the clock passing the burst's end, with its event, before its 10 s wait ran
    # out (the walks beside it share this process's loop: the time of the whole test is the
    # machine's, 8.8 s once on 2.6 under the full suite).
    assert polled["events"][0]["seq"] == burst_top
    assert answered[0] - started < 10
    assert [event["kind"] for event in seen if event["user_id"] == second] == ["opened"]
    stored = sorted(seq for storage in cluster.storages for seq in _stored(storage, start))
    assert seqs == stored and len(seqs) == BURST + 2


async def test_a_bucket_move_moves_no_event_and_writes_none(cluster, serve):
    """Events are a log, not session rows: `events` has no bucket_id index, so vshard moves
    none of them with a bucket, and the move writes none; the user's next event comes from
    its new set, after its earlier ones."""
    client = await serve(_settings(cluster))
    for storage in cluster.storages:
        sharded = storage.eval(
            "local r = {} for _, s in pairs(require('vshard').storage.sharded_spaces()) do "
            "r[#r + 1] = s.name end table.sort(r) return r"
        )
        assert sharded == ["cluster_state", "idempotency", "sessions"]
    start = await _walk(client, 0, [])
    user = _users_on(cluster, 0, 1, 7_700_000)[0]
    opened = await new_session(client, user)
    counts = [len(_stored(storage, 0)) for storage in cluster.storages]
    bucket, target = bucket_of_user(user), cluster.storages[1].replicaset
    moved = cluster.storages[0].eval(
        f"local ok, err = require('vshard').storage.bucket_send({bucket}, '{target}', {{timeout = 10}}) "
        "return ok == true or tostring(err)"
    )
    assert moved is True
    assert _holder(cluster, user) == 1
    deadline = time.monotonic() + 10
    while cluster.storages[0].eval(f"return box.space.sessions.index.user:min({{{user}}}) ~= nil"):
        assert time.monotonic() < deadline, "the sent bucket's rows were not collected"
        await asyncio.sleep(0.1)
    assert [len(_stored(storage, 0)) for storage in cluster.storages] == counts
    status, body = await call(client, "/del", params={"token": opened["token"]})
    assert status == 200, body
    await asyncio.sleep(0.1)
    seen: list[dict[str, Any]] = []
    await _walk(client, start, seen)
    _in_order_once(seen)
    assert [(event["kind"], event["reason"]) for event in seen] == [("opened", None), ("ended", "del")]
    assert _stored(cluster.storages[1], start) == [seen[1]["seq"]]


async def test_a_lost_replica_set_stops_the_feed_rather_than_skip_its_events(cluster, serve):
    """With a replica set's master down, /events answers 503 storage_unavailable (its events
    would be skipped otherwise), a long poll too; once it is back, the feed goes on from the
    same `next` with every event."""
    client = await serve(_settings(cluster))
    start = await _walk(client, 0, [])
    users = [_users_on(cluster, holder, 1, 7_800_000)[0] for holder in (0, 1)]
    for user in users:
        await new_session(client, user)
    await cluster.storages[1].process.stop()
    for params in ({}, {"wait": "2"}):
        status, body = await call(client, "/events", params={"after": str(start), **params})
        assert (status, body["code"]) == (503, "storage_unavailable"), body
    await cluster.storages[1].process.start()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while True:
        status, body = await call(client, "/events", params={"after": str(start)})
        if status == 200:
            break
        assert time.monotonic() < deadline and body["code"] == "storage_unavailable", body
        await asyncio.sleep(0.2)
    await _walk(client, start, seen)
    _in_order_once(seen)
    assert sorted(event["user_id"] for event in seen) == sorted(users)


def _lease_on(cluster: Cluster) -> list[bool]:
    """Whether each storage keeps the webhook lease entry."""
    return [
        bool(storage.eval("return box.space.cluster_state:get('webhook') ~= nil"))
        for storage in cluster.storages
    ]


@pytest.mark.timeout(120)
async def test_webhooks_deliver_every_sets_events_once_in_order_with_one_lease_that_moves(
    cluster,
    serve,
    receiver,  # noqa: F811 (the fixture)
):
    """The lease and the delivered seq are one row of the cluster, kept with bucket 1: the
    worker delivers the events of both sets once each, in seq order, from the router's feed;
    when bucket 1 moves to the other set, the row goes with it and delivery goes on where it
    was, with no repeat."""
    await receiver.start()
    settings = _settings(cluster).model_copy(
        update={
            "webhook_url": SecretStr(receiver.url),
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout": 2,
            "webhook_backoff": 0.05,
            "webhook_backoff_max": 0.2,
        }
    )
    client = await serve(settings)
    deadline = time.monotonic() + 10
    while _lease_on(cluster) == [False, False]:
        assert time.monotonic() < deadline, "no worker took the lease"
        await asyncio.sleep(0.05)
    holder = _holder_of_bucket(cluster, 1)
    assert _lease_on(cluster) == [i == holder for i in range(2)]
    users = [user for holder_set in (0, 1) for user in _users_on(cluster, holder_set, 5, 7_900_000)]

    async def write(chosen: list[int]) -> None:
        for user in chosen:
            opened = await new_session(client, user)
            await call(client, "/del", params={"token": opened["token"]})

    await write(users)
    expected = 2 * len(users)
    await _until(lambda: len(receiver.acknowledged) >= expected, what="the events were not delivered")
    other = 1 - holder
    moved = cluster.storages[holder].eval(
        f"local ok, err = require('vshard').storage.bucket_send(1, '{cluster.storages[other].replicaset}', "
        "{timeout = 10}) return ok == true or tostring(err)"
    )
    assert moved is True
    later = [user for holder_set in (0, 1) for user in _users_on(cluster, holder_set, 5, 7_950_000)]
    await write(later)
    expected += 2 * len(later)
    await _until(lambda: len(receiver.acknowledged) >= expected, what="delivery stopped after the move")
    await asyncio.sleep(0.5)
    seqs = [event["seq"] for event in receiver.acknowledged]
    assert seqs == sorted(set(seqs)) and len(seqs) == expected, "a repeat or out of order"
    assert sorted({event["user_id"] for event in receiver.acknowledged}) == sorted(users + later)
    assert len(receiver.ids) == len(set(receiver.ids))
    deadline = time.monotonic() + 10
    while _lease_on(cluster) != [i == other for i in range(2)]:
        assert time.monotonic() < deadline, "the lease did not move with its bucket"
        await asyncio.sleep(0.1)
