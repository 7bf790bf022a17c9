"""Concurrent requests: the service coalesces them into batches, yet each answers alone."""

from __future__ import annotations

import asyncio

from .conftest import call, new_session, settings_for


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


async def test_mixed_concurrent_operations(client, user_id, ip):
    doomed = [await new_session(client, user_id, ip) for _ in range(5)]
    kept = [await new_session(client, user_id, ip) for _ in range(5)]
    results = await asyncio.gather(
        *(call(client, "/del", params={"token": s["token"]}) for s in doomed),
        *(call(client, "/get", params={"token": s["token"]}) for s in kept),
        call(client, "/user", params={"id": str(user_id)}),
        call(client, "/ip", params={"ip": ip}),
    )
    assert all(status == 200 for status, _ in results)
    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert {s["token"] for s in listed} == {s["token"] for s in kept}
