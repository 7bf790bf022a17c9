"""The Python unit layer: the validators, cursors, extra-data decoding and settings, called
directly (no service, no Tarantool). Each pins the exact boundary it guards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from multidict import MultiDict
from pydantic import ValidationError

from sessions.config import Settings
from sessions.contract import CONTEXT, KIND_USER, RULES, Context, Operation, Rules
from sessions.errors import InvalidExtra, InvalidUserId
from sessions.extra import decode_extra
from sessions.limits import DEFAULT_TTL, LIST_MAX, MAX_DEPTH, MAX_KEYS, MAX_USER_ID
from sessions.models import (
    canonical_ip,
    make_cursor,
    parse_cursor,
    parse_limit,
    parse_token,
    parse_ttl,
    parse_user_id,
)
from sessions.params import LIMIT, USER_ID, parse_idempotency_key
from sessions.routing import Route

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("0001", 1),
        (str(MAX_USER_ID), MAX_USER_ID),
        ("0", None),
        (str(MAX_USER_ID + 1), None),
        ("-1", None),
        ("+1", None),
        ("1_000", None),
        (" 1", None),
        ("\uff11", None),  # a full-width digit
        ("\u0663", None),  # an Arabic-Indic digit
        ("1" * 5000, None),
        ("", None),
    ],
)
def test_user_ids_are_plain_decimal_from_1_to_2_63_minus_1(text, value):
    assert parse_user_id(text) == value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", None),
        ("192.0.2.256", None),
        ("192.0.2", None),
        ("", None),
        ("1" * 46, None),
    ],
)
def test_addresses_are_stored_in_canonical_form(text, canonical):
    assert canonical_ip(text) == canonical


def test_ttls_run_from_1_to_the_longest_given():
    assert parse_ttl("1", DEFAULT_TTL) == 1
    assert parse_ttl(str(DEFAULT_TTL), DEFAULT_TTL) == DEFAULT_TTL
    assert parse_ttl(str(DEFAULT_TTL + 1), DEFAULT_TTL) is None
    assert parse_ttl("0", DEFAULT_TTL) is None
    assert parse_ttl("1e3", DEFAULT_TTL) is None


def test_limits_run_from_1_to_list_max():
    assert parse_limit("1") == 1
    assert parse_limit(str(LIST_MAX)) == LIST_MAX
    assert parse_limit(str(LIST_MAX + 1)) is None
    assert parse_limit("0") is None


def test_tokens_are_8_4_4_4_12_hex_in_any_case():
    assert parse_token("61494096-9AF7-49ba-9fb4-e89c0811e6d3") is not None
    assert parse_token("61494096-9af7-49ba-9fb4-e89c0811e6d") is None
    assert parse_token("61494096-9af7-49ba-9fb4-e89c0811e6dg") is None
    assert parse_token("6149409609af7049ba09fb40e89c0811e6d3") is None


@pytest.mark.parametrize("position", [0, 1, 2**32, 2**64 - 1])
def test_a_cursor_stands_for_its_position_only(position):
    cursor = make_cursor(position)
    assert len(cursor) == 11 and parse_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor", ["", "AAAAAAAAAA", "AAAAAAAAAAAA", "AAAAAAAAAA=", "AAAAAAAAAA!", "AAAAAAAAAAB"]
)
def test_anything_but_a_made_cursor_is_refused(cursor):
    assert parse_cursor(cursor) is None


def test_idempotency_keys_are_1_to_64_visible_ascii():
    assert parse_idempotency_key("a") == "a"
    assert parse_idempotency_key("~" * 64) == "~" * 64
    assert parse_idempotency_key("a" * 65) is None
    assert parse_idempotency_key("a b") is None
    assert parse_idempotency_key("") is None


def test_a_repeated_or_missing_parameter_is_refused():
    with pytest.raises(InvalidUserId, match="required"):
        USER_ID.read_query(MultiDict())
    with pytest.raises(InvalidUserId):
        USER_ID.read_query(MultiDict([("user_id", "1"), ("user_id", "1")]))
    assert USER_ID.read_query(MultiDict([("user_id", "7")])) == 7
    assert LIMIT.read_query(MultiDict()) is None


def test_form_bodies_decode_to_strings_and_nest_by_brackets():
    assert decode_extra(FORM, b"device=Nexus+5&os=Android") == {"device": "Nexus 5", "os": "Android"}
    assert decode_extra(FORM, b"app[name]=mail&app[v]=2&tags[]=a&tags[]=b") == {
        "app": {"name": "mail", "v": "2"},
        "tags": ["a", "b"],
    }
    for body in (b'{"a": 1}', b"just text", b"a=1&a[b]=2", b"a=1&a=2"):
        with pytest.raises(InvalidExtra):
            decode_extra(FORM, body)


def test_json_bodies_keep_their_types_within_the_limits():
    assert decode_extra(JSON, b'{"n": 42, "x": null, "f": 1.5}') == {"n": 42, "x": None, "f": 1.5}
    assert decode_extra("application/problem+json", b'{"a": true}') == {"a": True}
    assert decode_extra(JSON, b"") is None
    assert decode_extra(JSON, b"{}") is None
    nested = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert decode_extra(JSON, nested) is not None
    for body in (
        b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
        b'{"n": 18446744073709551616}',
        b"[1]",
        b'{"a": NaN}',
        ("{" + ",".join(f'"k{i}": 1' for i in range(MAX_KEYS + 1)) + "}").encode(),
    ):
        with pytest.raises(InvalidExtra):
            decode_extra(JSON, body)
    with pytest.raises(InvalidExtra):
        decode_extra("text/plain", b"a=1")


def test_settings_refuse_what_they_cannot_mean():
    assert Settings().idle_ttl == DEFAULT_TTL
    for bad in ({"port": 0}, {"list_max": LIST_MAX + 1}, {"api_keys": ","}, {"ops_port": 8080}):
        with pytest.raises(ValidationError):
            Settings(**bad)


class _Calls:
    """A storage that records what a forwarding route calls."""

    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, object]]] = []

    async def call(self, operation: Operation, args: dict[str, object]) -> dict[str, object]:
        self.made.append((operation.name, args))
        return {"count": 0}


async def test_a_forwarding_route_fixes_some_arguments_and_takes_the_others_from_its_parameters():
    """Route.forward: `fixed` arguments the same on every call (a kind), the parameters' values
    the others in the operation's order, a None one left out."""
    listing = Operation("list", ("kind", "key", "limit", "page_bytes", "after"), ("sessions",), bulk=True)
    route = Route.forward("/x", listing, "x", (USER_ID, LIMIT, LIMIT, LIMIT), fixed={"kind": KIND_USER})
    calls = _Calls()
    service = SimpleNamespace(storage=calls)
    await route.handler(service, 5, 10, None, 3)
    assert calls.made == [("list", {"kind": KIND_USER, "key": 5, "limit": 10, "after": 3})]
    with pytest.raises(ValueError, match="takes no argument"):
        Route.forward("/x", listing, "x", (USER_ID,), fixed={"device": 1})
    with pytest.raises(ValueError, match="1 parameters"):
        Route.forward("/x", listing, "x", (USER_ID,), fixed={"kind": KIND_USER})


def test_the_context_and_the_rules_are_sent_by_the_contracts_names():
    rules = Rules(ttl=100, lifetime=0, cap=3).wire()
    assert list(rules) == list(RULES) and rules["cap"] == 3
    context = Context(rules, 1.5, 1024).wire()
    assert list(context) == [name for name in CONTEXT if name not in ("untouched", "events")]
    assert Context(rules, 1.5, 1024, untouched=True).wire()["untouched"] is True
    feed = {"keep": 60, "most": 10}
    assert Context(rules, 1.5, 1024, events=feed).wire()["events"] == feed
