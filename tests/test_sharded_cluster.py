"""The sharded cluster as an operator meets it (issue #29): a replica set added while a writer
and a reader run, the buckets' split of many users' sessions, a storage killed. Real
processes (tests/sharded.py), the service in SESSIONS_TARANTOOL_MODE=sharded."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from sessions.buckets import bucket_of_token
from sessions.config import Settings

from .conftest import PASSWORD, Serve, call
from .sharded import Cluster

pytestmark = pytest.mark.each_release

# The rebalancer's pace: every bucket a set receives in one round (vshard's default, 100,
# would take a 10 s pause per hundred), sent 15 at a time.
_FAST = {"rebalancer_max_receiving": 4096, "rebalancer_max_sending": 15}


def _settings(cluster: Cluster) -> Settings:
    assert cluster.router is not None
    return Settings(
        tarantool=f"unix/:{cluster.router.socket_path}", tarantool_password=PASSWORD, tarantool_mode="sharded"
    )


@pytest.fixture
async def cluster(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[Cluster]:
    started = Cluster(tmp_path / "cluster", tarantool_bin, vshard=dict(_FAST))
    try:
        await started.start()
        yield started
    finally:
        await started.stop()


@dataclass
class Traffic:
    """A writer of /new and a reader of /get of the tokens the writer had acknowledged, run
    until stopped: what each saw."""

    client: TestClient
    acknowledged: list[str] = field(default_factory=list)
    writes: collections.Counter[int] = field(default_factory=collections.Counter)
    reads: collections.Counter[str] = field(default_factory=collections.Counter)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, first_user: int) -> None:
        user = first_user
        while not self.stopping.is_set():
            user += 1
            status, body = await call(self.client, "/new", params={"user_id": str(user), "ip": "192.0.2.40"})
            self.writes[status] += 1
            if status == 200:
                self.acknowledged.append(body["data"]["token"])

    async def read(self) -> None:
        turn = 0
        while not self.stopping.is_set():
            if not self.acknowledged:
                await asyncio.sleep(0)
                continue
            token = self.acknowledged[turn % len(self.acknowledged)]
            turn += 1
            status, body = await call(self.client, "/get", params={"token": token})
            self.reads["200" if status == 200 else f"{status} {body['code']}"] += 1


async def test_a_replica_set_added_under_traffic_takes_buckets_and_loses_no_session(
    cluster: Cluster, serve: Serve
) -> None:
    """docs/operations.md's "Adding a replica set" while a writer opens sessions and a
    reader reads the acknowledged ones: buckets move onto the new set until the three are
    balanced, no acknowledged session is lost, and no read of one answers token_not_found
    (a bucket in transit is asked again by the router: 200, or a 503 at worst)."""
    client = await serve(_settings(cluster))
    traffic = Traffic(client)
    writer = asyncio.create_task(traffic.write(8_000_000))
    reader = asyncio.create_task(traffic.read())
    try:
        # Sessions on every bucket's neighbourhood before the move starts.
        deadline = time.monotonic() + 20
        while len(traffic.acknowledged) < 300:
            assert time.monotonic() < deadline, traffic.writes
            await asyncio.sleep(0.05)  # polling the writer's progress
        await cluster.add_set()
        before_move = len(traffic.acknowledged), sum(traffic.reads.values())
        share = cluster.bucket_count() // 3
        deadline = time.monotonic() + 25
        while True:
            counts = await asyncio.to_thread(cluster.active_buckets)
            if sum(counts) == cluster.bucket_count() and all(abs(n - share) <= share // 100 for n in counts):
                break
            assert time.monotonic() < deadline, f"buckets not balanced in time: {counts}"
            await asyncio.sleep(0.1)  # polling the rebalancer's progress
        during_move = len(traffic.acknowledged) - before_move[0], sum(traffic.reads.values()) - before_move[1]
    finally:
        traffic.stopping.set()
        await asyncio.gather(writer, reader)

    assert counts[2] >= share - share // 100
    # The traffic ran during the move, and read sessions now on the new set.
    assert during_move[0] > 0 and during_move[1] > 0, during_move
    moved = [t for t in traffic.acknowledged if cluster.storages[2].eval(_HOLDS.format(bucket_of_token(t)))]
    assert moved, "no acknowledged session's bucket moved"
    assert not [k for k in traffic.reads if k.startswith("404")], traffic.reads
    assert set(traffic.writes) <= {200, 503}, traffic.writes
    got = collections.Counter(
        [(await call(client, "/get", params={"token": token}))[0] for token in traffic.acknowledged]
    )
    assert got == {200: len(traffic.acknowledged)}
    stored = sum(storage.eval("return box.space.sessions:len()") for storage in cluster.storages)
    assert stored == len(set(traffic.acknowledged))


# Whether a storage holds a bucket, active.
_HOLDS = "local b = box.space._bucket:get({}) return b ~= nil and b.status == 'active'"

# A storage's sessions by user: {user_id, count} for each user it holds sessions of.
_BY_USER = """
local counts = {}
for _, t in box.space.sessions:pairs() do counts[t.user_id] = (counts[t.user_id] or 0) + 1 end
local result = {}
for user, n in pairs(counts) do result[#result + 1] = {user, n} end
return result
"""


async def test_many_users_sessions_split_evenly_and_each_users_on_one_replica_set(
    cluster: Cluster, serve: Serve
) -> None:
    """20,000 sessions of 2,000 users (10 each) opened through the service: the two replica
    sets hold within 10% of half each (counted on each storage's console), and each user's
    ten are all on one storage. The requests go 64 at a time, as a service's clients would
    send them, so that the service coalesces them into batches."""
    client = await serve(_settings(cluster))
    users = range(9_000_001, 9_002_001)
    pending = [user for user in users for _ in range(10)]
    statuses: collections.Counter[int] = collections.Counter()

    async def opener() -> None:
        while pending:
            user = pending.pop()
            status, _body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.50"})
            statuses[status] += 1

    await asyncio.gather(*(opener() for _ in range(64)))
    assert statuses == {200: 20_000}

    stored = [int(storage.eval("return box.space.sessions:len()")) for storage in cluster.storages]
    assert sum(stored) == 20_000
    assert all(abs(n - 10_000) <= 1_000 for n in stored), stored
    held = [dict(storage.eval(_BY_USER)) for storage in cluster.storages]
    assert not set(held[0]) & set(held[1])
    assert set(held[0]) | set(held[1]) == set(users)
    assert all(n == 10 for one in held for n in one.values())
