"""Access control, secrets kept out of logs and reprs, Tarantool rights, token randomness."""

from __future__ import annotations

import signal
import uuid

import asynctnt
import pytest
from asynctnt.exceptions import TarantoolDatabaseError

from sessions.app import create_app
from sessions.config import Settings
from sessions.storage import _new_token

from .conftest import PASSWORD, call, new_session, settings_for
from .service import Service


@pytest.fixture
async def keyed(aiohttp_client, tarantool):
    return await aiohttp_client(create_app(settings_for(tarantool, api_keys="old-key, new-key")))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic new-key"},
        {"Authorization": "new-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer new-key-and-more"},
    ],
)
@pytest.mark.parametrize("path", ["/new?user_id=1&ip=192.0.2.1", "/user?id=1", "/nope"])
async def test_without_a_valid_key_everything_is_401(keyed, headers, path):
    status, body = await call(keyed, path, headers=headers)
    assert (status, body["code"]) == (401, "unauthorized")


async def test_401_names_the_scheme(keyed):
    response = await keyed.get("/user?id=1")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("key", ["old-key", "new-key"])
async def test_any_configured_key_works_for_rotation(keyed, key, user_id):
    headers = {"Authorization": f"Bearer {key}"}
    session = await new_session(keyed, user_id, headers=headers)
    status, _ = await call(keyed, "/get", params={"token": session["token"]}, headers=headers)
    assert status == 200


async def test_no_keys_means_open(client, user_id):
    await new_session(client, user_id)


def test_settings_never_show_secrets():
    settings = Settings(
        tarantool="127.0.0.1:3301", tarantool_password="s3cret-pw", api_keys="k3y-one,k3y-two"
    )
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cret-pw" not in text
        assert "k3y-one" not in text


def test_logs_never_contain_tokens_or_secrets(tmp_path):
    service = Service(
        tmp_path / "data",
        SESSIONS_ACCESS_LOG="true",
        SESSIONS_LOG_LEVEL="DEBUG",
        SESSIONS_TARANTOOL_PASSWORD="pw-should-not-show",
    )
    try:
        status, body = service.request("/new?user_id=1&ip=192.0.2.1")
        token = body["data"]["token"]
        assert service.request(f"/get?token={token}")[0] == 200
        assert service.request(f"/get?token={token.upper()}&except={token}")[0] == 200
        assert service.request(f"/get?token={token.replace('-', '')}")[0] == 404
        # aiohttp quotes a request line it cannot parse in its error log.
        status, _, _ = service.raw(b"GET /get?token=" + token.encode() + b"x" * 9000 + b" HTTP/1.1\r\n\r\n")
        assert status == 400
        assert service.request(f"/del?token={token}")[0] == 200
    finally:
        service.stop(signal.SIGTERM)
    log = service.output()
    assert '"GET /get?token=<redacted>' in log  # the access log was on
    for secret in (token, token.upper(), token.replace("-", ""), "pw-should-not-show"):
        assert secret not in log
    assert "Traceback" not in log.split("Error handling request")[0]


async def test_guest_can_do_nothing(tarantool):
    host, port = tarantool.address
    guest = asynctnt.Connection(
        host=host, port=port, fetch_schema=False, auto_refetch_schema=False, reconnect_timeout=0
    )
    await guest.connect()
    try:
        for name in ("sessions.info", "box.schema.user.info", "box.space.sessions:len"):
            with pytest.raises(TarantoolDatabaseError, match="denied"):
                await guest.call(name, [])
    finally:
        await guest.disconnect()


async def test_service_user_may_only_call_the_procedures(tarantool):
    host, port = tarantool.address
    conn = asynctnt.Connection(
        host=host,
        port=port,
        username="sessions",
        password=PASSWORD,
        fetch_schema=False,
        auto_refetch_schema=False,
        reconnect_timeout=0,
    )
    await conn.connect()
    try:
        assert (await conn.call("sessions.info", []))[0]["schema_version"] >= 2
        with pytest.raises(TarantoolDatabaseError, match="denied"):
            await conn.eval("return box.space.sessions:len()")
        with pytest.raises(TarantoolDatabaseError, match="denied"):
            await conn.call("box.space.sessions:truncate", [])
        with pytest.raises(TarantoolDatabaseError, match="denied"):
            await conn.select(512)  # the first user space: sessions
    finally:
        await conn.disconnect()


def test_tokens_are_random_version_4_uuids():
    tokens = [uuid.UUID(bytes=_new_token()) for _ in range(100_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(t.version == 4 and t.variant == uuid.RFC_4122 for t in tokens)
    # Every one of the 122 random bits takes both values.
    ones = 0
    for t in tokens[:2000]:
        ones |= t.int
    assert bin(ones).count("1") == 122 + 2  # plus the fixed version and variant bits


def test_non_loopback_without_keys_warns(tmp_path):
    service = Service(tmp_path / "data", SESSIONS_HOST="0.0.0.0")
    service.stop(signal.SIGTERM)
    assert "without SESSIONS_API_KEYS" in service.output()
