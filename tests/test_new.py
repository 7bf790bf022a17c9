"""`/new`: opening a session, and the validation of user_id and ip."""

from __future__ import annotations

import time
import uuid

import pytest

from .conftest import call, new_session
from .sharded import console_by_mode, settings_by_mode, sharded_cluster  # noqa: F401 (fixtures: both modes)

KEYS = {"ip", "extra", "user_id", "create", "activity", "token"}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_new_returns_the_session(client, user_id, method):
    before = int(time.time())
    status, body = await call(client, "/new", method, params={"user_id": str(user_id), "ip": "192.168.1.1"})
    after = int(time.time())

    assert status == 200
    session = body["data"]
    assert set(session) == KEYS
    assert session["user_id"] == user_id
    assert session["ip"] == "192.168.1.1"
    assert session["extra"] is None
    assert before <= session["create"] <= after
    assert session["activity"] == session["create"]
    token = uuid.UUID(session["token"])
    assert session["token"] == str(token)  # lowercase, hyphenated
    assert token.version == 4
    assert token.variant == uuid.RFC_4122


async def test_new_tokens_differ(client, user_id):
    tokens = {(await new_session(client, user_id))["token"] for _ in range(20)}
    assert len(tokens) == 20


async def test_largest_user_id_is_accepted(client):
    session = await new_session(client, 2**63 - 1)
    assert session["user_id"] == 2**63 - 1


async def test_many_leading_zeros_are_still_plain_decimal(client, user_id):
    status, body = await call(client, "/user", params={"id": "0" * 5000 + str(user_id)})
    assert (status, body["data"]) == (200, [])


async def test_leading_zeros_are_plain_decimal(client, user_id):
    status, body = await call(client, "/new", params={"user_id": f"00{user_id}", "ip": "192.0.2.1"})
    assert status == 200
    assert body["data"]["user_id"] == user_id


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "-1",
        "1.5",
        "1.0",
        "1e3",
        "+1",
        " 1",
        "1 ",
        "0x10",
        "1_000",
        "abc",
        str(2**63),
        str(2**64),
        "9" * 400,
        "9" * 5000,
        "0" * 5000,
        "١٢٣",
        "²",
    ],
)
async def test_bad_user_id(client, value):
    status, body = await call(client, "/new", params={"user_id": value, "ip": "192.0.2.1"})
    assert (status, body["code"]) == (400, "invalid_user_id")


async def test_missing_user_id(client):
    status, body = await call(client, "/new", params={"ip": "192.0.2.1"})
    assert (status, body["code"]) == (400, "invalid_user_id")
    assert body["message"] == "Parameter user_id is required."


async def test_repeated_user_id(client):
    status, body = await call(
        client, "/new", params=[("user_id", "1"), ("user_id", "2"), ("ip", "192.0.2.1")]
    )
    assert (status, body["code"]) == (400, "invalid_user_id")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("192.168.1.1", "192.168.1.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        # 45 characters, the longest an address can be written.
        ("0000:0000:0000:0000:0000:ffff:192.168.100.200", "192.168.100.200"),
        ("::1", "::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
async def test_ip_is_stored_canonical(client, user_id, given, stored):
    session = await new_session(client, user_id, given)
    assert session["ip"] == stored


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.2.3",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.4 ",
        "example.com",
        "fe80::1%eth0",
        "2001:db8::1::2",
        "::g",
        "1.2.3.4/24",
        "\x00",
        "1.2.3.4\x00",
        "1" * 5000,
    ],
)
async def test_bad_ip(client, user_id, value):
    status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": value})
    assert (status, body["code"]) == (400, "invalid_ip")


async def test_missing_ip(client, user_id):
    status, body = await call(client, "/new", params={"user_id": str(user_id)})
    assert (status, body["code"]) == (400, "invalid_ip")


async def test_user_id_is_checked_before_ip(client):
    status, body = await call(client, "/new", params={"user_id": "x", "ip": "x"})
    assert (status, body["code"]) == (400, "invalid_user_id")


async def test_bad_input_writes_nothing(client, user_id):
    await call(client, "/new", params={"user_id": str(user_id), "ip": "nope"})
    status, body = await call(client, "/user", params={"id": str(user_id)})
    assert (status, body["data"]) == (200, [])
