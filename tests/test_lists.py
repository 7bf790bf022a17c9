"""`/user` and `/ip`: every live session of a user or an address, newest activity first."""

from __future__ import annotations

import pytest

from .conftest import (
    call,
    days_ago,
    lua_bulk_insert,
    lua_session,
    new_session,
    set_activity,
    settings_for,
)


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


async def _pages(client, path: str, params: dict[str, str]) -> list[list[dict]]:
    """Every page of a listing, following Link rel="next" as a client would."""
    pages = []
    response = await client.get(path, params=params)
    while True:
        assert response.status == 200, await response.text()
        assert len(pages) < 1000, "the Link header never ends"
        pages.append((await response.json())["data"])
        if "next" not in response.links:
            return pages
        response = await client.get(response.links["next"]["url"].path_qs)


@pytest.mark.parametrize("path", ["/user", "/ip"])
async def test_pages_cover_every_session_once_in_order(client, console, user_id, ip, path):
    made = []
    for age in range(7):
        session = await new_session(client, user_id, ip)
        # Two sessions per second of activity: ties are ordered by token, and a page
        # boundary may fall between them.
        set_activity(console, session["token"], days_ago(1) - age // 2)
        made.append(session["token"])
    params = {"id": str(user_id)} if path == "/user" else {"ip": ip}
    whole = (await call(client, path, params=params))[1]["data"]
    for limit in (1, 2, 3, 7, 8):
        pages = await _pages(client, path, {**params, "limit": str(limit)})
        assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
        assert 1 <= len(pages[-1]) <= limit
        assert [s["token"] for p in pages for s in p] == [s["token"] for s in whole]
    assert sorted(s["token"] for s in whole) == sorted(made)


async def test_no_link_when_nothing_follows(client, user_id):
    await new_session(client, user_id)
    response = await client.get("/user", params={"id": str(user_id), "limit": "1"})
    assert "Link" not in response.headers
    response = await client.get("/user", params={"id": str(user_id + 1)})
    assert "Link" not in response.headers and (await response.json())["data"] == []


async def test_the_next_link_keeps_the_query(client, user_id):
    for _ in range(2):
        await new_session(client, user_id)
    response = await client.get("/user", params={"id": str(user_id), "limit": "1"})
    link = response.links["next"]["url"]
    assert link.path == "/user"
    assert link.query["id"] == str(user_id) and link.query["limit"] == "1" and link.query["after"]
    assert response.headers["Link"].endswith('>; rel="next"')


@pytest.mark.parametrize(
    ("limit", "ok"),
    [
        ("0", False),
        ("1", True),
        ("1000", True),
        ("1001", False),
        ("-1", False),
        ("01", True),
        ("1e2", False),
        ("", False),
        ("\u0661", False),
        ("99999", False),
    ],
)
async def test_limit_bounds(client, user_id, limit, ok):
    status, body = await call(client, "/user", params={"id": str(user_id), "limit": limit})
    assert status == (200 if ok else 400), body
    if not ok:
        assert body["code"] == "invalid_limit"


@pytest.mark.parametrize("cursor", ["", "x", "bm9wZQ", "MTIzLm5vdC1hLXRva2Vu", "A" * 81, "é", "MTIz"])
async def test_a_cursor_the_service_did_not_give_is_refused(client, user_id, cursor):
    status, body = await call(client, "/user", params={"id": str(user_id), "after": cursor})
    assert (status, body["code"]) == (400, "invalid_cursor")


async def test_the_default_page_is_the_configured_list_max(serve, tarantool, user_id):
    client = await serve(settings_for(tarantool, list_max=2))
    for _ in range(3):
        await new_session(client, user_id)
    pages = await _pages(client, "/user", {"id": str(user_id)})
    assert [len(p) for p in pages] == [2, 1]


async def test_paging_while_sessions_are_added_never_repeats_one(client, console, user_id):
    originals = []
    for i in range(5):
        session = await new_session(client, user_id)
        set_activity(console, session["token"], days_ago(1) - i)
        originals.append(session["token"])
    seen: list[str] = []
    response = await client.get("/user", params={"id": str(user_id), "limit": "2"})
    while True:
        seen += [s["token"] for s in (await response.json())["data"]]
        await new_session(client, user_id)  # newer than everything: lands before the cursor
        if "next" not in response.links:
            break
        response = await client.get(response.links["next"]["url"].path_qs)
    # Sessions opened meanwhile are newer than the cursor: each page goes on where the last
    # one ended, so every session that was there is seen exactly once.
    assert seen == originals


async def test_a_page_holds_at_most_page_max_bytes_of_sessions(serve, settings, console, user_id):
    # 80 sessions of about 60 KB each: far more than the page budget (1 MiB by default; this
    # test sets 2 MiB) in all.
    client = await serve(settings.model_copy(update={"page_max_bytes": 2 * 2**20}))
    console.eval(
        lua_bulk_insert(
            80,
            lua_session(
                user_id, "'192.0.2.44'", "require('sessions.clock').now()", "{x = string.rep('y', 60000)}"
            ),
        )
    )
    size = console.eval(
        f"return box.space.sessions.index.user:select({{{user_id}}}, {{limit = 1}})[1]:bsize()"
    )
    response = await client.get("/user", params={"id": str(user_id)})
    first = (await response.json())["data"]
    assert len(first) == 2 * 2**20 // size
    assert "next" in response.links
    pages = await _pages(client, "/user", {"id": str(user_id)})
    assert sum(len(page) for page in pages) == 80
