"""Errors outside the methods' own rules: unknown paths, methods, and a storage outage."""

from __future__ import annotations

import time

import pytest

from .conftest import call, make_instance, new_session, settings_for


@pytest.mark.parametrize("path", ["/", "/nope", "/new/", "/NEW", "/get/extra", "/favicon.ico"])
async def test_unknown_path_is_404_not_found(client, path):
    status, body = await call(client, path)
    assert (status, body["code"]) == (404, "not_found")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/new", "/get", "/del", "/user", "/ip"])
async def test_other_methods_are_405(client, method, path):
    status, body = await call(client, path, method)
    assert (status, body["code"]) == (405, "method_not_allowed")


async def test_head_opens_no_session(client, user_id):
    response = await client.head("/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
    assert response.status == 405
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []


async def test_storage_outage_is_503_never_a_wrong_answer(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool))
    session = await new_session(client, user_id)

    await fresh_tarantool.stop()

    for path, params in [
        ("/get", {"token": session["token"]}),
        ("/del", {"token": session["token"]}),
        ("/new", {"user_id": str(user_id), "ip": "192.0.2.1"}),
        ("/user", {"id": str(user_id)}),
        ("/ip", {"ip": "192.0.2.1"}),
    ]:
        started = time.monotonic()
        status, body = await call(client, path, params=params)
        assert (status, body["code"]) == (503, "storage_unavailable"), path
        assert time.monotonic() - started < 2

    # Validation still answers without the storage.
    status, body = await call(client, "/new", params={"user_id": "0", "ip": "192.0.2.1"})
    assert (status, body["code"]) == (400, "invalid_user_id")


async def test_full_memory_refuses_new_sessions_and_keeps_serving_reads(serve, tmp_path, user_id):
    instance = make_instance(tmp_path / "small", memory=64 * 2**20)
    await instance.start()
    try:
        limit = 2**20 - 4096
        client = await serve(settings_for(instance, extra_max_bytes=limit))
        first = await new_session(client, user_id)
        blob = {"blob": "x" * (limit - 100)}
        for _ in range(200):
            status, body = await call(
                client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, json=blob
            )
            if status != 200:
                break
        assert (status, body["code"]) == (503, "storage_full")
        assert (await call(client, "/get", params={"token": first["token"]}))[0] == 200
        assert (await call(client, "/user", params={"id": str(user_id)}))[0] == 200
        # Ending sessions frees memory for new ones.
        for session in (await call(client, "/user", params={"id": str(user_id)}))[1]["data"][:10]:
            assert (await call(client, "/del", params={"token": session["token"]}))[0] == 200
        assert (await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"}))[0] == 200
    finally:
        await instance.stop()
