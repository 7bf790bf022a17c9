"""Session ids: a UUIDv7 per session, not secret, kept for its life, shown where asked
(`with=id`); a session read by its id without touching it, ended by its id, and kept by its id
when the rest of its user's sessions end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessions.console import Console
from sessions.embedded import EmbeddedTarantool

from .conftest import call, frozen_tarantool, new_session, settings_for
from .sharded import console_by_mode, settings_by_mode, sharded_cluster  # noqa: F401 (fixtures: both modes)

_AN_ID = "019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24"
SIX = {"ip", "extra", "user_id", "create", "activity", "token"}
T0 = 1_700_000_000


async def _opened(client: Any, user_id: int, ip: str = "192.0.2.1") -> dict[str, Any]:
    status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": ip, "with": "id"})
    assert status == 200, body
    return dict(body["data"])


async def test_every_method_answers_the_six_fields_unless_asked_for_the_id(client, user_id):
    session = await new_session(client, user_id)
    token = {"token": session["token"]}
    answers = [session]
    for path, params in [("/get", token), ("/user", {"id": str(user_id)}), ("/ip", {"ip": "192.0.2.1"})]:
        body = (await call(client, path, params=params))[1]
        answers += body["data"] if isinstance(body["data"], list) else [body["data"]]
    body = (await call(client, "/rotate", params=token))[1]
    answers.append(body["data"])
    body = (await call(client, "/del", params={"token": body["data"]["token"]}))[1]
    answers.append(body["data"])
    assert all(set(answer) == SIX for answer in answers), answers


async def test_with_id_every_method_adds_the_same_id_which_rotate_keeps(client, user_id, ip):
    opened = await _opened(client, user_id, ip)
    assert set(opened) == SIX | {"id"}
    made = uuid.UUID(opened["id"])
    assert made.version == 7 and made.variant == uuid.RFC_4122 and str(made) == opened["id"]
    assert int.from_bytes(made.bytes[:6], "big") // 1000 == opened["create"]
    assert opened["id"] != opened["token"]
    with_id = {"with": "id"}
    seen = []
    for path, params in [
        ("/get", {"token": opened["token"]}),
        ("/user", {"id": str(user_id)}),
        ("/ip", {"ip": ip}),
        ("/rotate", {"token": opened["token"]}),
    ]:
        status, body = await call(client, path, params={**params, **with_id})
        assert status == 200, body
        seen += body["data"] if isinstance(body["data"], list) else [body["data"]]
    rotated = seen[-1]
    assert rotated["token"] != opened["token"]
    status, body = await call(client, "/del", params={"token": rotated["token"], **with_id})
    seen.append(body["data"])
    assert [answer["id"] for answer in seen] == [opened["id"]] * 5


async def test_ids_sort_by_when_their_sessions_were_opened(client, user_id):
    ids = [(await _opened(client, user_id))["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    # Made in one millisecond or in later ones: never earlier than the id before.
    stamps = [uuid.UUID(made).bytes[:6] for made in ids]
    assert stamps == sorted(stamps)


@pytest.fixture
async def frozen(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedTarantool, Console]]:
    async with frozen_tarantool(tmp_path / "tarantool", idle_ttl=1000, at=T0) as running:
        yield running


def _at(admin: Console, second: int) -> None:
    admin.eval(f"require('sessions.clock').freeze({second})")


@pytest.mark.parametrize(("idle", "live"), [(1000, True), (1001, False)])
async def test_session_reads_by_id_without_touching_it_nor_showing_its_token(serve, frozen, idle, live):
    instance, admin = frozen
    client = await serve(settings_for(instance, idle_ttl=1000))
    opened = await _opened(client, 7)
    _at(admin, T0 + idle)
    status, body = await call(client, "/session", params={"id": opened["id"]})
    if not live:
        assert (status, body["code"]) == (404, "token_not_found")
        return
    expected = {key: value for key, value in opened.items() if key != "token"}
    assert (status, body["data"]) == (200, expected)  # activity still T0, and no token
    # Read again at the same moment: still untouched, so still live at T0 + 1000 exactly.
    assert (await call(client, "/session", params={"id": opened["id"]}))[1]["data"]["activity"] == T0
    status, body = await call(client, "/get", params={"token": opened["token"]})
    assert body["data"]["activity"] == T0 + idle  # get does touch it


async def test_session_del_ends_a_session_by_its_id(client, user_id):
    opened = await _opened(client, user_id)
    kept = await _opened(client, user_id)
    status, body = await call(client, "/session/del", params={"id": opened["id"]})
    assert status == 200 and body["data"]["id"] == opened["id"] and "token" not in body["data"]
    assert (await call(client, "/get", params={"token": opened["token"]}))[0] == 404
    assert (await call(client, "/session", params={"id": opened["id"]}))[0] == 404
    status, body = await call(client, "/session/del", params={"id": opened["id"]})
    assert (status, body["code"]) == (404, "token_not_found")
    assert (await call(client, "/get", params={"token": kept["token"]}))[0] == 200


async def test_user_del_keeps_the_session_except_id_names(client, user_id):
    kept = await _opened(client, user_id)
    others = [await _opened(client, user_id) for _ in range(2)]
    stranger = await _opened(client, user_id + 1)
    for wrong in (stranger["id"], str(uuid.uuid4())):
        status, body = await call(client, "/user/del", params={"id": str(user_id), "except_id": wrong})
        assert (status, body["code"]) == (404, "token_not_found")
    assert (await call(client, "/user/count", params={"id": str(user_id)}))[1]["data"] == {"count": 3}
    status, body = await call(client, "/user/del", params={"id": str(user_id), "except_id": kept["id"]})
    assert (status, body["data"]) == (200, {"deleted": 2})
    assert (await call(client, "/get", params={"token": kept["token"]}))[0] == 200
    assert all([(await call(client, "/get", params={"token": s["token"]}))[0] == 404 for s in others])


@pytest.mark.parametrize(
    ("path", "params", "headers"),
    [
        ("/session", {"id": "not-an-id"}, {}),
        ("/session", {"id": "019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b2"}, {}),  # one digit short
        ("/session", {}, {}),
        ("/session", {"id": ["019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24"] * 2}, {}),
        ("/session/del", {"id": "019ae3b2_5c1e_7b4a_9d2f_3a6c8e1f0b24"}, {}),
        ("/user/del", {"id": "1", "except_id": "x"}, {}),
        ("/get", {"token": "61494096-9af7-49ba-9fb4-e89c0811e6d3", "with": "token"}, {}),
        ("/user", {"id": "1", "with": ["id", "id"]}, {}),
        ("/new", {"user_id": "1", "ip": "192.0.2.1", "with": ""}, {}),
        (
            "/user/del",
            {"id": "1", "except_id": "019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24"},
            {"X-Session-Token": "61494096-9af7-49ba-9fb4-e89c0811e6d3"},
        ),
        # Both ways of keeping a session, the token empty or malformed: still both.
        ("/user/del", {"id": "1", "except_id": _AN_ID, "except": ""}, {}),
        ("/user/del", {"id": "1", "except_id": _AN_ID, "except": "x"}, {}),
        ("/user/del", {"id": "1", "except_id": _AN_ID}, {"X-Session-Token": ""}),
        ("/user/del", {"id": "1", "except_id": _AN_ID}, {"X-Session-Token": "x"}),
        # `with` on methods that answer no session.
        ("/user/count", {"id": "1", "with": "x"}, {}),
        ("/ip/count", {"ip": "192.0.2.1", "with": "id"}, {}),
        ("/user/del", {"id": "1", "with": "id"}, {}),
        ("/ip/del", {"ip": "192.0.2.1", "with": "x"}, {}),
        # An event is no session: no id to add.
        ("/events", {"with": "id"}, {}),
    ],
)
async def test_bad_ids_and_with_values_are_bad_requests_that_change_nothing(client, path, params, headers):
    query = [
        (key, value)
        for key, values in params.items()
        for value in ([values] if isinstance(values, str) else values)
    ]
    status, body = await call(client, path, params=query, headers=headers)
    assert (status, body["code"]) == (400, "bad_request"), body


async def test_an_unknown_id_is_not_found(client, user_id):
    unknown = "019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24"
    for path in ("/session", "/session/del"):
        status, body = await call(client, path, params={"id": unknown})
        assert (status, body["code"]) == (404, "token_not_found")
        assert "id" in body["message"] and "token" not in body["message"], body
    await new_session(client, user_id)
    status, body = await call(client, "/user/del", params={"id": str(user_id), "except_id": unknown})
    assert (status, body["code"]) == (404, "token_not_found")
    assert "except_id" in body["message"], body


async def test_listings_without_tokens_answer_ids_and_never_a_token(serve, settings, user_id, ip):
    client = await serve(settings.model_copy(update={"listings": "ids"}))
    opened = [await _opened(client, user_id, ip) for _ in range(3)]
    for path, params in (("/user", {"id": str(user_id)}), ("/ip", {"ip": ip})):
        walked, query = [], {**params, "limit": "2"}
        while True:
            response = await client.get(path, params=query)
            text = await response.text()
            assert response.status == 200
            assert not [s for s in opened if s["token"] in text], text  # not a token, not in a Link
            walked += (await response.json())["data"]
            if "Link" not in response.headers:
                break
            query = dict(response.links["next"]["url"].query)
        assert walked == [{k: v for k, v in s.items() if k != "token"} for s in reversed(opened)], path
    # The other methods are not listings: the caller's own token, as before.
    body = (await call(client, "/get", params={"token": opened[0]["token"]}))[1]
    assert body["data"]["token"] == opened[0]["token"]


async def test_listings_keep_their_tokens_by_default(client, user_id):
    opened = await new_session(client, user_id)
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == [opened]


async def test_with_id_is_carried_into_every_next_page(client, user_id, ip):
    opened = [await _opened(client, user_id, ip) for _ in range(5)]
    for path, params in (("/user", {"id": str(user_id)}), ("/ip", {"ip": ip})):
        walked, pages, url = [], 0, client.make_url(path).with_query({**params, "limit": "2", "with": "id"})
        while True:
            response = await client.session.get(url)
            assert response.status == 200
            walked += (await response.json())["data"]
            pages += 1
            if "Link" not in response.headers:
                break
            assert "with=id" in response.headers["Link"], response.headers["Link"]
            url = url.join(response.links["next"]["url"])  # as it is, resolved against this page
        assert pages == 3 and [s["id"] for s in walked] == [s["id"] for s in reversed(opened)], path
