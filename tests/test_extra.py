"""Extra data on `/new` and `/get`: form or JSON bodies merged like JSON Merge Patch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from .conftest import call, days_ago, new_session, set_activity, settings_for

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_form_body_on_get_as_in_the_original_php_example(client, user_id):
    session = await new_session(client, user_id, "192.168.1.1")
    status, body = await call(
        client, "/get", params={"token": session["token"]}, data=b"device=Nexus+5&os=Android", headers=FORM
    )
    assert status == 200
    assert body["data"]["extra"] == {"os": "Android", "device": "Nexus 5"}


async def test_form_values_are_strings(client, user_id):
    status, body = await call(
        client,
        "/new",
        "POST",
        params={"user_id": str(user_id), "ip": "192.0.2.1"},
        data=b"n=1&empty=&flag=true&text=a%20b%26c",
        headers=FORM,
    )
    assert status == 200
    assert body["data"]["extra"] == {"n": "1", "empty": "", "flag": "true", "text": "a b&c"}


async def test_json_body_keeps_json_types(client, user_id):
    extra = {
        "s": "x",
        "i": 7,
        "f": 1.5,
        "t": True,
        "n": [1, None, "2"],
        "o": {"k": None, "e": {}},
        "big": 2**63,
    }
    session = await new_session(client, user_id, json=extra, method="POST")
    assert session["extra"] == extra


async def test_merge_adds_replaces_and_removes_top_level_keys(client, user_id):
    session = await new_session(client, user_id, json={"keep": 1, "replace": {"a": 1, "b": 2}, "drop": "x"})
    status, body = await call(
        client,
        "/get",
        "POST",
        params={"token": session["token"]},
        json={"replace": {"a": 9}, "drop": None, "add": [1], "absent": None},
    )
    assert status == 200
    assert body["data"]["extra"] == {"keep": 1, "replace": {"a": 9}, "add": [1]}


async def test_removing_every_key_leaves_an_empty_object(client, user_id):
    session = await new_session(client, user_id, json={"a": 1})
    body = (await call(client, "/get", "POST", params={"token": session["token"]}, json={"a": None}))[1]
    assert body["data"]["extra"] == {}


@pytest.mark.parametrize("content", [None, b"", b"{}"])
async def test_no_body_or_an_empty_patch_changes_nothing(client, user_id, content):
    session = await new_session(client, user_id)
    headers = {"Content-Type": "application/json"}
    first = (
        await call(client, "/get", "POST", params={"token": session["token"]}, data=content, headers=headers)
    )[1]
    assert first["data"]["extra"] is None
    await call(client, "/get", "POST", params={"token": session["token"]}, json={"a": 1})
    again = (
        await call(client, "/get", "POST", params={"token": session["token"]}, data=content, headers=headers)
    )[1]
    assert again["data"]["extra"] == {"a": 1}


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
async def test_json_content_type_variants(client, user_id, content_type):
    session = await new_session(client, user_id, data=b'{"a": 1}', headers={"Content-Type": content_type})
    assert session["extra"] == {"a": 1}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"null", "application/json"),
        (b"42", "application/json"),
        (b"{bad json", "application/json"),
        (b" ", "application/json"),
        (b'{"a": NaN}', "application/json"),
        (b'{"a": "\xff"}', "application/json"),
        (b"a=%FF", "application/x-www-form-urlencoded"),
        (b"a=\xff", "application/x-www-form-urlencoded"),
        (b"a=1&a=2", "application/x-www-form-urlencoded"),
        (b"a=1", "text/plain"),
        (b"a=1", "multipart/form-data; boundary=x"),
        (b"\x00\x01\x02", "application/octet-stream"),
    ],
)
async def test_bad_extra_is_refused_and_writes_nothing(client, console, user_id, content, content_type):
    headers = {"Content-Type": content_type}
    status, body = await call(
        client,
        "/new",
        "POST",
        params={"user_id": str(user_id), "ip": "192.0.2.1"},
        data=content,
        headers=headers,
    )
    assert (status, body["code"]) == (400, "invalid_extra")
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []

    session = await new_session(client, user_id, json={"a": 1})
    old = days_ago(1)
    set_activity(console, session["token"], old)
    status, body = await call(
        client, "/get", "POST", params={"token": session["token"]}, data=content, headers=headers
    )
    assert (status, body["code"]) == (400, "invalid_extra")
    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert (listed[0]["extra"], listed[0]["activity"]) == ({"a": 1}, old)


async def test_deep_nesting_is_refused(client, user_id):
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    status, body = await call(
        client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, json={"a": deep}
    )
    assert (status, body["code"]) == (400, "invalid_extra")


@pytest.mark.parametrize("form", [False, True])
async def test_too_many_keys_is_refused(client, user_id, form):
    keys = {f"k{i}": "" for i in range(2000)}
    kwargs = {"data": "&".join(f"{k}=" for k in keys), "headers": FORM} if form else {"json": keys}
    status, body = await call(
        client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, **kwargs
    )
    assert (status, body["code"]) == (400, "invalid_extra")


async def test_body_over_the_limit_is_413_and_writes_nothing(client, user_id):
    big = {"blob": "x" * (64 * 1024)}
    status, body = await call(
        client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, json=big
    )
    assert (status, body["code"]) == (413, "payload_too_large")
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []


async def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(client, user_id):
    # No Content-Length to refuse it by: the limit is found while it is read.
    async def chunks():
        yield b'{"blob": "'
        for _ in range(65):
            yield b"x" * 1024
        yield b'"}'

    status, body = await call(
        client,
        "/new",
        "POST",
        params={"user_id": str(user_id), "ip": "192.0.2.1"},
        data=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["code"]) == (413, "payload_too_large")
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []


async def test_body_just_under_the_limit_is_accepted(client, user_id):
    payload = {"blob": "x" * (60 * 1024)}
    session = await new_session(client, user_id, json=payload)
    assert session["extra"] == payload


async def test_merged_extra_over_the_limit_is_413_and_keeps_the_old_extra(serve, tarantool, user_id):
    client = await serve(settings_for(tarantool, extra_max_bytes=300))
    session = await new_session(client, user_id, json={"a": "x" * 200})
    status, body = await call(
        client, "/get", "POST", params={"token": session["token"]}, json={"b": "y" * 200}
    )
    assert (status, body["code"]) == (413, "payload_too_large")
    listed = (await call(client, "/user", params={"id": str(user_id)}))[1]["data"]
    assert listed[0]["extra"] == {"a": "x" * 200}


async def test_extra_round_trips_unicode_and_control_characters(client, user_id):
    extra = {"emoji": "🙂", "nul": "a\x00b", "ctl": "\x01\x1f", "ключ": "значение"}
    session = await new_session(
        client, user_id, data=orjson.dumps(extra), headers={"Content-Type": "application/json"}
    )
    assert session["extra"] == extra


@pytest.mark.parametrize(
    ("number", "accepted"),
    [
        ("-9223372036854775808", True),  # -2**63, the smallest 64-bit integer
        ("-9223372036854775809", False),
        ("18446744073709551615", True),  # 2**64 - 1, the largest
        ("18446744073709551616", False),
        ("-200", True),
        ("-9.2233720368547758e18", True),  # integral, in range however spelled
        ("-1e19", False),  # integral and out of range: an integer to JSON Schema too
        ("1.8446744073709552e19", False),  # 2**64 as a float
        ("1e19", True),
        ("1.5e300", False),
        ("-0.5", True),
        ("1e-300", True),
    ],
)
async def test_numbers_at_the_edges_of_64_bits(client, user_id, number, accepted):
    status, body = await call(
        client,
        "/new",
        "POST",
        params={"user_id": str(user_id), "ip": "192.0.2.1"},
        data=f'{{"n": {number}}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == (200 if accepted else 400), body
    if accepted:
        assert body["data"]["extra"]["n"] == json.loads(number)
    else:
        assert body["code"] == "invalid_extra"


@pytest.mark.parametrize(("depth", "accepted"), [(32, True), (33, False)])
async def test_nesting_limit_is_exact(client, user_id, depth, accepted):
    nested: object = "leaf"
    for _ in range(depth - 1):  # the body's own object is the first level
        nested = [nested]
    status, _ = await call(
        client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, json={"a": nested}
    )
    assert status == (200 if accepted else 400)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(("keys", "accepted"), [(1024, True), (1025, False)])
async def test_key_limit_is_exact(client, user_id, form, keys, accepted):
    patch = {f"k{i}": "v" for i in range(keys)}
    kwargs = {"data": patch} if form else {"json": patch}
    status, _ = await call(
        client, "/new", "POST", params={"user_id": str(user_id), "ip": "192.0.2.1"}, **kwargs
    )
    assert status == (200 if accepted else 400)


async def test_lone_surrogates_in_json_strings_are_refused(client, user_id):
    for body in (b'{"a": "\\ud800"}', b'{"\\udfff": 1}', b'{"a": ["x", {"b": "\\ud800"}]}'):
        status, response = await call(
            client,
            "/new",
            "POST",
            params={"user_id": str(user_id), "ip": "192.0.2.1"},
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert (status, response["code"]) == (400, "invalid_extra"), body


@pytest.mark.parametrize(("length", "accepted"), [(91, True), (92, False)])
async def test_merged_extra_may_be_exactly_the_limit(serve, tarantool, user_id, length, accepted):
    # With SESSIONS_EXTRA_MAX_BYTES=200 the stored map is measured as MessagePack:
    # {"a": 100 chars} is 105 bytes, and "b" with 91 more chars brings it to exactly 200.
    client = await serve(settings_for(tarantool, extra_max_bytes=200))
    session = await new_session(client, user_id, json={"a": "x" * 100})
    status, body = await call(
        client, "/get", "POST", params={"token": session["token"]}, json={"b": "y" * length}
    )
    assert status == (200 if accepted else 413), body


async def _head_then_body(client, target: str, body: bytes) -> tuple[bytes, bytes]:
    """What the server answers to a head with `Expect: 100-continue` before the body is
    sent, and then everything it answers once the body follows."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode()
        )
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if first.startswith(b"HTTP/1.1 100 "):
            writer.write(body)
        rest = await asyncio.wait_for(reader.read(), 10)
        return first, rest
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(client, user_id):
    # curl sends this for bodies over 1 KiB and waits (a second) for the interim answer.
    first, rest = await _head_then_body(client, f"/new?user_id={user_id}&ip=192.0.2.1", b'{"device": "x"}')
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2])["data"]["extra"] == {"device": "x"}


async def test_a_refused_request_is_answered_without_asking_for_its_body(client):
    first, rest = await _head_then_body(client, "/new?user_id=0&ip=192.0.2.1", b'{"device": "x"}')
    assert first.startswith(b"HTTP/1.1 400 ")
    assert b"invalid_user_id" in rest


FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


async def _new_with_form(client: Any, user_id: int, form: bytes) -> tuple[int, Any]:
    params = {"user_id": str(user_id), "ip": "192.0.2.1"}
    return await call(client, "/new", "POST", params=params, data=form, headers=FORM_TYPE)


@pytest.mark.parametrize(
    "body",
    [b'{"a":1}', b'  {"a": "b=c"}', b"[1, 2]", b"flag", b"a=1&flag", b"not a form at all"],
)
async def test_a_form_body_that_is_not_key_value_pairs_is_refused_with_the_fix(client, user_id, body):
    """curl's -d and PHP's body without a header send JSON as a form: it was stored as one
    key with an empty value. Now it is refused, and the message says what to send."""
    status, body_ = await _new_with_form(client, user_id, body)
    assert (status, body_["code"]) == (400, "invalid_extra")
    assert "Content-Type: application/json" in body_["message"]
    assert (await call(client, "/user", params={"id": str(user_id)}))[1]["data"] == []


@pytest.mark.parametrize(
    ("form", "extra"),
    [
        (b"app[name]=mail&app[version]=2", {"app": {"name": "mail", "version": "2"}}),
        (b"app%5Bname%5D=mail", {"app": {"name": "mail"}}),
        (b"tags[]=a&tags[]=b", {"tags": ["a", "b"]}),
        (b"a[b][c]=1&a[b][d]=2&a[e]=3", {"a": {"b": {"c": "1", "d": "2"}, "e": "3"}}),
        (b"list[][n]=a&list[][n]=b", {"list": [{"n": "a"}, {"n": "b"}]}),
        (b"x[0]=a&x[1]=b", {"x": {"0": "a", "1": "b"}}),
        (b"empty=&plain[=x", {"empty": "", "plain[": "x"}),
    ],
)
async def test_bracketed_form_keys_nest_as_php_and_rails_build_them(client, user_id, form, extra):
    status, body = await _new_with_form(client, user_id, form)
    assert status == 200 and body["data"]["extra"] == extra


@pytest.mark.parametrize(
    "form",
    [b"a=1&a[b]=2", b"a[b]=1&a=2", b"tags[]=a&tags[x]=b", b"a[x]=1&a[]=2", b"a[b]=1&a[b]=2"],
)
async def test_a_form_key_both_a_value_and_a_group_is_refused(client, user_id, form):
    status, body = await _new_with_form(client, user_id, form)
    assert (status, body["code"]) == (400, "invalid_extra")


async def test_form_nesting_limit_is_exact(client, user_id):
    deepest = b"a" + b"[b]" * 31 + b"=1"  # 32 levels
    assert (await _new_with_form(client, user_id, deepest))[0] == 200
    status, body = await _new_with_form(client, user_id, b"a" + b"[b]" * 32 + b"=1")
    assert (status, body["code"]) == (400, "invalid_extra")
