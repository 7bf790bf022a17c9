"""What an operator reads of a sharded cluster, and the purge on each storage: `sessions
stats`, /metrics and /ready through a router sum every replica set's figures; each storage
purges its own idle sessions at the exact TTL. Real processes (tests/sharded.py)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessions.buckets import bucket_of_user

from .conftest import PASSWORD, call, set_activity, wait_for_purge_passes
from .sharded import Cluster, running

pytestmark = pytest.mark.each_release

TTL = 100


@pytest.fixture
async def cluster(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[Cluster]:
    async with running(Cluster(tmp_path / "cluster", tarantool_bin)) as started:
        yield started


def _users_by_set(cluster: Cluster, first: int, each: int) -> list[list[int]]:
    """`each` users whose sessions live on each replica set, from user `first` on."""
    owned = [
        set(
            storage.eval(
                "local ids = {} for _, b in box.space._bucket:pairs() do ids[#ids + 1] = b.id end return ids"
            )
        )
        for storage in cluster.storages
    ]
    users: list[list[int]] = [[] for _ in cluster.storages]
    user = first
    while min(len(side) for side in users) < each:
        user += 1
        side = next(i for i, ids in enumerate(owned) if bucket_of_user(user) in ids)
        if len(users[side]) < each:
            users[side].append(user)
    return users


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def _stats(cluster: Cluster) -> str:
    assert cluster.router is not None
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SESSIONS_TARANTOOL": f"unix/:{cluster.router.socket_path}",
        "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
        "SESSIONS_TARANTOOL_MODE": "sharded",
    }
    result = subprocess.run(
        [sys.executable, "-m", "sessions", "stats"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


_LEN = "return box.space.sessions:len()"


async def test_stats_metrics_and_ready_sum_every_replica_sets_sessions(cluster, serve):
    client = await serve(cluster.service_settings())
    users = _users_by_set(cluster, 9_000_000, 3)
    for side, count in ((0, 7), (1, 4)):
        for i in range(count):
            user = users[side][i % 3]
            assert (await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.60"}))[0] == 200
    counted = [storage.eval(_LEN) for storage in cluster.storages]
    assert counted == [7, 4]

    async def reported() -> tuple[float, int, str]:
        metrics = await (await client.get("/metrics")).text()
        ready = (await call(client, "/ready"))[1]["data"]["sessions"]
        return _metric(metrics, "sessions_stored"), ready, await asyncio.to_thread(_stats, cluster)

    stored, ready, stats = await reported()
    assert stored == ready == 11
    assert "sessions stored:    11\n" in stats

    # A bucket sent to the other set while its garbage collector is held: its rows stay on
    # the sender until collected, and are counted once, by the set that owns the bucket.
    first, second = cluster.storages
    moving = bucket_of_user(users[0][0])
    first.eval("vshard.storage.internal.errinj.ERRINJ_BUCKET_GC_PAUSE = true")
    try:
        sent = first.eval(
            f"local ok, err = vshard.storage.bucket_send({moving}, '{second.replicaset}', {{timeout = 10}}) "
            "return ok == true or tostring(err)"
        )
        assert sent is True
        moved = second.eval(f"return box.space.sessions.index.bucket_id:count({{{moving}}})")
        assert moved >= 2
        # Still on the sender, as a bucket that is no longer its own.
        assert first.eval(_LEN) == 7
        assert first.eval(f"return box.space._bucket:get({moving}).status") in ("sent", "garbage")
        stored, ready, stats = await reported()
        assert stored == ready == 11
        assert "sessions stored:    11\n" in stats
    finally:
        first.eval("vshard.storage.internal.errinj.ERRINJ_BUCKET_GC_PAUSE = false")


async def test_each_storage_purges_its_own_idle_sessions_at_the_exact_ttl(cluster, serve):
    """Idle exactly the TTL: live; one second more: purged, by the storage that holds it, on
    both replica sets; the purged sessions summed in /metrics and `sessions stats`."""
    # The storages' clocks stand at `start`, when the service's first calls give them its
    # TTL (a change of rules: sessions whose stored expiry is older stay lapsed, so the ones
    # here are made idle from `start` on), then move on to `now`.
    start = int(time.time())
    now = start + TTL + 1
    for storage in cluster.storages:
        storage.eval(f"require('sessions.clock').freeze({start})")
    client = await serve(cluster.service_settings(idle_ttl=TTL))
    users = _users_by_set(cluster, 9_100_000, 2)
    tokens: list[dict[str, str]] = []
    for side, storage in enumerate(cluster.storages):
        made = {}
        for name, user in zip(("exact", "past"), users[side], strict=True):
            status, body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.61"})
            assert status == 200
            made[name] = body["data"]["token"]
        set_activity(storage, made["exact"], now - TTL)
        set_activity(storage, made["past"], now - TTL - 1)
        tokens.append(made)
    for storage in cluster.storages:
        storage.eval(f"require('sessions.clock').freeze({now})")
    for storage in cluster.storages:
        await wait_for_purge_passes(storage, 2)
    for storage, made in zip(cluster.storages, tokens, strict=True):
        held = storage.eval(
            "local r = {} for _, t in box.space.sessions:pairs() do r[#r + 1] = t.token:str() end return r"
        )
        assert held == [made["exact"]]
        assert storage.eval("return require('sessions.expiry').stats().purged") == 1
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "sessions_purged_total") == 2
    assert _metric(metrics, "sessions_stored") == 2
    assert "purged since start: 2\n" in await asyncio.to_thread(_stats, cluster)
    answers = [
        (await call(client, "/get", params={"token": made[name]}))[0] for made in tokens for name in made
    ]
    assert answers == [200, 404, 200, 404]
