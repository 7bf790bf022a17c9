"""`/user` and `/ip`: every live session of a user or an address, newest activity first."""

from __future__ import annotations

import pytest

from .conftest import call, days_ago, new_session, set_activity


async def test_user_lists_own_sessions_newest_first(client, console, user_id):
    tokens = []
    for age in (3, 1, 2):
        session = await new_session(client, user_id)
        set_activity(console, session["token"], days_ago(age))
        tokens.append(session["token"])
    await new_session(client, user_id + 1)  # someone else

    status, body = await call(client, "/user", params={"id": str(user_id)})

    assert status == 200
    assert [s["token"] for s in body["data"]] == [tokens[1], tokens[2], tokens[0]]
    assert all(s["user_id"] == user_id for s in body["data"])


async def test_a_get_moves_a_session_to_the_front(client, console, user_id):
    first = await new_session(client, user_id)
    second = await new_session(client, user_id)
    set_activity(console, first["token"], days_ago(2))
    set_activity(console, second["token"], days_ago(1))
    await call(client, "/get", params={"token": first["token"]})

    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert [s["token"] for s in listed] == [first["token"], second["token"]]


async def test_user_without_sessions_is_an_empty_list(client, user_id):
    assert await call(client, "/user", params={"id": str(user_id)}) == (
        200,
        {"status": "success", "data": []},
    )


@pytest.mark.parametrize(
    "params", [{}, {"id": ""}, {"id": "0"}, {"id": "-5"}, {"id": "2.5"}, {"user_id": "5"}]
)
async def test_user_bad_id(client, params):
    status, body = await call(client, "/user", params=params)
    assert (status, body["code"]) == (400, "invalid_user_id")


async def test_ip_lists_sessions_of_the_address_newest_first(client, console, user_id, ip):
    older = await new_session(client, user_id, ip)
    newer = await new_session(client, user_id + 1, ip)
    await new_session(client, user_id, "192.0.2.99")
    set_activity(console, older["token"], days_ago(5))
    set_activity(console, newer["token"], days_ago(4))

    status, body = await call(client, "/ip", params={"ip": ip})

    assert status == 200
    assert [s["token"] for s in body["data"]] == [newer["token"], older["token"]]


async def test_ip_lookup_uses_the_canonical_form(client, user_id, ip):
    session = await new_session(client, user_id, ip.upper())
    assert session["ip"] == ip
    expanded = ip.replace("::", ":0:0:0:")
    listed = (await call(client, "/ip", params={"ip": expanded}))[1]["data"]
    assert [s["token"] for s in listed] == [session["token"]]


async def test_ip_follows_a_move(client, user_id, ip):
    session = await new_session(client, user_id, "192.0.2.1")
    await call(client, "/get", params={"token": session["token"], "ip": ip})
    listed = (await call(client, "/ip", params={"ip": ip}))[1]["data"]
    assert [s["token"] for s in listed] == [session["token"]]


async def test_ip_without_sessions_is_an_empty_list(client, ip):
    assert (await call(client, "/ip", params={"ip": ip}))[1]["data"] == []


@pytest.mark.parametrize("params", [{}, {"ip": ""}, {"ip": "300.1.1.1"}, {"ip": "localhost"}])
async def test_ip_bad_address(client, params):
    status, body = await call(client, "/ip", params=params)
    assert (status, body["code"]) == (400, "invalid_ip")


async def test_repeated_ip(client):
    status, body = await call(client, "/ip", params=[("ip", "192.0.2.1"), ("ip", "192.0.2.2")])
    assert (status, body["code"]) == (400, "invalid_ip")
