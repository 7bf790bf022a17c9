"""`/get` and `/del`: reading, touching, moving and ending one session by its token."""

from __future__ import annotations

import time
import uuid

import pytest

from .conftest import call, days_ago, new_session, set_activity
from .sharded import console_by_mode, settings_by_mode, sharded_cluster  # noqa: F401 (fixtures: both modes)


async def test_get_returns_the_session_and_touches_it(client, console, user_id):
    session = await new_session(client, user_id)
    set_activity(console, session["token"], days_ago(1))

    status, body = await call(client, "/get", params={"token": session["token"]})

    assert status == 200
    got = body["data"]
    assert got["token"] == session["token"]
    assert got["user_id"] == user_id
    assert got["create"] == session["create"]
    assert abs(got["activity"] - time.time()) <= 2


async def test_post_works_like_get(client, user_id):
    session = await new_session(client, user_id)
    status, body = await call(client, "/get", "POST", params={"token": session["token"]})
    assert (status, body["data"]["token"]) == (200, session["token"])


async def test_uppercase_token_is_the_same_token(client, user_id):
    session = await new_session(client, user_id)
    status, body = await call(client, "/get", params={"token": session["token"].upper()})
    assert (status, body["data"]["token"]) == (200, session["token"])


async def test_get_with_ip_moves_the_session(client, user_id):
    session = await new_session(client, user_id, "192.0.2.1")
    status, body = await call(client, "/get", params={"token": session["token"], "ip": "2001:DB8::0:7"})
    assert (status, body["data"]["ip"]) == (200, "2001:db8::7")
    status, body = await call(client, "/get", params={"token": session["token"]})
    assert body["data"]["ip"] == "2001:db8::7"


@pytest.mark.parametrize("value", ["", "nope", "1.2.3.4.5"])
async def test_get_with_bad_ip_changes_nothing(client, console, user_id, value):
    session = await new_session(client, user_id, "192.0.2.1")
    old = days_ago(1)
    set_activity(console, session["token"], old)
    status, body = await call(client, "/get", params={"token": session["token"], "ip": value})
    assert (status, body["code"]) == (400, "invalid_ip")
    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert listed[0]["ip"] == "192.0.2.1"
    assert listed[0]["activity"] == old


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"token": ""},
        {"token": "nope"},
        {"token": str(uuid.uuid4())},
        {"token": "{" + str(uuid.uuid4()) + "}"},
        {"token": uuid.uuid4().hex},
        {"token": str(uuid.uuid4()) + "0"},
        {"token": "\x00" * 36},
    ],
)
@pytest.mark.parametrize("path", ["/get", "/del"])
async def test_missing_malformed_or_unknown_token(client, path, params):
    status, body = await call(client, path, params=params)
    assert (status, body["code"]) == (404, "token_not_found")


async def test_the_miss_message_gives_no_hint(client):
    messages = set()
    for params in [{}, {"token": ""}, {"token": "nope"}, {"token": str(uuid.uuid4())}]:
        messages.add((await call(client, "/get", params=params))[1]["message"])
    assert len(messages) == 1


async def test_repeated_token(client, user_id):
    session = await new_session(client, user_id)
    status, body = await call(
        client, "/get", params=[("token", session["token"]), ("token", session["token"])]
    )
    assert (status, body["code"]) == (404, "token_not_found")


async def test_del_returns_the_deleted_session_once(client, user_id):
    session = await new_session(client, user_id)
    status, body = await call(client, "/del", params={"token": session["token"]})
    assert (status, body["data"]) == (200, session)

    for path in ("/get", "/del"):
        status, body = await call(client, path, params={"token": session["token"]})
        assert (status, body["code"]) == (404, "token_not_found")
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []


async def test_del_ignores_a_body(client, user_id):
    session = await new_session(client, user_id)
    status, body = await call(client, "/del", "POST", params={"token": session["token"]}, json={"a": 1})
    assert (status, body["data"]["extra"]) == (200, None)


async def test_activity_changes_only_on_get(client, console, user_id):
    session = await new_session(client, user_id)
    old = days_ago(2)
    set_activity(console, session["token"], old)
    for path, params in (("/user", {"id": str(user_id)}), ("/ip", {"ip": "192.0.2.1"})):
        listed = (await call(client, path, params=params))[1]["data"]
        mine = [s for s in listed if s["token"] == session["token"]]
        assert mine and mine[0]["activity"] == old
    deleted = (await call(client, "/del", params={"token": session["token"]}))[1]["data"]
    assert deleted["activity"] == old
