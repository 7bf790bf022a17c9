"""The sharded mode, on real processes (tests/sharded.py): two replica sets of vshard
storages on the project's Lua and a router, called as the service calls an instance."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asynctnt
import pytest
from pydantic import ValidationError

from sessions.admin import AdminError, stats
from sessions.buckets import bucket_of_token, bucket_of_user
from sessions.config import Settings
from sessions.console import ConsoleError
from sessions.contract import BATCH, BUCKETS, CALL, DESCRIBE, INFO, Context, Info, Rules, differences
from sessions.storage import new_token

from .conftest import PASSWORD, call
from .sharded import _RELOAD, Cluster

pytestmark = pytest.mark.each_release

# Counts, on a storage, the items of each operation its `sessions.batch` ran, and the calls
# of each operation and kind its `sessions.call` ran ("list user", "count ip"): the router
# calls them through vshard.storage.call (map_callrw too), which looks the procedure up at
# each call.
_COUNTING = """
local batch, call = sessions.batch, sessions.call
rawset(_G, 'batch_items', {})
rawset(_G, 'calls', {})
sessions.batch = function(operation, items, ctx)
    batch_items[operation] = (batch_items[operation] or 0) + #items
    return batch(operation, items, ctx)
end
sessions.call = function(operation, args, ctx)
    local key = operation .. ' ' .. tostring(type(args) == 'table' and args.kind or '')
    calls[key] = (calls[key] or 0) + 1
    return call(operation, args, ctx)
end
"""

# The bucket a storage keeps a session under, by its token; nil where it is not stored.
_STORED_BUCKET = "local t = box.space.sessions:get(require('uuid').fromstr('{}')) return t and t.bucket_id"


@pytest.fixture
async def cluster(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[Cluster]:
    started = Cluster(tmp_path / "cluster", tarantool_bin)
    try:
        await started.start()
        for storage in started.storages:
            storage.eval(_COUNTING)
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def router(cluster: Cluster) -> AsyncIterator[asynctnt.Connection]:
    assert cluster.router is not None
    conn = asynctnt.Connection(
        host="unix/",
        port=str(cluster.router.socket_path),
        username="sessions",
        password=PASSWORD,
        fetch_schema=False,
        auto_refetch_schema=False,
    )
    await conn.connect()
    yield conn
    await conn.disconnect()


def _context() -> dict[str, Any]:
    # The routers' clock is this machine's: no offset to measure.
    return Context(Rules(ttl=3600, lifetime=0, cap=0).wire(), time.time() + 5, 65536).wire()


def _text(raw: bytes) -> str:
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def _owners(cluster: Cluster) -> list[tuple[int, int]]:
    """Each storage's buckets, as the (first, last) ranges vshard's bootstrap gives them."""
    ranges = []
    for storage in cluster.storages:
        ids = storage.eval(
            "local ids = {} for _, b in box.space._bucket:pairs() do ids[#ids + 1] = b.id end return ids"
        )
        ranges.append((min(ids), max(ids)))
    return ranges


def _counted(cluster: Cluster) -> list[dict[str, int]]:
    return [dict(storage.eval("return batch_items") or {}) for storage in cluster.storages]


def _called(cluster: Cluster) -> list[dict[str, int]]:
    """Each storage's count of `sessions.call`s by operation and kind (_COUNTING)."""
    return [dict(storage.eval("return calls") or {}) for storage in cluster.storages]


def _forget_calls(cluster: Cluster) -> None:
    for storage in cluster.storages:
        storage.eval("calls = {}")


async def test_the_router_speaks_the_contract_of_the_storages(router):
    described = (await router.call(DESCRIBE, []))[0]
    assert differences(described) == []
    assert described["buckets"] == BUCKETS.wire()


async def test_new_get_and_delete_reach_exactly_the_storage_of_their_bucket(cluster, router):
    ranges = _owners(cluster)
    assert len(ranges) == 2 and sum(last - first + 1 for first, last in ranges) == BUCKETS.count

    def owner(bucket: int) -> int:
        return next(i for i, (first, last) in enumerate(ranges) if first <= bucket <= last)

    # Users of both replica sets, opened in one batch as the service coalesces them.
    users = list(range(7_000_001, 7_000_041))
    tokens = [new_token(bucket_of_user(user)) for user in users]
    items = [
        {"token": token, "user_id": user, "ip": "192.0.2.9"}
        for token, user in zip(tokens, users, strict=True)
    ]
    replies = (await router.call(BATCH, ["new", items, _context()]))[0]
    assert [reply["session"][1] for reply in replies] == users
    expected = collections.Counter(owner(bucket_of_user(user)) for user in users)
    assert set(expected) == {0, 1}
    assert [counts.get("new", 0) for counts in _counted(cluster)] == [expected[0], expected[1]]
    # Each session is on its bucket's storage, and only there, with its bucket.
    for token, user in zip(tokens, users, strict=True):
        bucket = bucket_of_token(token)
        assert bucket == bucket_of_user(user)
        found = [storage.eval(_STORED_BUCKET.format(_text(token))) for storage in cluster.storages]
        assert found == [bucket if i == owner(bucket) else None for i in range(2)]

    texts = [_text(token) for token in tokens]
    got = (await router.call(BATCH, ["get", [{"token": text} for text in texts], _context()]))[0]
    assert [reply["session"][0] for reply in got] == texts
    assert [counts.get("get", 0) for counts in _counted(cluster)] == [expected[0], expected[1]]
    # A token whose bucket's storage has no such session: found nowhere, asked of one storage.
    stray = _text(new_token(bucket_of_user(users[0])))
    assert (await router.call(BATCH, ["get", [{"token": stray}], _context()]))[0] == [{}]
    after = _counted(cluster)
    assert after[owner(bucket_of_user(users[0]))]["get"] == expected[owner(bucket_of_user(users[0]))] + 1

    deleted = (await router.call(BATCH, ["delete", [{"token": text} for text in texts[:10]], _context()]))[0]
    assert [reply["session"][0] for reply in deleted] == texts[:10]
    ended = collections.Counter(owner(bucket_of_user(user)) for user in users[:10])
    assert [counts.get("delete", 0) for counts in _counted(cluster)] == [ended[0], ended[1]]
    again = (await router.call(BATCH, ["get", [{"token": text} for text in texts], _context()]))[0]
    assert [bool(reply) for reply in again] == [False] * 10 + [True] * 30
    stored = [storage.eval("return box.space.sessions:len()") for storage in cluster.storages]
    assert sum(stored) == 30


async def test_a_users_listing_goes_to_the_users_storage(cluster, router):
    user = 7_100_001
    tokens = [new_token(bucket_of_user(user)) for _ in range(3)]
    items = [{"token": token, "user_id": user, "ip": "192.0.2.10"} for token in tokens]
    await router.call(BATCH, ["new", items, _context()])
    args = {"kind": "user", "key": user, "limit": 10, "page_bytes": 1 << 20}
    listed = (await router.call(CALL, ["list", args, _context()]))[0]
    assert sorted(row[0] for row in listed["sessions"]) == sorted(_text(token) for token in tokens)


async def test_by_user_one_storage_is_called_and_by_address_every_one(cluster, serve):
    """/user, /user/count and /user/del through the service reach the user's storage once
    each and the other not at all; /ip, /ip/count and /ip/del reach every storage once
    (counted on the storages)."""
    client = await serve(cluster.service_settings())
    ranges = _owners(cluster)
    user, address = 7_150_001, "192.0.2.19"
    owner = next(i for i, (first, last) in enumerate(ranges) if first <= bucket_of_user(user) <= last)
    for _ in range(3):
        status, _body = await call(client, "/new", params={"user_id": str(user), "ip": address})
        assert status == 200
    # The service's check at connect (token_storage) asked every storage once, before.
    _forget_calls(cluster)

    def once_on_the_owner(key: str) -> list[dict[str, int]]:
        return [{key: 1} if i == owner else {} for i in range(2)]

    for path, key, field_name, expected in (
        ("/user", "list user", None, 3),
        ("/user/count", "count user", "count", 3),
        ("/ip", "list ip", None, 3),
        ("/ip/count", "count ip", "count", 3),
    ):
        params = {"id": str(user)} if path.startswith("/user") else {"ip": address}
        status, body = await call(client, path, params=params)
        assert status == 200
        assert (len(body["data"]) if field_name is None else body["data"][field_name]) == expected
        counted = _called(cluster)
        if key.endswith("user"):
            assert counted == once_on_the_owner(key), path
        else:
            assert counted == [{key: 1}, {key: 1}], path
        _forget_calls(cluster)

    status, body = await call(client, "/user/del", params={"id": str(user)})
    assert status == 200 and body["data"]["deleted"] == 3
    assert _called(cluster) == once_on_the_owner("delete_all user")
    await call(client, "/new", params={"user_id": str(user), "ip": address})
    _forget_calls(cluster)
    status, body = await call(client, "/ip/del", params={"ip": address})
    assert status == 200 and body["data"]["deleted"] == 1
    assert _called(cluster) == [{"delete_all ip": 1}, {"delete_all ip": 1}]


async def test_a_failed_item_answers_alone_through_the_router(router):
    user = 7_200_001
    token = new_token(bucket_of_user(user))
    item = {"token": token, "user_id": user, "ip": "192.0.2.11"}
    other = {"token": new_token(bucket_of_user(user + 1)), "user_id": user + 1, "ip": "192.0.2.11"}
    replies = (await router.call(BATCH, ["new", [item, item, other], _context()]))[0]
    assert replies[0]["session"][1] == user and replies[2]["session"][1] == user + 1
    # The storage's error item, as the storage made it: the duplicate key, undone alone.
    assert set(replies[1]) == {"error"} and replies[1]["error"]["code"] == 3  # ER_TUPLE_FOUND
    # A token that is not one names no bucket: refused as an argument, before any storage.
    refused = (await router.call(BATCH, ["get", [{"token": "not-a-token"}], _context()]))[0]
    assert refused[0]["error"]["type"] == "InvalidArgument"


async def test_a_bucket_moves_onto_a_replica_set_that_numbered_sessions_of_the_same_ip(cluster, router):
    """Each replica set numbers its sessions from its own counter: the seqs carry the set's
    number (schema.next_seq), so a bucket's rows land on another set that opened sessions
    from the same address without meeting one of theirs in the unique (ip, seq) index."""
    ranges = _owners(cluster)
    users: list[list[int]] = [[], []]
    user = 7_300_000
    while not all(len(found) >= 3 for found in users):
        user += 1
        bucket = bucket_of_user(user)
        owner = next(i for i, (first, last) in enumerate(ranges) if first <= bucket <= last)
        users[owner].append(user)
    # The same address, the same number of sessions on each side: without the set's number
    # both sets would have handed out the same seqs.
    opened = [u for side in users for u in side[:3]]
    items = [{"token": new_token(bucket_of_user(u)), "user_id": u, "ip": "192.0.2.12"} for u in opened]
    replies = (await router.call(BATCH, ["new", items, _context()]))[0]
    assert all("session" in reply for reply in replies)
    every_seq = "local s = {} for _, t in box.space.sessions:pairs() do s[#s + 1] = t.seq end return s"
    seqs = [storage.eval(every_seq) for storage in cluster.storages]
    assert not set(seqs[0]) & set(seqs[1])

    moving = users[0][0]
    bucket = bucket_of_user(moving)
    sent = cluster.storages[0].eval(
        f"local ok, err = vshard.storage.bucket_send({bucket}, '{cluster.storages[1].replicaset}', "
        "{timeout = 10}) return {ok = ok == true, err = err and tostring(err.message or err) or nil}"
    )
    assert sent == {"ok": True}
    listed = cluster.storages[1].eval(
        f"local n = 0 for _ in box.space.sessions.index.user:pairs({{{moving}}}) do n = n + 1 end return n"
    )
    assert listed == 1
    # The router finds the session where its bucket went.
    token = items[opened.index(moving)]["token"]
    got = (await router.call(BATCH, ["get", [{"token": _text(token)}], _context()]))[0]
    assert got[0]["session"][1] == moving
    assert _counted(cluster)[1].get("get", 0) == 1


async def test_the_service_serves_through_a_router(cluster, serve):
    """SESSIONS_TARANTOOL_MODE=sharded: the service's connect-time check passes against a
    router, a new token carries its user's bucket and a rotated one its old one's, and the
    probes and metrics read the router's `info` (the cluster's figures)."""
    client = await serve(cluster.service_settings())
    ranges = _owners(cluster)
    user = 7_400_001
    status, body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.13"})
    assert status == 200
    token = body["data"]["token"]
    bucket = bucket_of_token(token)
    assert bucket == bucket_of_user(user)
    owner = next(i for i, (first, last) in enumerate(ranges) if first <= bucket <= last)
    assert [counts.get("new", 0) for counts in _counted(cluster)] == [int(owner == 0), int(owner == 1)]
    status, body = await call(client, "/rotate", params={"token": token})
    assert status == 200
    rotated = body["data"]["token"]
    assert rotated != token and bucket_of_token(rotated) == bucket
    assert (await call(client, "/get", params={"token": rotated}))[0] == 200
    assert (await call(client, "/get", params={"token": token}))[0] == 404
    assert [counts.get("rotate", 0) for counts in _counted(cluster)] == [int(owner == 0), int(owner == 1)]

    status, body = await call(client, "/ready")
    assert status == 200 and body["data"]["sessions"] == 1
    response = await client.get("/metrics")
    assert response.status == 200
    assert "\nsessions_stored 1.0\n" in await response.text()


async def test_the_routers_info_counts_a_lost_replica_set_and_stays_writable(cluster, router):
    """One lost replica set is its own users' outage: the router stays writable for the
    service (`ro` only when every set is lost) and counts the set in `sets_lost`."""
    info = Info.of((await router.call(INFO, []))[0])
    seen = (info.ro, info.role, info.vclock, info.sessions, info.writes_confirmable, info.sets_lost)
    assert seen == (False, "router", {}, 0, True, 0)
    await cluster.storages[1].process.stop()
    lost = Info.of((await router.call(INFO, []))[0])
    assert (lost.ro, lost.writes_confirmable, lost.sets_lost) == (False, True, 1)
    await cluster.storages[0].process.stop()
    both = Info.of((await router.call(INFO, []))[0])
    assert (both.ro, both.sets_lost) == (True, 2)


async def test_an_idempotency_key_is_its_users_and_never_stops_a_bucket_move(cluster, serve):
    """The same Idempotency-Key for a user of each replica set: each opens its own session
    (keys are per user, as on one instance), and a repeat answers each its own. The first
    user's bucket then moves to the other set, which holds the other user's entry for the
    same key: the move succeeds, and the key still answers the first user's session."""
    ranges = _owners(cluster)
    users = [
        next(u for u in range(8_500_000, 8_600_000) if first <= bucket_of_user(u) <= last)
        for first, last in ranges
    ]
    client = await serve(cluster.service_settings())
    key = {"Idempotency-Key": "same-key-for-both"}

    async def opened(user: int) -> str:
        status, body = await call(
            client, "/new", params={"user_id": str(user), "ip": "192.0.2.5"}, headers=key
        )
        assert status == 200, body
        return str(body["data"]["token"])

    tokens = [await opened(user) for user in users]
    assert tokens[0] != tokens[1]
    assert [await opened(user) for user in users] == tokens
    sent = cluster.storages[0].eval(
        f"local ok, err = vshard.storage.bucket_send({bucket_of_user(users[0])}, "
        f"'{cluster.storages[1].replicaset}', {{timeout = 10}}) "
        "return {ok = ok == true, err = err and tostring(err.message or err) or nil}"
    )
    assert sent == {"ok": True}
    assert await opened(users[0]) == tokens[0]


async def test_a_reload_that_drops_or_renumbers_a_replica_set_is_refused(cluster, serve):
    """docs/operations.md's "Adding a replica set": a configuration file that no longer has a
    replica set, or gives one another number, is refused by `reload()` on a router and on a
    storage, and the running configuration stays (the set's users are served)."""
    ranges = _owners(cluster)
    first, last = ranges[1]
    user = next(u for u in range(8_700_000, 8_800_000) if first <= bucket_of_user(u) <= last)
    client = await serve(cluster.service_settings())
    status, body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.6"})
    assert status == 200, body
    token = body["data"]["token"]
    path = cluster.root / "cluster.json"
    original = path.read_text()
    second = cluster.storages[1].replicaset
    dropped = json.loads(original)
    del dropped["sharding"][second], dropped["numbers"][second]
    renumbered = json.loads(original)
    renumbered["numbers"][second] = 9
    consoles = [cluster.router_eval, cluster.storages[0].eval]
    try:
        for config, refusal in [(dropped, "no longer has replica set"), (renumbered, "another number")]:
            path.write_text(json.dumps(config))
            for reload in consoles:
                with pytest.raises(ConsoleError, match=refusal):
                    reload(_RELOAD)
    finally:
        path.write_text(original)
    assert [reload(_RELOAD) for reload in consoles] == [{"replicasets": 2}] * 2
    assert (await call(client, "/get", params={"token": token}))[0] == 200


async def test_with_a_replica_set_lost_the_service_starts_and_fails_only_what_needs_it_at_once(
    cluster, serve
):
    """Set 2's master down: a service (or `sessions stats`) started now starts, through the
    router, and serves set 1's users; set 2's get 503 storage_unavailable. What needs every
    set (/ip, /ip/count, /ip/del, an end by id) fails at once, 503, not after the call's
    timeout (5 s here); a look-up by id answers what set 1 holds, and 503 for what it does not
    (it may be on set 2, so never a 404)."""
    ranges = _owners(cluster)

    def user_on(index: int) -> int:
        first, last = ranges[index]
        return next(user for user in range(8_300_000, 8_400_000) if first <= bucket_of_user(user) <= last)

    users = [user_on(0), user_on(1)]
    settings = cluster.service_settings(tarantool_timeout=5.0)
    before = await serve(settings)
    ids = []
    for user in users:
        status, body = await call(
            before, "/new", params={"user_id": str(user), "ip": "192.0.2.77", "with": "id"}
        )
        assert status == 200, body
        ids.append(body["data"]["id"])
    await cluster.storages[1].process.stop()

    info = await asyncio.to_thread(stats, settings)
    assert (info.sets_lost, info.ro) == (1, False)
    client = await serve(settings)
    status, body = await call(client, "/new", params={"user_id": str(users[0]), "ip": "192.0.2.77"})
    assert status == 200, body
    status, body = await call(client, "/new", params={"user_id": str(users[1]), "ip": "192.0.2.77"})
    assert (status, body["code"]) == (503, "storage_unavailable"), body
    status, body = await call(client, "/ready")
    assert status == 200 and body["data"]["sets_lost"] == 1, body
    for path, params in [
        ("/ip", {"ip": "192.0.2.77"}),
        ("/ip/count", {"ip": "192.0.2.77"}),
        ("/ip/del", {"ip": "192.0.2.77"}),
        ("/session/del", {"id": ids[0]}),
        ("/session", {"id": ids[1]}),
    ]:
        started = time.monotonic()
        status, body = await call(client, path, params=params)
        took = time.monotonic() - started
        assert (status, body["code"]) == (503, "storage_unavailable"), (path, body)
        assert took < 2.5, (path, took)
    status, body = await call(client, "/session", params={"id": ids[0]})
    assert status == 200 and body["data"]["user_id"] == users[0], body

    await cluster.storages[0].process.stop()
    with pytest.raises(AdminError, match=r"^the Tarantool at .*replica set .*not connected"):
        await asyncio.to_thread(stats, settings)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({}, "needs SESSIONS_TARANTOOL"),
    ],
)
def test_what_the_sharded_mode_does_not_serve_yet_is_refused_at_start(overrides, refused):
    with pytest.raises(ValidationError, match=refused):
        Settings(tarantool_mode="sharded", tarantool_password=PASSWORD, **overrides)


async def _walk(client, path: str, params: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following its Link header."""
    pages = []
    response = await client.get(path, params=params)
    while True:
        assert response.status == 200, await response.text()
        pages.append((await response.json())["data"])
        if "next" not in response.links or len(pages) > 100:
            return pages
        response = await client.get(response.links["next"]["url"].path_qs)


def _seqs(cluster: Cluster, address: str) -> dict[str, int]:
    """The seq of each session of `address`, over every storage, by token."""
    seqs = {}
    for storage in cluster.storages:
        for token, seq in storage.eval(
            f"local r = {{}} for _, t in box.space.sessions.index.ip_seq:pairs({{'{address}'}}) do "
            "r[#r + 1] = {t.token:str(), t.seq} end return r"
        ):
            seqs[token] = seq
    return seqs


async def _open_from(client, address: str, users: range) -> list[str]:
    opened = []
    for user in users:
        status, body = await call(client, "/new", params={"user_id": str(user), "ip": address})
        assert status == 200
        opened.append(body["data"]["token"])
    return opened


async def test_an_address_is_listed_counted_and_ended_over_every_replica_set(cluster, serve):
    """/ip, /ip/count and /ip/del through a router: every replica set's sessions of the
    address in one order, by seq (unique across the cluster), which within a replica set is
    the order they were opened in, page by page from one seq cursor, each met once, even when
    a bucket moves between two pages."""
    client = await serve(cluster.service_settings())
    ranges = _owners(cluster)
    address = "192.0.2.14"
    opened = await _open_from(client, address, range(7_500_001, 7_500_031))
    owner = {t: next(i for i, (f, la) in enumerate(ranges) if f <= bucket_of_token(t) <= la) for t in opened}
    assert set(owner.values()) == {0, 1}
    seqs = _seqs(cluster, address)
    newest_first = sorted(opened, key=seqs.__getitem__, reverse=True)
    for side in (0, 1):
        assert [t for t in newest_first if owner[t] == side] == [t for t in opened[::-1] if owner[t] == side]
    whole = (await call(client, "/ip", params={"ip": address}))[1]["data"]
    assert [s["token"] for s in whole] == newest_first
    for limit in ("1", "4", "7", "30"):
        pages = await _walk(client, "/ip", {"ip": address, "limit": limit})
        assert [s["token"] for page in pages for s in page] == newest_first
        assert all(len(page) == int(limit) for page in pages[:-1])

    # A bucket moves between two pages: its sessions keep their seqs, so the walk goes on.
    response = await client.get("/ip", params={"ip": address, "limit": "10"})
    seen = [s["token"] for s in (await response.json())["data"]]
    moving = bucket_of_token(newest_first[15])
    source = next(i for i, (f, la) in enumerate(ranges) if f <= moving <= la)
    sent = cluster.storages[source].eval(
        f"local ok, err = vshard.storage.bucket_send({moving}, '{cluster.storages[1 - source].replicaset}', "
        "{timeout = 10}) return {ok = ok == true, err = err and tostring(err.message or err) or nil}"
    )
    assert sent == {"ok": True}
    rest = await _walk(client, "/ip", dict(response.links["next"]["url"].query))
    seen += [s["token"] for page in rest for s in page]
    assert seen == newest_first

    assert (await call(client, "/ip/count", params={"ip": address}))[1]["data"]["count"] == 30
    assert (await call(client, "/ip/del", params={"ip": address}))[1]["data"]["deleted"] == 30
    assert (await call(client, "/ip/count", params={"ip": address}))[1]["data"]["count"] == 0


async def test_a_merged_page_stops_where_a_replica_sets_page_ran_out(cluster, router):
    """A replica set whose page was cut by page_bytes has sessions not sent yet, older than
    its last one but maybe newer than another set's: the merged page stops there."""
    ranges = _owners(cluster)
    address = "192.0.2.15"

    def owner(user: int) -> int:
        bucket = bucket_of_user(user)
        return next(i for i, (first, last) in enumerate(ranges) if first <= bucket <= last)

    # The first set's sessions large (one to its page), the second's small (many to one),
    # opened in turns so that their seqs interleave.
    users: list[list[int]] = [[], []]
    user = 7_600_000
    while min(len(side) for side in users) < 10:
        user += 1
        users[owner(user)].append(user)
    turns = [u for pair in zip(users[0][:10], users[1][:10], strict=True) for u in pair]
    for u in turns:
        pad = "x" * (3000 if owner(u) == 0 else 10)
        item = {"token": new_token(bucket_of_user(u)), "user_id": u, "ip": address, "patch": {"pad": pad}}
        await router.call(BATCH, ["new", [item], _context()])
    seqs = _seqs(cluster, address)
    assert len(seqs) == 20
    order = sorted(seqs, key=seqs.__getitem__, reverse=True)
    walked: list[str] = []
    after = None
    while len(walked) <= 20:
        args: dict[str, Any] = {"kind": "ip", "key": address, "limit": 100, "page_bytes": 5000}
        if after is not None:
            args["after"] = after
        page = (await router.call(CALL, ["list", args, _context()]))[0]
        walked += [row[0] for row in page["sessions"]]
        if not page["more"]:
            break
        after = page["last"]
    assert walked == order


async def test_an_address_is_listed_newest_opened_first_across_replica_sets(cluster, serve):
    client = await serve(cluster.service_settings())
    address = "192.0.2.16"
    # One replica set ahead of the other in its count: sessions opened on it before.
    await _open_from(client, address, range(7_700_001, 7_700_041))
    opened = await _open_from(client, address, range(7_700_101, 7_700_111))
    whole = (await call(client, "/ip", params={"ip": address, "limit": "10"}))[1]["data"]
    assert [s["token"] for s in whole] == opened[::-1]


async def test_sessions_are_read_and_ended_by_id_on_whichever_replica_set_holds_them(cluster, serve):
    """An id carries no bucket: /session and /session/del ask every replica set at once, and
    answer the one that holds the session."""
    client = await serve(cluster.service_settings())
    ranges = _owners(cluster)
    users = range(7_800_001, 7_800_011)
    opened = []
    for user in users:
        status, body = await call(
            client, "/new", params={"user_id": str(user), "ip": "192.0.2.17", "with": "id"}
        )
        assert status == 200
        opened.append(body["data"])
    owners = {
        next(i for i, (f, la) in enumerate(ranges) if f <= bucket_of_token(s["token"]) <= la) for s in opened
    }
    assert owners == {0, 1}
    peeked = await asyncio.gather(*(call(client, "/session", params={"id": s["id"]}) for s in opened))
    assert [(status, body["data"]["user_id"]) for status, body in peeked] == [(200, u) for u in users]
    # Each id was asked of both replica sets.
    assert [counts.get("peek", 0) for counts in _counted(cluster)] == [10, 10]
    for session in opened[:5]:
        status, body = await call(client, "/session/del", params={"id": session["id"]})
        assert status == 200 and body["data"]["id"] == session["id"]
    found = [(await call(client, "/get", params={"token": s["token"]}))[0] for s in opened]
    assert found == [404] * 5 + [200] * 5
    assert (await call(client, "/session", params={"id": opened[0]["id"]}))[0] == 404


async def test_a_hashed_store_is_served_through_a_router(cluster, serve):
    """SESSIONS_TOKEN_STORAGE=hash: the storages get each token's key, which has lost the
    bucket bits; the service sends the bucket read from the token, and every call reaches
    the session's replica set."""
    client = await serve(cluster.service_settings().model_copy(update={"token_storage": "hash"}))
    tokens = []
    for user in range(7_900_001, 7_900_011):
        status, body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.18"})
        assert status == 200
        tokens.append(body["data"]["token"])
    stored = [storage.eval(_STORED_BUCKET.format(token)) for token in tokens for storage in cluster.storages]
    assert stored == [None] * 20  # no token is a key: only hashes are
    assert {bucket_of_token(t) for t in tokens} == {bucket_of_user(u) for u in range(7_900_001, 7_900_011)}
    assert [(await call(client, "/get", params={"token": t}))[0] for t in tokens] == [200] * 10
    rotated = [(await call(client, "/rotate", params={"token": t}))[1]["data"]["token"] for t in tokens[:5]]
    assert [bucket_of_token(t) for t in rotated] == [bucket_of_token(t) for t in tokens[:5]]
    assert [(await call(client, "/get", params={"token": t}))[0] for t in rotated + tokens] == [200] * 5 + [
        404
    ] * 5 + [200] * 5
    assert [(await call(client, "/del", params={"token": t}))[0] for t in rotated] == [200] * 5
    assert (await call(client, "/ready"))[1]["data"]["sessions"] == 5
