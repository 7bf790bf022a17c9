"""Session management beside the seed's five methods: sign out everywhere, rotation, a
session's own TTL, a maximum lifetime, a cap per user, and the token in a header."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessions.console import Console
from sessions.embedded import EmbeddedTarantool
from sessions_client import SessionsClient

from .conftest import (
    PASSWORD,
    call,
    frozen_tarantool,
    lua_bulk_insert,
    lua_session,
    make_instance,
    new_session,
    set_activity,
    settings_for,
    wait_for_purge_passes,
)

# What these tests check is done by Tarantool: they run on each release (tests/conftest.py).
pytestmark = pytest.mark.each_release

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000
TOKEN = "61494096-9af7-49ba-9fb4-e89c0811e6d3"


async def _tokens(client: Any, path: str, params: dict[str, str]) -> list[str]:
    status, body = await call(client, path, params=params)
    assert status == 200, body
    return [s["token"] for s in body["data"]]


# --- /user/del and /ip/del -----------------------------------------------------------------


async def test_user_del_ends_every_live_session_of_the_user_only(client, user_id):
    mine = [await new_session(client, user_id) for _ in range(3)]
    other = await new_session(client, user_id + 1)
    status, body = await call(client, "/user/del", params={"id": str(user_id)})
    assert (status, body["data"]) == (200, {"deleted": 3})
    for session in mine:
        assert (await call(client, "/get", params={"token": session["token"]}))[0] == 404
    assert (await call(client, "/get", params={"token": other["token"]}))[0] == 200
    assert (await call(client, "/user/del", params={"id": str(user_id)}))[1]["data"] == {"deleted": 0}


async def test_user_del_except_keeps_the_caller_signed_in(client, user_id):
    keep, *others = [await new_session(client, user_id) for _ in range(3)]
    status, body = await call(
        client, "/user/del", params={"id": str(user_id), "except": keep["token"].upper()}
    )
    assert (status, body["data"]) == (200, {"deleted": 2})
    assert await _tokens(client, "/user", {"id": str(user_id)}) == [keep["token"]]
    assert others


@pytest.mark.parametrize("kind", ["another user's", "unknown", "malformed", "lapsed"])
async def test_user_del_with_a_bad_except_ends_nothing(client, console, user_id, kind):
    sessions = [await new_session(client, user_id) for _ in range(2)]
    foreign = await new_session(client, user_id + 1)
    lapsed = await new_session(client, user_id)
    set_activity(console, lapsed["token"], int(time.time()) - 200 * 86400)
    keep = {
        "another user's": foreign["token"],
        "unknown": TOKEN,
        "malformed": "nope",
        "lapsed": lapsed["token"],
    }
    status, body = await call(client, "/user/del", params={"id": str(user_id), "except": keep[kind]})
    assert (status, body["code"]) == (404, "token_not_found")
    assert sorted(await _tokens(client, "/user", {"id": str(user_id)})) == sorted(
        s["token"] for s in sessions
    )


async def test_ip_del_ends_every_live_session_at_the_address(client, user_id, ip):
    there = [await new_session(client, user_id + n, ip) for n in range(3)]
    elsewhere = await new_session(client, user_id, "192.0.2.55")
    # Any spelling of the address is the address.
    status, body = await call(client, "/ip/del", params={"ip": ip.upper()})
    assert (status, body["data"]) == (200, {"deleted": 3})
    assert await _tokens(client, "/ip", {"ip": ip}) == []
    assert (await call(client, "/get", params={"token": elsewhere["token"]}))[0] == 200
    assert there


async def test_bulk_deletes_count_only_live_sessions(client, console, user_id):
    live = await new_session(client, user_id)
    lapsed = await new_session(client, user_id)
    set_activity(console, lapsed["token"], int(time.time()) - 200 * 86400)
    assert (await call(client, "/user/del", params={"id": str(user_id)}))[1]["data"] == {"deleted": 1}
    assert live


async def test_bulk_delete_of_a_big_user_goes_in_bounded_steps_while_others_are_served(
    serve, fresh_tarantool, user_id
):
    client = await serve(settings_for(fresh_tarantool))
    admin = Console(fresh_tarantool.console_path)
    try:
        admin.eval(
            lua_bulk_insert(12000, lua_session(user_id, "'192.0.2.8'", "require('sessions.clock').now()"))
        )
        keep = await new_session(client, user_id)
        bystander = await new_session(client, user_id + 1)

        async def others() -> int:
            served = 0
            for _ in range(30):
                assert (await call(client, "/get", params={"token": bystander["token"]}))[0] == 200
                served += 1
                await asyncio.sleep(0)
            return served

        (status, body), served = await asyncio.gather(
            call(client, "/user/del", params={"id": str(user_id), "except": keep["token"]}), others()
        )
        assert (status, body["data"]) == (200, {"deleted": 12000})
        assert served == 30
        assert await _tokens(client, "/user", {"id": str(user_id)}) == [keep["token"]]
    finally:
        admin.close()


# --- /rotate -------------------------------------------------------------------------------


async def test_rotate_keeps_the_session_under_a_new_token(client, console, user_id):
    old = await new_session(client, user_id, "192.0.2.9", json={"role": "user"})
    set_activity(console, old["token"], old["activity"] - 100)
    status, body = await call(client, "/rotate", params={"token": old["token"]})
    assert status == 200, body
    new = body["data"]
    assert new["token"] != old["token"]
    assert {k: new[k] for k in ("user_id", "ip", "extra", "create")} == {
        k: old[k] for k in ("user_id", "ip", "extra", "create")
    }
    assert new["activity"] >= old["activity"]
    # The old token is gone at once; the new one works.
    assert (await call(client, "/get", params={"token": old["token"]}))[0] == 404
    assert (await call(client, "/rotate", params={"token": old["token"]}))[0] == 404
    assert (await call(client, "/get", params={"token": new["token"]}))[0] == 200
    assert await _tokens(client, "/user", {"id": str(user_id)}) == [new["token"]]


async def test_rotating_a_lapsed_or_unknown_token_is_not_found(client, console, user_id):
    session = await new_session(client, user_id)
    set_activity(console, session["token"], int(time.time()) - 200 * 86400)
    for token in (session["token"], TOKEN, "junk"):
        status, body = await call(client, "/rotate", params={"token": token})
        assert (status, body["code"]) == (404, "token_not_found")


# --- the token in a header -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/get", "/del", "/rotate"])
async def test_the_token_may_come_in_a_header(client, user_id, path):
    session = await new_session(client, user_id)
    status, body = await call(client, path, headers={"X-Session-Token": session["token"]})
    assert status == 200, body
    assert body["data"]["user_id"] == user_id


@pytest.mark.parametrize("path", ["/get", "/del", "/rotate"])
async def test_a_query_token_and_a_different_header_token_are_refused(client, user_id, path):
    a, b = await new_session(client, user_id), await new_session(client, user_id)
    status, body = await call(
        client, path, params={"token": a["token"]}, headers={"X-Session-Token": b["token"]}
    )
    assert (status, body["code"]) == (400, "bad_request")
    # Nothing happened to either.
    assert len(await _tokens(client, "/user", {"id": str(user_id)})) == 2
    # The same token both ways is fine, and so is a malformed header a plain not-found.
    status, _ = await call(
        client, path, params={"token": a["token"]}, headers={"X-Session-Token": a["token"].upper()}
    )
    assert status == 200
    assert (await call(client, path, headers={"X-Session-Token": "nope"}))[1]["code"] == "token_not_found"


# --- a session's own TTL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "ok"),
    [
        ("1", True),
        ("15552000", True),
        ("15552001", False),
        ("0", False),
        ("-1", False),
        ("1.5", False),
        ("", False),
        ("x", False),
    ],
)
async def test_ttl_bounds(client, user_id, ttl, ok):
    status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1", "ttl": ttl})
    assert status == (200 if ok else 400), body
    if not ok:
        assert body["code"] == "invalid_ttl"


async def test_a_repeated_ttl_is_refused(client, user_id):
    status, body = await call(
        client, "/new", params=[("user_id", str(user_id)), ("ip", "192.0.2.1"), ("ttl", "5"), ("ttl", "5")]
    )
    assert (status, body["code"]) == (400, "invalid_ttl")


@pytest.fixture
async def frozen(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedTarantool, Console]]:
    """A Tarantool of its own with its clock frozen at T0."""
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=1000, at=T0) as running:
        yield running


async def _new_with_ttl(client: Any, ttl: int) -> dict[str, Any]:
    status, body = await call(client, "/new", params={"user_id": "9", "ip": "192.0.2.60", "ttl": str(ttl)})
    assert status == 200, body
    return dict(body["data"])


def _at(admin: Console, second: int) -> None:
    admin.eval(f"require('sessions.clock').freeze({second})")


def _stored(admin: Console, token: str) -> bool:
    return bool(admin.eval(f"return box.space.sessions:get(require('uuid').fromstr('{token}')) ~= nil"))


@pytest.mark.parametrize(("idle", "live"), [(60, True), (61, False)])
async def test_a_sessions_own_ttl_is_exact_everywhere(serve, frozen, idle, live):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000))
    short = {n: await _new_with_ttl(client, 60) for n in ("get", "purge")}
    ordinary = await new_session(client, 9, "192.0.2.60")
    _at(admin, T0 + idle)
    listed = await _tokens(client, "/user", {"id": "9"})
    assert (short["get"]["token"] in listed) is live
    assert ordinary["token"] in listed  # the service's TTL is 1000
    assert (await call(client, "/get", params={"token": short["get"]["token"]}))[0] == (200 if live else 404)
    await wait_for_purge_passes(admin, 2)
    assert _stored(admin, short["purge"]["token"]) is live
    assert _stored(admin, ordinary["token"])


async def test_a_get_restarts_a_short_ttl(serve, frozen):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000))
    session = await _new_with_ttl(client, 60)
    _at(admin, T0 + 50)
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
    _at(admin, T0 + 110)  # 60 after the get
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
    _at(admin, T0 + 171)
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 404


# --- the maximum lifetime ------------------------------------------------------------------


@pytest.mark.parametrize(("age", "live"), [(500, True), (501, False)])
async def test_max_lifetime_ends_a_busy_session_exactly(serve, frozen, age, live):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000, max_lifetime=500))
    busy = await new_session(client, 9)
    kept = await new_session(client, 9)
    for second in range(T0 + 100, T0 + age, 100):  # used all the time
        _at(admin, second)
        for session in (busy, kept):
            assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
    _at(admin, T0 + age)
    assert (kept["token"] in await _tokens(client, "/user", {"id": "9"})) is live
    assert (await call(client, "/get", params={"token": busy["token"]}))[0] == (200 if live else 404)
    await wait_for_purge_passes(admin, 2)
    assert _stored(admin, kept["token"]) is live


async def test_a_lifetime_that_ends_between_two_pages(serve, frozen):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000, max_lifetime=500))
    old = [await new_session(client, 9) for _ in range(2)]
    _at(admin, T0 + 10)
    young = [await new_session(client, 9) for _ in range(2)]
    _at(admin, T0 + 20)
    # Newest opened first: the young ones, then the newer old one; the older one follows.
    response = await client.get("/user", params={"id": "9", "limit": "3"})
    first = [s["token"] for s in (await response.json())["data"]]
    assert first == [young[1]["token"], young[0]["token"], old[1]["token"]]
    _at(admin, T0 + 501)  # the old ones' lifetime is over, the young ones' is not
    response = await client.get(response.links["next"]["url"].path_qs)
    assert (await response.json())["data"] == []
    assert "next" not in response.links


# --- the cap per user ----------------------------------------------------------------------


async def test_a_cap_of_one_keeps_only_the_newest(serve, tarantool, user_id):
    client = await serve(settings_for(tarantool, max_per_user=1))
    first = await new_session(client, user_id)
    second = await new_session(client, user_id)
    assert await _tokens(client, "/user", {"id": str(user_id)}) == [second["token"]]
    assert (await call(client, "/get", params={"token": first["token"]}))[0] == 404


async def test_a_cap_ends_the_least_recently_active(serve, tarantool, console, user_id):
    client = await serve(settings_for(tarantool, max_per_user=3))
    a, b, c = [await new_session(client, user_id) for _ in range(3)]
    now = int(time.time())
    set_activity(console, a["token"], now - 30)
    set_activity(console, b["token"], now - 40)  # least recently active
    set_activity(console, c["token"], now - 20)
    lapsed = await new_session(client, user_id + 1)
    d = await new_session(client, user_id)
    assert sorted(await _tokens(client, "/user", {"id": str(user_id)})) == sorted(
        [a["token"], c["token"], d["token"]]
    )
    assert lapsed


# --- the Python client ---------------------------------------------------------------------


async def test_the_client_covers_the_additions(serve, tarantool, user_id):
    server = (await serve(settings_for(tarantool))).server
    async with SessionsClient(str(server.make_url("/"))) as sessions:
        first = await sessions.new(user_id, "192.0.2.70", ttl=60)
        second = await sessions.new(user_id, "192.0.2.71")
        rotated = await sessions.rotate(first.token)
        assert rotated.token != first.token and rotated.create == first.create
        assert await sessions.delete_user(user_id, keep=rotated.token) == 1
        assert [s.token for s in await sessions.by_user(user_id)] == [rotated.token]
        assert await sessions.delete_ip("192.0.2.70") == 1
        assert second


# --- an old snapshot -----------------------------------------------------------------------


@pytest.fixture
def schema_v2_scripts(tmp_path: Path) -> Path:
    """The Lua of the last release with schema v2, from this repository's history."""
    if shutil.which("git") is None:
        pytest.skip("needs git for the old release's Lua")
    archive = subprocess.run(
        ["git", "archive", "e8db18e", "tarantool"], cwd=ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.skip("this checkout has no history (a shallow clone)")
    into = tmp_path / "old"
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "tarantool"


def old_names(data: Path) -> dict[str, str]:
    """The settings of an embedded instance under the TT_* names releases before the
    project's own SESSIONS_TT_* ones read."""
    return {
        "TT_LISTEN": f"unix/:{data / 'tarantool.sock'}",
        "TT_CONSOLE_SOCKET": str(data / "tarantool.control"),
        "TT_WORK_DIR": str(data),
        "TT_LOG": str(data / "tarantool.log"),
        "TT_PID_FILE": str(data / "tarantool.pid"),
    }


async def _until_listening(path: Path, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
        assert time.monotonic() < deadline, f"nothing listens on {path}"
        await asyncio.sleep(0.05)


async def test_a_snapshot_of_the_previous_schema_starts_and_keeps_its_sessions(
    serve, tmp_path, schema_v2_scripts, tarantool_bin
):
    data = tmp_path / "data"
    old = EmbeddedTarantool(
        data_dir=data,
        scripts_dir=schema_v2_scripts,
        binary=tarantool_bin,
        user="sessions",
        password=PASSWORD,
        memory=64 * 2**20,
        wal_mode="write",
        idle_ttl=1000,
        startup_timeout=30,
        shutdown_timeout=10,
        # That release read Tarantool's own TT_* names.
        environment={
            name.removeprefix("SESSIONS_"): value for name, value in old_names(data.resolve()).items()
        },
    )
    await old.start()
    # Tarantool 2.11 applies that release's TT_LISTEN itself, at its first box.cfg: the socket
    # start() waits for opens before the script's migrations, and its console only after them.
    await _until_listening(old.console_path)
    now = int(time.time())
    with Console(old.console_path) as admin:
        admin.eval(
            f"""local uuid = require('uuid') local s = box.space.sessions
            s:insert{{uuid.fromstr('{TOKEN}'), 42, '192.0.2.42', {now - 50}, {now - 10}, {{a = 1}}}}
            s:insert{{uuid.new(), 42, '192.0.2.42', {now - 5000}, {now - 5000}, box.NULL}}
            box.snapshot()"""
        )
    await old.stop()

    new = make_instance(data, idle_ttl=1000)
    await new.start()
    try:
        with Console(new.console_path) as admin:
            schema = "require('sessions.schema')"
            assert admin.eval(f"return {schema}.version()") == admin.eval(f"return {schema}.VERSION")
            expires = admin.eval(f"return box.space.sessions:get(require('uuid').fromstr('{TOKEN}')).expires")
            assert expires == now - 10 + 1000  # its activity plus the idle TTL it was started with
        client = await serve(settings_for(new, idle_ttl=1000))
        status, body = await call(client, "/get", params={"token": TOKEN, "with": "id"})
        assert status == 200 and body["data"]["extra"] == {"a": 1} and body["data"]["create"] == now - 50
        # Its id (schema v7) is a UUIDv7 made from its create time, and finds it.
        made = uuid.UUID(body["data"]["id"])
        assert made.version == 7 and int.from_bytes(made.bytes[:6], "big") == (now - 50) * 1000
        status, peeked = await call(client, "/session", params={"id": str(made), "with": "id"})
        assert status == 200 and peeked["data"] == {k: v for k, v in body["data"].items() if k != "token"}
        # The lapsed one is gone for reads at once and for the purge soon.
        assert await _tokens(client, "/user", {"id": "42"}) == [TOKEN]
        deadline = time.monotonic() + 10
        with Console(new.console_path) as admin:
            while admin.eval("return box.space.sessions:len()") > 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        await new.stop()


@pytest.mark.parametrize(("age", "live"), [(1, True), (2, False)])
async def test_the_shortest_lifetime_is_one_second(serve, frozen, age, live):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000, max_lifetime=1))
    session = await new_session(client, 9)
    _at(admin, T0 + age)
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == (200 if live else 404)


async def test_the_cap_counts_a_session_idle_exactly_the_ttl(serve, frozen):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000, max_per_user=2))
    oldest = await new_session(client, 9)
    _at(admin, T0 + 500)
    middle = await new_session(client, 9)
    _at(admin, T0 + 1000)  # the oldest is idle exactly the TTL: still live, so it counts
    newest = await new_session(client, 9)
    assert await _tokens(client, "/user", {"id": "9"}) == [newest["token"], middle["token"]]
    assert (await call(client, "/get", params={"token": oldest["token"]}))[0] == 404


async def test_a_repeated_token_header_is_refused(client, user_id):
    session = await new_session(client, user_id)
    headers = [("X-Session-Token", session["token"]), ("X-Session-Token", session["token"])]
    status, body = await call(client, "/del", headers=headers)
    assert (status, body["code"]) == (400, "bad_request")
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
