"""Concurrent requests: the service coalesces them into batches, yet each answers alone."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import call, new_session, settings_for

# What these tests check is done by Tarantool: they run on each release (tests/conftest.py).
pytestmark = pytest.mark.each_release


async def test_concurrent_news_are_all_stored(client, user_id):
    made = await asyncio.gather(*(new_session(client, user_id, f"192.0.2.{i}") for i in range(1, 51)))
    assert len({s["token"] for s in made}) == 50
    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert {s["token"] for s in listed} == {s["token"] for s in made}


async def test_one_failing_item_leaves_the_others_alone(serve, tarantool, user_id):
    client = await serve(settings_for(tarantool, extra_max_bytes=300))
    pad = "y" * 150
    sessions = [await new_session(client, user_id, json={"n": i, "pad": pad}) for i in range(10)]

    def touch(index: int, session: dict) -> object:
        # The fourth body is within the limit, but the merged extra would not be.
        patch = {"big": "x" * 200} if index == 3 else {"seen": index}
        return call(client, "/get", "POST", params={"token": session["token"]}, json=patch)

    answers = await asyncio.gather(*(touch(i, s) for i, s in enumerate(sessions)))

    for index, (status, body) in enumerate(answers):
        if index == 3:
            assert (status, body["code"]) == (413, "payload_too_large")
        else:
            assert (status, body["data"]["extra"]) == (200, {"n": index, "pad": pad, "seen": index})
    listed = {s["token"]: s for s in (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]}
    assert listed[sessions[3]["token"]]["extra"] == {"n": 3, "pad": pad}


async def test_mixed_concurrent_operations_each_answer_their_own_request(client, user_id, ip):
    """Requests of every kind at once, coalesced into shared batches: each answer is the one
    its own request asked for (the coalescer's main risk is handing one caller another's)."""
    users = [user_id + n for n in range(20)]
    opened = [await new_session(client, user, f"192.0.2.{n + 1}") for n, user in enumerate(users)]
    doomed, kept = opened[:10], opened[10:]
    new_users = [user_id + 100 + n for n in range(20)]
    results = await asyncio.gather(
        *(call(client, "/del", params={"token": s["token"]}) for s in doomed),
        *(
            call(client, "/get", params={"token": s["token"], "ip": f"198.51.100.{n}"})
            for n, s in enumerate(kept)
        ),
        *(
            call(client, "/new", params={"user_id": str(u), "ip": f"203.0.113.{n}"})
            for n, u in enumerate(new_users)
        ),
        *(call(client, "/get", params={"token": s["token"]}) for s in doomed),  # racing its own del
        *(call(client, "/user", params={"id": str(u)}) for u in users),
    )
    deleted, got, made, raced, listed = (
        results[:10],
        results[10:20],
        results[20:40],
        results[40:50],
        results[50:],
    )
    for session, (status, body) in zip(doomed, deleted, strict=True):
        assert status == 200 and body["data"]["token"] == session["token"]
    for n, (session, (status, body)) in enumerate(zip(kept, got, strict=True)):
        assert status == 200
        assert (body["data"]["token"], body["data"]["user_id"]) == (session["token"], session["user_id"])
        assert body["data"]["ip"] == f"198.51.100.{n}"
    for n, (user, (status, body)) in enumerate(zip(new_users, made, strict=True)):
        assert status == 200 and (body["data"]["user_id"], body["data"]["ip"]) == (user, f"203.0.113.{n}")
    for session, (status, body) in zip(doomed, raced, strict=True):
        # Either before its del or after it: its own session or none, never another's.
        assert status == 404 or body["data"]["token"] == session["token"]
    for user, (status, body) in zip(users, listed, strict=True):
        assert status == 200 and all(s["user_id"] == user for s in body["data"])
    assert len({body["data"]["token"] for _, body in made}) == 20
    for session in kept:
        mine = (await call(client, "/user", params={"id": str(session["user_id"])}))[1]["data"]
        assert [s["token"] for s in mine] == [session["token"]]
