"""Idle sessions: invisible once older than the TTL, and purged by the fiber in Tarantool."""

from __future__ import annotations

import asyncio
import time

import pytest

from sessions.console import Console

from .conftest import (
    call,
    days_ago,
    frozen_tarantool,
    lua_bulk_insert,
    lua_session,
    new_session,
    set_activity,
    settings_for,
    wait_for_purge_passes,
)

# What these tests check is done by Tarantool: they run on each release (tests/conftest.py).
pytestmark = pytest.mark.each_release

DAY = 86400


async def test_session_idle_longer_than_180_days_is_gone_everywhere(client, console, user_id, ip):
    live = await new_session(client, user_id, ip)
    idle = await new_session(client, user_id, ip)
    set_activity(console, live["token"], days_ago(179))
    set_activity(console, idle["token"], days_ago(181))

    assert (await call(client, "/get", params={"token": idle["token"]}))[0] == 404
    assert (await call(client, "/del", params={"token": idle["token"]}))[0] == 404
    for path, params in (("/user", {"id": str(user_id)}), ("/ip", {"ip": ip})):
        listed = (await call(client, path, params=params))[1]["data"]
        assert [s["token"] for s in listed] == [live["token"]]
    assert (await call(client, "/get", params={"token": live["token"]}))[0] == 200


async def test_ttl_boundary_never_ends_a_session_early(client, console, user_id):
    session = await new_session(client, user_id)
    set_activity(console, session["token"], int(time.time()) - 180 * DAY + 5)
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200


async def test_idle_ttl_is_configurable(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool, idle_ttl=2 * DAY))
    admin = Console(fresh_tarantool.console_path)
    try:
        session = await new_session(client, user_id)
        set_activity(admin, session["token"], days_ago(3))
        assert (await call(client, "/get", params={"token": session["token"]}))[0] == 404
    finally:
        admin.close()


async def test_purge_fiber_deletes_idle_sessions_in_batches(serve, fresh_tarantool, user_id):
    client = await serve(settings_for(fresh_tarantool, idle_ttl=DAY))
    admin = Console(fresh_tarantool.console_path)
    try:
        live = await new_session(client, user_id)
        # 25 000 sessions idle for two days, written straight into the space.
        admin.eval(lua_bulk_insert(25000, lua_session(user_id + 1, "'192.0.2.1'", days_ago(2))))
        # Any call tells the fiber the TTL; it then purges without further prompting.
        assert (await call(client, "/get", params={"token": live["token"]}))[0] == 200
        deadline = time.monotonic() + 20
        while admin.eval("return box.space.sessions:len()") > 1:
            assert time.monotonic() < deadline, "idle sessions were not purged"
            # The instance keeps serving while it purges.
            assert (await call(client, "/get", params={"token": live["token"]}))[0] == 200
            await asyncio.sleep(0.05)
        assert admin.eval("return box.space.sessions:len()") == 1
        # The count the metrics report is exact, and passes with nothing to do add nothing.
        await wait_for_purge_passes(admin, 2)
        assert admin.eval("return require('sessions.expiry').stats().purged") == 25000
    finally:
        admin.close()


async def test_short_ttl_end_to_end(serve, fresh_tarantool, user_id):
    """Real time, a one-second TTL: the session lapses and the fiber purges it."""
    client = await serve(settings_for(fresh_tarantool, idle_ttl=1))
    admin = Console(fresh_tarantool.console_path)
    try:
        session = await new_session(client, user_id)
        assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
        deadline = time.monotonic() + 10
        while admin.eval("return box.space.sessions:len()") > 0:
            assert time.monotonic() < deadline, "session was not purged"
            await asyncio.sleep(0.1)
        assert (await call(client, "/get", params={"token": session["token"]}))[0] == 404
    finally:
        admin.close()


TTL = 100
T0 = 1_700_000_000


@pytest.mark.parametrize(("idle", "live"), [(TTL - 1, True), (TTL, True), (TTL + 1, False)])
async def test_the_exact_ttl_boundary_for_every_method_and_the_purge(serve, tmp_path, idle, live):
    """A session idle exactly `ttl` seconds is live everywhere; one second more, gone everywhere."""
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=TTL, at=T0) as (instance, admin):
        client = await serve(settings_for(instance, idle_ttl=TTL))
        ip = "192.0.2.77"
        names = ("get", "del", "purged", "session", "session/del")
        made = {}
        for name in names:
            made[name] = (await call(client, "/new", params={"user_id": "5", "ip": ip, "with": "id"}))[1][
                "data"
            ]
        assert all(s["activity"] == T0 for s in made.values())
        admin.eval(f"require('sessions.clock').freeze({T0 + idle})")

        for path, params in (("/user", {"id": "5"}), ("/ip", {"ip": ip})):
            listed = (await call(client, path, params=params))[1]["data"]
            assert len(listed) == (5 if live else 0), path
        counted = (await call(client, "/user/count", params={"id": "5"}))[1]["data"]
        assert counted == {"count": 5 if live else 0}
        counted = (await call(client, "/ip/count", params={"ip": ip}))[1]["data"]
        assert counted == {"count": 5 if live else 0}
        for path in ("/session", "/session/del"):
            status, _ = await call(client, path, params={"id": made[path.strip("/")]["id"]})
            assert status == (200 if live else 404), path
        status, body = await call(client, "/get", params={"token": made["get"]["token"]})
        assert status == (200 if live else 404)
        if live:
            assert body["data"]["activity"] == T0 + idle
        status, _ = await call(client, "/del", params={"token": made["del"]["token"]})
        assert status == (200 if live else 404)

        await wait_for_purge_passes(admin, 2)
        stored = admin.eval(
            f"return box.space.sessions:get(require('uuid').fromstr('{made['purged']['token']}')) ~= nil"
        )
        assert stored is live


@pytest.mark.parametrize(("idle", "live"), [(TTL, True), (TTL + 1, False)])
async def test_the_purge_renews_a_session_a_raised_ttl_keeps_alive(serve, tmp_path, idle, live):
    """A session stored with an earlier expiry than the rules now give it (written when the
    TTL was shorter) is due for the purge, which must check it and move its expiry on, not
    delete it, up to and including the exact boundary."""
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=TTL, at=T0) as (instance, admin):
        client = await serve(settings_for(instance, idle_ttl=TTL))
        session = await new_session(client, 5)
        key = f"require('uuid').fromstr('{session['token']}')"
        admin.eval(f"box.space.sessions:update({key}, {{{{'=', 'expires', {T0 + 10}}}}})")
        admin.eval(f"require('sessions.clock').freeze({T0 + idle})")
        await wait_for_purge_passes(admin, 2)
        stored = admin.eval(f"local t = box.space.sessions:get({key}) return t and t.expires")
        assert stored == (T0 + TTL if live else None)


async def test_the_purge_idles_quietly_on_an_empty_store(serve, fresh_tarantool):
    client = await serve(settings_for(fresh_tarantool))
    assert (await call(client, "/get", params={"token": "61494096-9af7-49ba-9fb4-e89c0811e6d3"}))[0] == 404
    admin = Console(fresh_tarantool.console_path)
    try:
        admin.eval("box.space.sessions:truncate()")
        await wait_for_purge_passes(admin, 2)
    finally:
        admin.close()
    assert "expiry step failed" not in fresh_tarantool.log_path.read_text()


# --- lapsed is final -------------------------------------------------------------------


def _stored(admin: Console, token: str) -> bool:
    return bool(admin.eval(f"return box.space.sessions:get(require('uuid').fromstr('{token}')) ~= nil"))


@pytest.mark.parametrize("observed", [True, False])
async def test_a_session_lapsed_under_a_shorter_ttl_never_comes_back(serve, tmp_path, observed):
    """Serve with a TTL of 60, open a session, 15 s later serve with 10 (the session has
    lapsed), then with 60 again: it stays gone, whether or not anybody looked at it meanwhile,
    and it is purged."""
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=60, at=T0) as (instance, admin):
        long = await serve(settings_for(instance, idle_ttl=60))
        session = await new_session(long, 5)
        admin.eval(f"require('sessions.clock').freeze({T0 + 15})")
        short = await serve(settings_for(instance, idle_ttl=10))
        if observed:
            assert (await call(short, "/get", params={"token": session["token"]}))[0] == 404
        else:  # a call that names neither session: the rules change all the same
            assert (await call(short, "/user", params={"id": "7"}))[0] == 200
        await wait_for_purge_passes(admin, 3)
        assert not _stored(admin, session["token"])
        assert (await call(long, "/get", params={"token": session["token"]}))[0] == 404
        assert (await call(long, "/user", params={"id": "5"}))[1]["data"] == []


async def test_a_raised_ttl_keeps_a_session_that_had_not_lapsed(serve, tmp_path):
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=10, at=T0) as (instance, admin):
        short = await serve(settings_for(instance, idle_ttl=10))
        session = await new_session(short, 5)
        admin.eval(f"require('sessions.clock').freeze({T0 + 10})")  # idle exactly the TTL: live
        long = await serve(settings_for(instance, idle_ttl=60))
        assert (await call(long, "/user", params={"id": "7"}))[0] == 200  # the rules change now
        admin.eval(f"require('sessions.clock').freeze({T0 + 60})")
        await wait_for_purge_passes(admin, 3)
        assert (await call(long, "/get", params={"token": session["token"]}))[0] == 200


async def test_a_session_one_second_past_a_shorter_ttl_at_the_change_is_lapsed(serve, tmp_path):
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=10, at=T0) as (instance, admin):
        short = await serve(settings_for(instance, idle_ttl=10))
        session = await new_session(short, 5)
        admin.eval(f"require('sessions.clock').freeze({T0 + 11})")  # lapsed before any change
        long = await serve(settings_for(instance, idle_ttl=60))
        assert (await call(long, "/get", params={"token": session["token"]}))[0] == 404
        assert not _stored(admin, session["token"])
