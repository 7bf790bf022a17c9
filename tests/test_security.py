"""Access control, secrets kept out of logs and reprs, Tarantool rights, token randomness."""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import asynctnt
import pytest
from asynctnt.exceptions import TarantoolDatabaseError
from multidict import CIMultiDict
from pydantic import ValidationError

from sessions import weak_secrets
from sessions.config import Settings
from sessions.console import Console, ConsoleError
from sessions.contract import PROCEDURES
from sessions.logs import masked_query, redact
from sessions.storage import new_token

from .conftest import PASSWORD, call, new_session, settings_for
from .service import Service

ROOT = Path(__file__).resolve().parent.parent
INIT_LUA = ROOT / "tarantool" / "init.lua"


@pytest.fixture
async def keyed(serve, tarantool):
    return await serve(settings_for(tarantool, api_keys="old-key-8d1f0c2e9a, new-key-8d1f0c2e9a"))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic new-key-8d1f0c2e9a"},
        {"Authorization": "new-key-8d1f0c2e9a"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer new-key-8d1f0c2e9a-and-more"},
    ],
)
@pytest.mark.parametrize("path", ["/new?user_id=1&ip=192.0.2.1", "/user?id=1", "/nope"])
async def test_without_a_valid_key_everything_is_401(keyed, headers, path):
    status, body = await call(keyed, path, headers=headers)
    assert (status, body["code"]) == (401, "unauthorized")


async def test_a_key_given_twice_is_401_even_when_both_are_right(keyed):
    """Two Authorization headers: none is taken, as a proxy that adds its own beside the
    client's would otherwise leave it to their order which one counts."""
    right = ("Authorization", "Bearer new-key-8d1f0c2e9a")
    for headers in ([right, right], [right, ("Authorization", "Bearer wrong")]):
        status, body = await call(keyed, "/user", params={"id": "1"}, headers=CIMultiDict(headers))
        assert (status, body["code"]) == (401, "unauthorized")
    assert (await call(keyed, "/user", params={"id": "1"}, headers=CIMultiDict([right])))[0] == 200


async def test_401_names_the_scheme(keyed):
    response = await keyed.get("/user?id=1")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("key", ["old-key-8d1f0c2e9a", "new-key-8d1f0c2e9a"])
async def test_any_configured_key_works_for_rotation(keyed, key, user_id):
    headers = {"Authorization": f"Bearer {key}"}
    session = await new_session(keyed, user_id, headers=headers)
    status, _ = await call(keyed, "/get", params={"token": session["token"]}, headers=headers)
    assert status == 200


async def test_no_keys_means_open(client, user_id):
    """Without SESSIONS_API_KEYS (on loopback) every method answers without a key, and no
    answer asks for one."""
    session = await new_session(client, user_id)
    for path, params in (("/get", {"token": session["token"]}), ("/user", {"id": str(user_id)})):
        response = await client.get(path, params=params)
        assert response.status == 200 and "WWW-Authenticate" not in response.headers


def test_settings_never_show_secrets():
    settings = Settings(
        tarantool="127.0.0.1:3301",
        tarantool_password="s3cret-pw-8d1f0c2e",
        api_keys="k3y-one-8d1f0c2e9a,k3y-two-8d1f0c2e9a",
    )
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cret-pw-8d1f0c2e" not in text
        assert "k3y-one-8d1f0c2e9a" not in text


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


@pytest.mark.each_release
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


@pytest.mark.each_release
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


@pytest.mark.each_release
def test_the_service_user_may_execute_exactly_the_contracts_procedures(console):
    granted = console.eval(
        "local names = {} for _, p in ipairs(box.schema.user.info('sessions')) do "
        "if p[1]:find('execute') and p[2] == 'function' then names[#names + 1] = p[3] end end "
        "table.sort(names) return names"
    )
    assert granted == sorted(PROCEDURES)


def test_tokens_are_random_version_4_uuids():
    count = 100_000
    raw = [new_token() for _ in range(count)]
    tokens = [uuid.UUID(bytes=token) for token in raw]
    assert len(set(tokens)) == count
    assert all(t.version == 4 and t.variant == uuid.RFC_4122 for t in tokens)
    # Each of the 122 random bits is 1 in about half the tokens: within 6 standard
    # deviations (about 950 of 100 000), which a fair source misses with a probability near
    # 1e-7 for all bits together, while a stuck bit or a bias of 2% is outside.
    fixed = uuid.UUID("00000000-0000-f000-c000-000000000000").int  # version and variant bits
    bound = 6 * math.sqrt(count) / 2
    # Counted a byte position at a time (the values seen there, then their bits): fast.
    joined = b"".join(raw)
    for position in range(16):
        seen = collections.Counter(joined[position::16])
        for shift in range(8):
            bit = (15 - position) * 8 + shift  # as in the UUID's integer
            if fixed >> bit & 1:
                continue
            ones = sum(times for value, times in seen.items() if value >> shift & 1)
            assert abs(ones - count / 2) < bound, (bit, ones)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "sessions.example"])
def test_non_loopback_without_keys_refuses_to_start(tmp_path, host):
    """Closed by default: beyond loopback, no keys means no start, before Tarantool starts."""
    env = {**os.environ, "SESSIONS_HOST": host, "SESSIONS_DATA_DIR": str(tmp_path / "data")}
    env.pop("SESSIONS_API_KEYS", None)
    done = subprocess.run(
        [sys.executable, "-m", "sessions", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "SESSIONS_API_KEYS" in done.stderr and "SESSIONS_ALLOW_OPEN=true" in done.stderr
    assert not (tmp_path / "data").exists()  # no Tarantool was started


def test_open_on_purpose_starts_and_warns(tmp_path):
    service = Service(tmp_path / "data", SESSIONS_HOST="0.0.0.0", SESSIONS_ALLOW_OPEN="true")
    service.stop(signal.SIGTERM)
    assert "without SESSIONS_API_KEYS" in service.output()


def test_loopback_and_keyed_starts_need_no_permission():
    assert Settings(host="127.0.0.1").refusal_to_serve() is None
    assert Settings(host="::1").refusal_to_serve() is None
    assert Settings(host="localhost").refusal_to_serve() is None
    assert Settings(host="0.0.0.0", api_keys="a-real-key-8d1f0c2e").refusal_to_serve() is None
    assert Settings(host="0.0.0.0", allow_open=True).refusal_to_serve() is None
    assert "SESSIONS_ALLOW_OPEN" in (Settings(host="0.0.0.0").refusal_to_serve() or "")


# The same values go to the service's check and to init.lua's: (value, weak).
SECRETS = [
    # The issue's: short, common, the sample with a no-break space.
    ("123456", True),
    ("qwerty", True),
    ("Password1", True),
    ("change_me", True),
    ("k", True),
    ("change\u00a0me-to-a-long-random-string", True),
    # Samples in any case, spacing and punctuation.
    ("change-me-to-a-long-random-string", True),
    ("CHANGE ME TO A LONG RANDOM STRING", True),
    ("Change\u2003Me\u3000To-Another-Long-One", True),
    ("change.me.to.something.else", True),
    # Common passwords padded, spaced, punctuated or folded to look long.
    ("P-a-s-s-w-o-r-d-1-2-3-4", True),
    ("pass word pass word", True),
    ("Correct Horse Battery Staple", True),
    ("QWERTY UIOP ASDF GH", True),
    ("1234567890123456", True),
    ("password\u00a0\u00a0\u00a0\u00a0\u00a0\u00a0\u00a0\u00a0", True),
    (" tarantool \u200b\ufeff", True),
    # Short once spaces are left out, or counted in characters rather than bytes.
    ("\u00a0" * 12 + "8d1f0c2e", True),
    ("8d1f 0c2e 9a7b 4c", True),
    ("ÄÖÜäöüßÄÖÜäöüß", True),
    ("8d1f0c2e9a7b4c3", True),
    # Strong enough.
    ("8d1f0c2e9a7b4c3d", False),
    ("8d1f0c2e9a7b4c3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", False),
    ("ÄÖÜäöüßÄÖÜäöüßÄÖ", False),
    ("my-change-me-value-8d1f", False),
    ("passwords-are-long-enough", False),
    ("Correct Horse Battery Staple 8d1f", False),
    ("\u00a08d1f0c2e9a7b4c3d\u00a0", False),
    ("tab\tseparated\tvalue-8d1f", False),
    ("Ünïcödé-Pässwörd-8d1f", False),
    ("PASSWORD-8D1F-0C2E-9A7B", False),
]


@pytest.mark.parametrize(("secret", "weak"), SECRETS)
def test_the_service_refuses_weak_keys_and_passwords(secret, weak):
    for settings in ({"tarantool": "127.0.0.1:3301", "tarantool_password": secret}, {"api_keys": secret}):
        if weak:
            with pytest.raises(ValidationError, match="weak: it needs at least 16 characters"):
                Settings(**settings)
        else:
            Settings(**settings)
    if weak:  # one weak key among good ones is enough to refuse them all
        with pytest.raises(ValidationError, match="generate your own"):
            Settings(api_keys=f"good-key-8d1f0c2e9a, {secret}")


def test_the_service_and_tarantool_judge_secrets_alike(tmp_path):
    """Each value as SESSIONS_TARANTOOL_PASSWORD of a real init.lua, which stops either at the
    password or, past it, at a role that does not exist: the same verdicts as the service's."""
    verdicts = {}
    for secret, _ in SECRETS:
        env = {
            **os.environ,
            "SESSIONS_TT_LISTEN": f"unix/:{tmp_path / 't.sock'}",
            "SESSIONS_TT_WORK_DIR": str(tmp_path),
            "SESSIONS_TARANTOOL_PASSWORD": secret,
            "SESSIONS_ROLE": "none",
        }
        done = subprocess.run(
            ["tarantool", str(INIT_LUA)], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 1
        assert ("is weak" in done.stderr) != ("SESSIONS_ROLE must be" in done.stderr), done.stderr
        verdicts[secret] = "is weak" in done.stderr
    assert verdicts == {secret: weak_secrets.is_weak(secret) for secret, _ in SECRETS}
    assert verdicts == dict(SECRETS)


def test_the_lua_copy_of_the_rule_is_current():
    """tarantool/sessions/weak_secrets.lua is generated from sessions/weak_secrets.py (`make docs`)."""
    assert (ROOT / "tarantool" / "sessions" / "weak_secrets.lua").read_text() == weak_secrets.lua_module()


def test_the_settings_documentation_states_the_rule():
    for name in ("api_keys", "tarantool_password"):
        assert weak_secrets.RULE in " ".join((Settings.model_fields[name].description or "").split())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SESSIONS_TARANTOOL_PASSWORD", "change-me-to-a-long-random-string"),
        ("SESSIONS_TARANTOOL_PASSWORD", "password"),
        ("SESSIONS_REPLICATION_PASSWORD", "change-me-too"),
        ("SESSIONS_REPLICATION_PASSWORD", "change\u00a0me-to-a-long-random-string"),
        ("SESSIONS_REPLICATION_PASSWORD", "replication"),
    ],
)
@pytest.mark.each_release
def test_tarantool_refuses_weak_passwords(tmp_path, tarantool_bin, variable, value):
    env = {
        **os.environ,
        "SESSIONS_TT_LISTEN": f"unix/:{tmp_path / 't.sock'}",
        "SESSIONS_TT_WORK_DIR": str(tmp_path),
        "SESSIONS_TARANTOOL_PASSWORD": "a-real-password-8d1f",
        variable: value,
    }
    done = subprocess.run(
        [tarantool_bin, str(INIT_LUA)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert variable in done.stderr and "generate your own" in done.stderr
    assert not list(tmp_path.glob("*.snap"))  # stopped before box.cfg


@pytest.mark.each_release
def test_no_replication_user_without_a_replication_password(fresh_tarantool):
    with Console(fresh_tarantool.console_path) as admin:
        assert admin.eval("return box.schema.user.exists('replicator')") is False


_TOKEN = "'61494096-9af7-49ba-9fb4-e89c0811e6d3'"
_RULES = "rules = {ttl = 15552000, lifetime = 0, cap = 0}"
_CONTEXT = f"{{{_RULES}, deadline = require('fiber').time() + 5, extra_max = 1024, token_storage = 'plain'}}"
_V4 = "'0123456789abcdef'"


def _batch(operation: str, item: str) -> str:
    return f"sessions.batch('{operation}', {{{{{item}}}}}, {_CONTEXT})"


@pytest.mark.parametrize(
    ("call_lua", "reason"),
    [
        (_batch("get", "token = 1"), "token"),
        (_batch("get", f"token = {_TOKEN}, ip = 7"), "ip"),
        (_batch("get", f"token = {_TOKEN}, user = 1"), "no argument user"),
        (_batch("new", "token = 'short', user_id = 1, ip = '192.0.2.1'"), "token"),
        (_batch("new", f"token = {_V4}, user_id = 'x', ip = '192.0.2.1'"), "user_id"),
        (_batch("new", f"token = {_V4}, user_id = 1, ip = '192.0.2.1', ttl = 0"), "own ttl"),
    ],
)
@pytest.mark.each_release
def test_procedures_check_each_items_arguments(console, call_lua, reason):
    """Defence in depth: the procedures refuse what the service never sends, item by item."""
    # Returned as a pair: the console takes a map with an `error` key for its own error.
    kind, message = console.eval(f"local failed = {call_lua}[1].error return {{failed.type, failed.message}}")
    assert kind == "InvalidArgument" and reason in message


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ("{rules = {ttl = 0, lifetime = 0, cap = 0}, deadline = 1e12}", "ttl"),
        ("{rules = {ttl = -5, lifetime = 0, cap = 0}, deadline = 1e12}", "ttl"),
        ("{rules = {ttl = 100, lifetime = -1, cap = 0}, deadline = 1e12}", "lifetime"),
        ("{rules = {ttl = 100, lifetime = 0, cap = -1}, deadline = 1e12}", "cap"),
        ("{rules = {100, 0, 0}, deadline = 1e12}", "rules"),
        ("{rules = {ttl = 100, lifetime = 0, cap = 0}}", "deadline"),
        ("{rules = {ttl = 100, lifetime = 0, cap = 0}, deadline = 1e12}", "token_storage"),
        ("{rules = {ttl = 100, lifetime = 0, cap = 0}, deadline = 1e12, token_storage = 'x'}", "storage"),
        ("100", "context"),
    ],
)
@pytest.mark.each_release
def test_procedures_check_the_context_of_a_call(console, context, reason):
    with pytest.raises(ConsoleError, match=reason):
        console.eval(f"return sessions.batch('delete', {{{{token = {_TOKEN}}}}}, {context})")


@pytest.mark.parametrize("limit", [0, -1])
@pytest.mark.each_release
def test_the_list_procedure_refuses_a_bad_limit(console, limit):
    with pytest.raises(ConsoleError, match="limit"):
        args = f"{{kind = 'user', key = 1, limit = {limit}, page_bytes = 1024}}"
        console.eval(f"return sessions.call('list', {args}, {_CONTEXT})")


async def test_user_del_keeps_the_session_named_in_x_session_token(client, user_id):
    """The header every other method takes the token from names the session to keep, so
    "sign out other devices" never signs out the caller."""
    mine = await new_session(client, user_id)
    other = await new_session(client, user_id)
    status, body = await call(
        client, "/user/del", params={"id": str(user_id)}, headers={"X-Session-Token": mine["token"]}
    )
    assert (status, body["data"]) == (200, {"deleted": 1})
    assert (await call(client, "/get", params={"token": mine["token"]}))[0] == 200
    assert (await call(client, "/get", params={"token": other["token"]}))[0] == 404


async def test_user_del_with_except_and_a_different_header_token_ends_nothing(client, user_id):
    mine = await new_session(client, user_id)
    other = await new_session(client, user_id)
    status, body = await call(
        client,
        "/user/del",
        params={"id": str(user_id), "except": other["token"]},
        headers={"X-Session-Token": mine["token"]},
    )
    assert (status, body["code"]) == (400, "bad_request")
    for session in (mine, other):
        assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200
    # The same token both ways is one wish.
    status, body = await call(
        client,
        "/user/del",
        params={"id": str(user_id), "except": mine["token"].upper()},
        headers={"X-Session-Token": mine["token"]},
    )
    assert (status, body["data"]) == (200, {"deleted": 1})


# (aiohttp's client sends encoded slashes as they are, but decodes letters before sending.)
@pytest.mark.parametrize("path", ["/user%2Fdel", "/user%2fdel", "/ip%2Fdel", "/user%2F..%2Fdel"])
async def test_an_encoded_path_never_reaches_another_route(client, user_id, path):
    """Routing reads the path as sent: a proxy rule that blocks /user/del by path holds."""
    session = await new_session(client, user_id)
    params = {"id": str(user_id), "ip": "192.0.2.1", "token": session["token"]}
    status, body = await call(client, path, params=params)
    assert (status, body["code"]) == (404, "not_found")
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 200


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_cannot_be_forged_or_broken(tmp_path, log_format):
    """Whatever a client sends, one request is one log line; every JSON line parses; every
    parameter whose name suggests a credential is masked."""
    service = Service(
        tmp_path / "data",
        SESSIONS_ACCESS_LOG="true",
        SESSIONS_LOG_FORMAT=log_format,
        SESSIONS_API_KEYS="the-right-key-8d1f",
    )
    key = {"Authorization": "Bearer the-right-key-8d1f"}
    try:
        forged = "/nope%0A1.2.3.4%20%22GET%20/forged%22%20200"
        assert service.request(forged)[0] == 401  # refused, and still logged as one line
        assert service.request(forged, headers=key)[0] == 404
        body = service.request("/new?user_id=1&ip=192.0.2.1", headers=key)[1]
        token = body["data"]["token"]
        # A token right after a JSON escape: masking before encoding keeps the escape whole.
        assert service.request(f"/get?x=%22{token}&token={token}", headers=key)[0] == 200
        for i, name in enumerate(SECRET_NAMES):
            service.request(f"/user?id=1&{name}=s3cr3t{i:02}x", headers=key)
    finally:
        service.stop(signal.SIGTERM)
    lines = service.output().splitlines()
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all(isinstance(record, dict) for record in records)
        assert not [
            line for line in lines if line.strip() and not line.startswith("{") and "Traceback" not in line
        ], lines
    forged_lines = [line for line in lines if "/forged" in line]
    assert len(forged_lines) == 2 and all("/nope" in line for line in forged_lines)
    text = service.output()
    assert token not in text
    for i in range(len(SECRET_NAMES)):
        assert f"s3cr3t{i:02}x" not in text


# Names of query or form parameters that may hold a credential, as a client may write them.
SECRET_NAMES = [
    "api_key", "password", "after", "apiKey", "x-auth",
    # bracketed (nested fields) and arrays
    "user[password]", "auth[token]", "credentials[api_key]", "password[]", "data[secret]",
    "user[0][pass]", "user.password",
    # the same with brackets and spaces percent-encoded, or spaces as `+`
    "user%5Bpassword%5D", "user%5bpassword%5d", "password%5B%5D", "api+key", "api%20key",
    "user%5Bapi%20key%5D", "user%5Bapi+key%5D",
]  # fmt: skip


@pytest.mark.parametrize("name", [*SECRET_NAMES, "user[api key]", "user[api\tkey]"])
def test_masking_sees_through_bracketed_spaced_and_array_names(name):
    """In any logged text (a request line, an exception's message) and in the access log's
    query, which has the names decoded."""
    for text in (f"GET /user?id=1&{name}=s3cr3t&ip=1 HTTP/1.1", f"bad {name}%3Ds3cr3t here"):
        masked = redact(text)
        assert "s3cr3t" not in masked and name in masked, masked
    pairs = urllib.parse.parse_qsl(f"id=1&{name}=s3cr3t", keep_blank_values=True)
    assert "s3cr3t" not in urllib.parse.unquote_plus(masked_query(pairs))
    assert "id=1" in masked_query(pairs)


@pytest.mark.parametrize("query", ["id=1&ip=192.0.2.1&limit=5", "user[name]=Ann&data[device]=Nexus"])
def test_masking_leaves_other_parameters_alone(query):
    assert redact(f"GET /user?{query} HTTP/1.1") == f"GET /user?{query} HTTP/1.1"
    pairs = urllib.parse.parse_qsl(query)
    assert masked_query(pairs) == urllib.parse.urlencode(pairs)


BIG = 2**53 + 1  # the first integer a JavaScript number cannot hold


async def test_user_ids_as_text_for_javascript(client):
    """With X-User-Id-Format: string, every user_id of an answer is a string of its digits, so
    a JavaScript client acting on it acts on the right user; without it, the seed's integer."""
    text = {"X-User-Id-Format": "string"}
    neighbour = await new_session(client, BIG - 1)
    status, body = await call(client, "/new", params={"user_id": str(BIG), "ip": "192.0.2.1"}, headers=text)
    assert status == 200 and body["data"]["user_id"] == str(BIG)
    token = body["data"]["token"]
    for path, params in (("/get", {"token": token}), ("/user", {"id": str(BIG)})):
        _, plain = await call(client, path, params=params)
        _, texted = await call(client, path, params=params, headers=text)
        sessions = texted["data"] if isinstance(texted["data"], list) else [texted["data"]]
        assert {s["user_id"] for s in sessions} == {str(BIG)}
        sessions = plain["data"] if isinstance(plain["data"], list) else [plain["data"]]
        assert {s["user_id"] for s in sessions} == {BIG}
    # A JavaScript number would have rounded BIG to BIG - 1 and ended the neighbour's session.
    assert float(BIG) == float(BIG - 1)
    _, body = await call(client, "/user/del", params={"id": sessions[0]["user_id"]})
    assert body["data"] == {"deleted": 1}
    assert (await call(client, "/get", params={"token": neighbour["token"]}))[0] == 200
    assert (await call(client, "/user/del", params={"id": str(2**63 - 1)}, headers=text))[0] == 200


@pytest.mark.parametrize("value", ["", "String", "bigint", "string,number"])
async def test_an_unknown_user_id_format_is_refused(client, value):
    status, body = await call(client, "/user", params={"id": "1"}, headers={"X-User-Id-Format": value})
    assert (status, body["code"]) == (400, "bad_request")


@pytest.mark.parametrize("values", [("string", "string"), ("string", "number"), ("number", "string")])
async def test_a_user_id_format_given_twice_is_refused(client, values):
    headers = CIMultiDict(("X-User-Id-Format", value) for value in values)
    status, body = await call(client, "/user", params={"id": "1"}, headers=headers)
    assert (status, body["code"]) == (400, "bad_request")
    assert "given once" in body["message"]


@pytest.mark.parametrize("variable", ["TT_LISTEN", "TT_READ_ONLY", "TT_REPLICATION"])
@pytest.mark.each_release
def test_tarantool_refuses_its_own_tt_variables(tmp_path, tarantool_bin, variable):
    """Tarantool 2.11 applies TT_* to box.cfg itself (the port would open before the schema
    and grants exist): init.lua stops instead, naming the variable to use."""
    env = {
        **os.environ,
        "SESSIONS_TT_LISTEN": f"unix/:{tmp_path / 't.sock'}",
        "SESSIONS_TT_WORK_DIR": str(tmp_path),
        "SESSIONS_TARANTOOL_PASSWORD": "a-real-password-8d1f",
        variable: "3301",
    }
    done = subprocess.run([tarantool_bin, str(INIT_LUA)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"use SESSIONS_{variable}" in done.stderr
    assert not list(tmp_path.glob("*.snap"))  # stopped before box.cfg
