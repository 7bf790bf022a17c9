"""`/user` and `/ip`: every live session of a user or an address, newest opened first, in
pages whose cursors are a place in that order and nothing else."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import uuid

import pytest
from yarl import URL

from .conftest import (
    call,
    days_ago,
    lua_bulk_insert,
    lua_session,
    new_session,
    set_activity,
    settings_for,
)
from .sharded import console_by_mode, settings_by_mode, sharded_cluster  # noqa: F401 (fixtures: both modes)


async def test_user_lists_own_sessions_newest_opened_first(client, console, user_id):
    tokens = []
    for age in (3, 1, 2):  # activity does not order the list
        session = await new_session(client, user_id)
        set_activity(console, session["token"], days_ago(age))
        tokens.append(session["token"])
    await new_session(client, user_id + 1)  # someone else

    status, body = await call(client, "/user", params={"id": str(user_id)})

    assert status == 200
    assert [s["token"] for s in body["data"]] == tokens[::-1]
    assert all(s["user_id"] == user_id for s in body["data"])


async def test_neither_a_get_nor_a_rotate_moves_a_session_in_the_list(client, user_id):
    first = await new_session(client, user_id)
    second = await new_session(client, user_id)
    await call(client, "/get", params={"token": first["token"]})
    _, rotated = await call(client, "/rotate", params={"token": second["token"]})

    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert [s["token"] for s in listed] == [rotated["data"]["token"], first["token"]]


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
    for _ in range(7):
        session = await new_session(client, user_id, ip)
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


@pytest.mark.parametrize("path", ["/user", "/ip"])
async def test_the_next_link_is_relative_so_it_works_behind_a_path_prefix(client, user_id, ip, path):
    """Behind a gateway that serves the service under a prefix (`http://gateway/sessions`),
    the next page is under the same prefix: the Link is a relative reference, resolved
    against the URL of the page that carries it (RFC 3986, 5.2), never an absolute path."""
    for _ in range(2):
        await new_session(client, user_id, ip)
    params = {"id": str(user_id)} if path == "/user" else {"ip": ip}
    response = await client.get(path, params={**params, "limit": "1"})
    target = re.fullmatch(r'<([^>]*)>; rel="next"', response.headers["Link"])
    assert target is not None, response.headers["Link"]
    reference = URL(target[1])
    assert not reference.is_absolute() and not reference.path.startswith("/"), reference
    for base in ("http://127.0.0.1:8080", "https://gateway.example/sessions", "http://gw/a/b"):
        page = URL(base + path).with_query(params)
        resolved = page.join(reference)
        assert resolved.path == URL(base).path.rstrip("/") + path, (base, resolved)
        assert resolved.query["limit"] == "1" and resolved.query["after"]


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


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x",
        "bm9wZQ",
        "MTIzLm5vdC1hLXRva2Vu",
        "A" * 81,
        "é",
        "MTIz",
        "AAAAAAAAAAB",
        "AAAAAAAAAA=",
        "AAAAAAAAA+A",
    ],
)
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
    for _ in range(5):
        session = await new_session(client, user_id)
        originals.insert(0, session["token"])
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
        # (nil on a storage that holds none of the user's sessions: the sharded mode's other)
        f"local t = box.space.sessions.index.user:select({{{user_id}}}, {{limit = 1}})[1] "
        "return t and t:bsize()"
    )
    response = await client.get("/user", params={"id": str(user_id)})
    first = (await response.json())["data"]
    assert len(first) == 2 * 2**20 // size
    assert "next" in response.links
    pages = await _pages(client, "/user", {"id": str(user_id)})
    assert sum(len(page) for page in pages) == 80


@pytest.mark.parametrize("path", ["/user", "/ip"])
async def test_a_walk_meets_every_session_once_while_others_use_them(client, console, user_id, ip, path):
    """A walk over 3,000 sessions page by page while other clients use them (each `get`
    changes its activity, which once ordered the list): every session is met exactly once."""
    console.eval(
        lua_bulk_insert(3000, lua_session(user_id, f"'{ip}'", "require('sessions.clock').now() - 10"))
    )
    params = {"id": str(user_id)} if path == "/user" else {"ip": ip}
    expected = set(
        console.eval(
            f"local t = {{}} for _, s in box.space.sessions.index.user_seq:pairs({{{user_id}}}) do "
            "t[#t + 1] = s.token:str() end return #t > 0 and t or nil"
        )
    )
    tokens = sorted(expected)
    seen: list[str] = []
    response = await client.get(path, params={**params, "limit": "7"})
    step = 0
    while True:
        page = [s["token"] for s in (await response.json())["data"]]
        seen += page
        # Others touch sessions all over the list: some already met, some still ahead.
        await asyncio.gather(
            *(call(client, "/get", params={"token": tokens[(step * 37 + k * 101) % 3000]}) for k in range(5))
        )
        step += 1
        if "next" not in response.links:
            break
        response = await client.get(response.links["next"]["url"].path_qs)
    assert len(seen) == len(set(seen)) == 3000
    assert set(seen) == expected


async def test_a_cursor_holds_no_token_nor_any_part_or_hash_of_one(client, user_id):
    sessions = [await new_session(client, user_id) for _ in range(3)]
    response = await client.get("/user", params={"id": str(user_id), "limit": "1"})
    cursors = []
    while "next" in response.links:
        cursor = response.links["next"]["url"].query["after"]
        cursors.append(cursor)
        response = await client.get(response.links["next"]["url"].path_qs)
    assert len(cursors) == 2
    for cursor in cursors:
        decoded = [cursor.encode(), base64.urlsafe_b64decode(cursor + "=")]
        decoded.append(decoded[1].hex().encode())
        for session in sessions:
            token = session["token"]
            raw = uuid.UUID(token).bytes
            secrets = [token, token.replace("-", ""), *token.split("-")]
            digests = [hashlib.new(name, raw).digest() for name in ("md5", "sha1", "sha256")]
            for text in decoded:
                assert not any(part.encode() in text.lower() for part in secrets)
                assert not any(raw[i : i + 4] in text for i in range(13))
                assert not any(d[i : i + 4] in text for d in digests for i in range(len(d) - 3))
        # Eight bytes: a place in the listing order, nothing else.
        assert len(base64.urlsafe_b64decode(cursor + "=")) == 8


async def test_a_forged_cursor_is_only_a_position(client, user_id):
    """Any well-formed cursor is a place in the order: it can skip sessions, never reach
    another user's or reveal anything."""
    await new_session(client, user_id)
    other = await new_session(client, user_id + 1)
    for position in (0, 1, 2**63, 2**64 - 1):
        cursor = base64.urlsafe_b64encode(position.to_bytes(8, "big")).rstrip(b"=").decode()
        status, body = await call(client, "/user", params={"id": str(user_id), "after": cursor})
        assert status == 200
        assert all(s["user_id"] == user_id for s in body["data"])
        assert other["token"] not in str(body)


async def test_user_count_counts_the_live_sessions_of_that_user_only(client, user_id):
    assert (await call(client, "/user/count", params={"id": str(user_id)}))[1]["data"] == {"count": 0}
    mine = [await new_session(client, user_id) for _ in range(3)]
    await new_session(client, user_id + 1)
    await call(client, "/del", params={"token": mine[0]["token"]})
    for method in ("GET", "POST"):
        status, body = await call(client, "/user/count", method, params={"id": str(user_id)})
        assert (status, body["data"]) == (200, {"count": 2})
    for bad in ("0", "x", str(2**63)):
        status, body = await call(client, "/user/count", params={"id": bad})
        assert (status, body["code"]) == (400, "invalid_user_id")
    assert (await call(client, "/user/count"))[1]["code"] == "invalid_user_id"


async def test_ip_count_counts_the_live_sessions_of_that_address_only(client, user_id):
    """Every user's sessions last seen from the address, and no other address's; the address is
    compared in canonical form."""
    # An address of this test's own: the Tarantool is shared with the other tests of the run.
    block = (user_id // 10) % 0xFFFF + 1
    ip = f"2001:db8:{block:x}::7"
    assert (await call(client, "/ip/count", params={"ip": ip}))[1]["data"] == {"count": 0}
    here = [await new_session(client, user_id + i, ip) for i in range(3)]
    await new_session(client, user_id, f"2001:db8:{block:x}::8")
    await call(client, "/del", params={"token": here[0]["token"]})
    for method in ("GET", "POST"):
        status, body = await call(client, "/ip/count", method, params={"ip": f"2001:DB8:{block:X}:0::7"})
        assert (status, body["data"]) == (200, {"count": 2})
    for bad in ("", "x", "198.51.100.256"):
        status, body = await call(client, "/ip/count", params={"ip": bad})
        assert (status, body["code"]) == (400, "invalid_ip")
    assert (await call(client, "/ip/count"))[1]["code"] == "invalid_ip"
