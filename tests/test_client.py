"""The Python client (clients/python, its own distribution) against the real service."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import orjson
import pytest

import sessions
import sessions_client
from sessions.models import SessionObject as ServerSessionObject
from sessions_client import (
    RETRY_SAFE,
    RETRY_SAFE_WITH,
    ServiceUnavailable,
    SessionById,
    SessionObject,
    SessionsClient,
    WebhookVerificationError,
    errors,
    verify_webhook,
)
from sessions_client.errors import (
    BY_CODE,
    FAMILIES,
    BadRequest,
    IdempotencyConflict,
    InvalidExtra,
    InvalidInput,
    InvalidIp,
    InvalidUserId,
    NotFoundError,
    TokenNotFound,
    Unauthorized,
    Unavailable,
)

from .conftest import settings_for
from .gateway import Gateway
from .service import Service, api_methods_not_called, requests_by_method

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def base_url(serve, settings):
    server = (await serve(settings)).server
    return str(server.make_url("")).rstrip("/")


async def test_round_trip(base_url, user_id, ip):
    async with SessionsClient(base_url) as sessions:
        made = await sessions.new(user_id, ip, extra={"device": "Nexus 5"})
        assert isinstance(made, SessionObject)
        assert (made.user_id, made.ip, made.extra) == (user_id, ip, {"device": "Nexus 5"})

        got = await sessions.get(made.token, ip="192.0.2.9", extra={"os": "Android"})
        assert (got.ip, got.extra) == ("192.0.2.9", {"device": "Nexus 5", "os": "Android"})
        assert [s.token for s in await sessions.by_user(user_id)] == [made.token]
        assert [s.token for s in await sessions.by_ip("192.0.2.9")][:1] == [made.token]

        assert (await sessions.delete(made.token)).token == made.token
        with pytest.raises(TokenNotFound):
            await sessions.get(made.token)


async def test_errors_are_typed(base_url, user_id):
    async with SessionsClient(base_url) as sessions:
        with pytest.raises(InvalidUserId) as invalid:
            await sessions.new(0, "192.0.2.1")
        assert isinstance(invalid.value, InvalidInput) and invalid.value.status == 400
        with pytest.raises(InvalidIp):
            await sessions.by_ip("nowhere")
        with pytest.raises(InvalidExtra):
            await sessions.new(user_id, "192.0.2.1", extra={"n": 2**70})
        with pytest.raises(InvalidExtra):
            await sessions.new(user_id, "192.0.2.1", extra={"n": float("nan")})
        with pytest.raises(TokenNotFound) as missing:
            await sessions.delete("not-a-token")
        assert isinstance(missing.value, NotFoundError) and missing.value.status == 404


async def test_paging_rotation_idempotency_and_bulk_deletes(base_url, user_id, ip):
    async with SessionsClient(base_url) as sessions:
        opened = [await sessions.new(user_id, ip) for _ in range(5)]
        walked = [s.token async for s in sessions.iter_user(user_id, page_size=2)]
        assert walked == [s.token for s in reversed(opened)]  # newest first, every page
        rotated = await sessions.rotate(opened[0].token)
        assert rotated.token != opened[0].token
        with pytest.raises(TokenNotFound):
            await sessions.get(opened[0].token)
        first = await sessions.new(user_id, ip, idempotency_key="sign-in-1")
        again = await sessions.new(user_id, ip, idempotency_key="sign-in-1")
        assert again == first
        with pytest.raises(IdempotencyConflict):
            await sessions.new(user_id, "192.0.2.45", idempotency_key="sign-in-1")
        assert await sessions.count_user(user_id) == await sessions.count("user", user_id) == 6
        assert await sessions.delete_user(user_id, keep=rotated.token) == 5
        assert await sessions.count("ip", ip) == 1
        assert [s.token for s in await sessions.by_user(user_id)] == [rotated.token]
        assert await sessions.delete_ip(ip) == 1


async def test_session_ids_read_end_and_keep_by_id(base_url, user_id, ip):
    async with SessionsClient(base_url, with_ids=True) as sessions, SessionsClient(base_url) as plain:
        kept = await sessions.new(user_id, ip)
        assert kept.id is not None and (await plain.get(kept.token)).id is None
        ended, other = await sessions.new(user_id, ip), await sessions.new(user_id, ip)
        assert (await sessions.rotate(kept.token)).id == kept.id
        assert [s.id for s in await sessions.by_user(user_id)] == [other.id, ended.id, kept.id]
        found = await sessions.by_id(ended.id)
        assert isinstance(found, SessionById) and (found.id, found.activity) == (ended.id, ended.activity)
        assert not hasattr(found, "token")
        assert (await sessions.delete_by_id(ended.id)).id == ended.id
        with pytest.raises(TokenNotFound):
            await sessions.by_id(ended.id)
        with pytest.raises(BadRequest):
            await sessions.by_id("not-an-id")
        with pytest.raises(BadRequest):
            await sessions.delete_user(user_id, keep="x", keep_id=kept.id)
        assert await sessions.delete_user(user_id, keep_id=kept.id) == 1
        assert [s.id for s in await sessions.by_user(user_id)] == [kept.id]


async def test_paging_with_ids_gives_every_page_its_ids(base_url, user_id, ip):
    async with SessionsClient(base_url, with_ids=True) as sessions:
        opened = [await sessions.new(user_id, ip) for _ in range(5)]
        for walk in (sessions.iter_user(user_id, page_size=2), sessions.iter_ip(ip, page_size=2)):
            assert [s.id async for s in walk] == [s.id for s in reversed(opened)]


async def test_listings_without_tokens_are_sessions_by_id(serve, settings, user_id):
    server = (await serve(settings.model_copy(update={"listings": "ids"}))).server
    async with SessionsClient(str(server.make_url("")).rstrip("/"), with_ids=True) as sessions:
        opened = await sessions.new(user_id, "192.0.2.1")
        listed = await sessions.by_user(user_id)
        assert listed == [
            SessionById(**{k: v for k, v in dataclasses.asdict(opened).items() if k != "token"})
        ]


@pytest.fixture
def gateway(base_url):
    """The service under `/sessions` behind a gateway that records what it gets."""
    gateway = Gateway(base_url)
    yield gateway
    gateway.close()


async def test_paging_behind_a_gateway_that_serves_the_service_under_a_path_prefix(gateway, user_id, ip):
    async with SessionsClient(gateway.url, retries=0) as sessions:
        opened = [await sessions.new(user_id, ip) for _ in range(5)]
        walked = [s.token async for s in sessions.iter_user(user_id, page_size=2)]
        assert walked == [s.token for s in reversed(opened)]
        assert await sessions.delete_user(user_id) == 5


async def test_the_token_to_keep_travels_in_a_header_never_in_the_url(gateway, user_id, ip):
    async with SessionsClient(gateway.url) as sessions:
        kept = await sessions.new(user_id, ip)
        await sessions.new(user_id, ip)
        assert await sessions.delete_user(user_id, keep=kept.token) == 1
        await sessions.get(kept.token)
    sent = [request for request in gateway.seen if request["target"].startswith("/sessions/user/del")]
    assert len(sent) == 1 and sent[0]["headers"]["X-Session-Token"] == kept.token
    assert not [request["target"] for request in gateway.seen if kept.token in request["target"]]


@pytest.mark.parametrize("bad", ["61494096-9af7-49ba-9fb4-e89c0811e6d3\r\nX-Evil: 1", "a\nb", "nul\x00", "é"])
async def test_a_header_value_a_header_cannot_hold_is_invalid_input_and_nothing_is_sent(
    gateway, user_id, bad
):
    async with SessionsClient(gateway.url) as sessions:
        calls = [
            sessions.get(bad),
            sessions.delete(bad),
            sessions.rotate(bad),
            sessions.delete_user(user_id, keep=bad),
            sessions.new(user_id, "192.0.2.1", idempotency_key=bad),
            sessions.count(bad, user_id),  # type: ignore[arg-type]  # not a kind
        ]
        for call in calls:
            with pytest.raises(BadRequest) as refused:
                await call
            assert isinstance(refused.value, InvalidInput) and refused.value.status is None
    with pytest.raises(BadRequest):
        SessionsClient(gateway.url, api_key=bad)
    assert gateway.seen == []


def test_the_client_follows_the_api_document_on_families_retries_and_safe_operations():
    """The document's x-family and x-retry of each code and x-retry-safe(-with) of each
    operation (sessions/openapi.py) are the client's, so all three clients act alike."""
    document = orjson.loads((ROOT / "openapi.json").read_bytes())
    code = document["components"]["schemas"]["Error"]["properties"]["code"]
    for name, family in code["x-family"].items():
        assert issubclass(BY_CODE[name], FAMILIES[family]), (name, family)
        assert BY_CODE[name].retry == code["x-retry"][name], name
    for path, item in document["paths"].items():
        assert RETRY_SAFE[path] == item["post"]["x-retry-safe"], path
        assert RETRY_SAFE_WITH.get(path) == item["post"].get("x-retry-safe-with"), path


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (500, "internal_error", Unavailable),
        (418, "a_later_code", InvalidInput),
        (503, "a_later_code", Unavailable),
    ],
)
async def test_internal_errors_and_unknown_codes_follow_the_documented_rule_and_are_not_retried(
    gateway, status, code, family
):
    retried = []
    async with SessionsClient(
        f"{gateway.root}/canned/{status}/{code}", on_retry=lambda *event: retried.append(event)
    ) as sessions:
        with pytest.raises(family) as raised:
            await sessions.get("61494096-9af7-49ba-9fb4-e89c0811e6d3")
    assert (raised.value.code, raised.value.status) == (code, status)
    assert not isinstance(raised.value, NotFoundError)
    assert retried == [] and len(gateway.seen) == 1


async def test_a_deadline_bounds_a_whole_call_against_a_service_that_never_answers():
    """A service that accepts and never answers: each attempt waits `timeout`, and a call
    safe to repeat is tried three times; `deadline` bounds the whole call, waits included."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel accepts; nobody reads
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        async with SessionsClient(url, timeout=0.4, retries=2, deadline=0.7) as sessions:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await sessions.get("61494096-9af7-49ba-9fb4-e89c0811e6d3")
            # 0.4 s, a wait of 0.1 s, the 0.2 s left; without the deadline: 3 attempts of
            # 0.4 s and 0.1 + 0.2 s of waits, 1.5 s.
            assert 0.6 < time.monotonic() - started < 1.1


async def test_the_event_pager_follows_the_feed(serve, fresh_tarantool, user_id):
    server = (await serve(settings_for(fresh_tarantool, events=True))).server
    url = str(server.make_url("")).rstrip("/")
    async with SessionsClient(url, timeout=1) as sessions:
        start = (await sessions.events()).next
        made = await sessions.new(user_id, "192.0.2.1")
        await sessions.get(made.token, ip="192.0.2.2")
        await sessions.delete(made.token)
        seen = [event async for event in sessions.iter_events(start, limit=1, wait=None)]
        assert [(e.kind, e.reason, e.user_id, e.ip) for e in seen] == [
            ("opened", None, user_id, "192.0.2.1"),
            ("moved", None, user_id, "192.0.2.2"),
            ("ended", "del", user_id, "192.0.2.2"),
        ]
        assert [e.seq for e in seen] == [start + 1, start + 2, start + 3]
        # A long poll outlasts the client's timeout of 1 s and answers with the next event.
        poll = asyncio.create_task(sessions.events(seen[-1].seq, wait=3))
        await asyncio.sleep(1.5)
        await sessions.new(user_id, "192.0.2.3")
        page = await poll
        assert [e.kind for e in page.events] == ["opened"] and page.next == seen[-1].seq + 1
        assert not page.missed
        following = sessions.iter_events(seen[-1].seq, wait=1)
        assert (await anext(following)).seq == page.next
        await following.aclose()
        with pytest.raises(InvalidInput) as refused:
            await sessions.events(wait=31)
        assert refused.value.code == "invalid_wait"


def test_the_webhook_verifier_checks_signature_and_time_in_constant_time():
    key = os.urandom(32)
    secret = "whsec_" + base64.b64encode(key).decode()
    body = orjson.dumps({"type": "session.opened", "timestamp": "2025-01-01T00:00:00Z", "data": {"seq": 1}})
    now = 1_764_112_345
    signed = hmac.new(key, f"msg_1.{now}.".encode() + body, hashlib.sha256).digest()
    good = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": "v1," + base64.b64encode(signed).decode(),
    }
    assert verify_webhook(secret, good, body, now=now)["data"] == {"seq": 1}
    # Header names in any case; several signatures, one matching (a rotated secret).
    several = {k.title(): v for k, v in good.items()} | {
        "Webhook-Signature": "v1,AAAA " + good["webhook-signature"]
    }
    assert verify_webhook(secret, several, body.decode(), now=now)["type"] == "session.opened"
    # The exact tolerance: 300 s either way passes, 301 does not.
    assert verify_webhook(secret, good, body, now=now + 300)
    assert verify_webhook(secret, good, body, now=now - 300)
    bad = [
        (good, body + b" ", now),  # another body
        (good | {"webhook-id": "msg_2"}, body, now),
        (good | {"webhook-timestamp": str(now + 1)}, body, now),
        (good | {"webhook-signature": "v2," + good["webhook-signature"][3:]}, body, now),
        (good, body, now + 301),
        (good, body, now - 301),
        ({k: v for k, v in good.items() if k != "webhook-id"}, body, now),
        (good | {"webhook-timestamp": "12.5"}, body, now),
    ]
    for headers, sent, at in bad:
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, headers, sent, now=at)
    for wrong in ("whsec_" + base64.b64encode(os.urandom(32)).decode(), "not-a-secret", "whsec_%%%"):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(wrong, good, body, now=now)
    source = (ROOT / "clients/python/sessions_client/webhooks.py").read_text()
    assert "hmac.compare_digest(value.encode(), expected)" in source and "== expected" not in source


def test_the_errors_are_importable_from_the_package():
    """`from sessions_client import Unavailable` passes mypy --strict: every error is in the
    package's __all__, which is what makes a name a re-export."""
    assert set(errors.__all__) <= set(sessions_client.__all__)
    assert all(getattr(sessions_client, name) is getattr(errors, name) for name in errors.__all__)


def test_installing_the_client_leaves_the_checkout_clean():
    """`pip install ./clients/python` builds in the source tree (setuptools' build/ and
    *.egg-info/); git ignores both."""
    for left in (
        "clients/python/build/lib/sessions_client/__init__.py",
        "clients/python/sessions_client.egg-info/PKG-INFO",
    ):
        assert subprocess.run(["git", "check-ignore", "-q", left], cwd=ROOT).returncode == 0, left


def test_the_client_knows_every_error_code_and_field_of_the_api_document():
    """The OpenAPI document is the reference: a code or a SessionObject field the service
    documents and the client lacks fails here."""
    document = orjson.loads((ROOT / "openapi.json").read_bytes())
    codes = set(document["components"]["schemas"]["Error"]["properties"]["code"]["enum"])
    assert codes <= set(BY_CODE), codes - set(BY_CODE)
    assert [f.name for f in dataclasses.fields(SessionObject)] == list(ServerSessionObject.model_fields)
    assert issubclass(BY_CODE["overloaded"], Unavailable)


async def test_every_method_of_the_api_is_called_by_the_client_against_the_service(serve, settings, user_id):
    """Each of the API's methods reached through the client: the service's own request counts
    (/metrics, by method) say which; a method the client lacks or calls at a wrong path fails."""
    served = await serve(settings.model_copy(update={"events": True}))
    base = str(served.server.make_url("")).rstrip("/")
    before = requests_by_method(await (await served.get("/metrics")).text())
    async with SessionsClient(base, with_ids=True) as sessions:
        assert isinstance((await sessions.events(0, limit=1)).events, list)
        made = await sessions.new(user_id, "192.0.2.31")
        other = await sessions.new(user_id, "192.0.2.31")
        assert made.id is not None
        assert (await sessions.by_id(made.id)).id == made.id
        third = await sessions.new(user_id, "192.0.2.31")
        assert third.id is not None
        assert (await sessions.delete_by_id(third.id)).id == third.id
        await sessions.get(made.token)
        made = await sessions.rotate(made.token)
        assert {s.token for s in await sessions.by_user(user_id)} == {made.token, other.token}
        assert len(await sessions.by_ip("192.0.2.31")) >= 2
        assert await sessions.count("user", user_id) == 2
        assert await sessions.count("ip", "192.0.2.31") >= 2
        assert await sessions.delete_user(user_id, keep=made.token) == 1
        await sessions.delete(made.token)
        await sessions.new(user_id, "192.0.2.32")
        assert await sessions.delete_ip("192.0.2.32") >= 1
    after = requests_by_method(await (await served.get("/metrics")).text())
    assert api_methods_not_called(before, after) == []


def test_the_client_is_versioned_with_the_service_and_needs_only_aiohttp():
    assert sessions_client.__version__ == sessions.__version__
    project = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["aiohttp"]


async def test_api_key(serve, tarantool, user_id):
    server = (await serve(settings_for(tarantool, api_keys="client-key-8d1f0c2e"))).server
    url = str(server.make_url("")).rstrip("/")
    async with SessionsClient(url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.by_user(user_id)
    async with SessionsClient(url, api_key="client-key-8d1f0c2e") as keyed:
        assert await keyed.by_user(user_id) == []


async def test_unreachable_service_is_not_a_missing_session():
    async with SessionsClient("http://127.0.0.1:9", timeout=1) as sessions:
        with pytest.raises(ServiceUnavailable):
            await sessions.get("61494096-9af7-49ba-9fb4-e89c0811e6d3")


def _readme_blocks(language: str, readme: str = "README.md") -> list[str]:
    text = (ROOT / readme).read_text()
    return [
        textwrap.dedent(block)
        for block in re.findall(rf"^ *```{language}\n(.*?)^ *```", text, re.DOTALL | re.MULTILINE)
    ]


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_readme_examples_run_as_printed(tmp_path):
    """Every `sh` block of the README, in order in one shell (`set -euo pipefail`), every
    `python` block of it and the Python client's as a script, and the clients' READMEs' `js`
    and `php` examples, each exactly
    as printed, against the service where they say it serves (port 8080). The clients are
    installed into a directory of the example's own as a package manager would put them
    (node_modules/, Composer's vendor/autoload.php). `console` blocks are shown, not run."""
    shell, python = (
        _readme_blocks("sh"),
        _readme_blocks("python") + _readme_blocks("python", "clients/python/README.md"),
    )
    node, php = _readme_blocks("js", "clients/node/README.md"), _readme_blocks("php", "clients/php/README.md")
    assert shell and python and node and php
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            if os.environ.get("CI") == "true":
                pytest.fail("port 8080 is taken: the README's examples need it")
            pytest.skip("something already listens on port 8080")
    service = Service(tmp_path / "data", port=8080)
    try:
        printed = _run(["bash", "-c", "set -euo pipefail\n" + "\n".join(shell)], tmp_path)
        # What the README's comments say the commands print.
        assert '"token_not_found"' in printed and '{"device":"Nexus 5"}' in printed, printed
        for number, block in enumerate(python):
            (tmp_path / f"readme_{number}.py").write_text(block)
            printed = _run([sys.executable, f"readme_{number}.py"], tmp_path)
            assert "devices" in printed or number > 0, printed
        if shutil.which("node"):
            app = tmp_path / "node-app"
            (app / "node_modules").mkdir(parents=True)
            (app / "node_modules" / "sessions-client").symlink_to(ROOT / "clients" / "node")
            (app / "example.mjs").write_text(node[0])
            # As on Node 18 (Debian 12's, which the client claims): no global `crypto` there.
            (app / "node18.cjs").write_text("delete globalThis.crypto;\n")
            assert "other sessions ended" in _run(["node", "--require", "./node18.cjs", "example.mjs"], app)
        if shutil.which("php"):
            app = tmp_path / "php-app"
            (app / "vendor").mkdir(parents=True)
            autoload = ROOT / "clients" / "php" / "autoload.php"
            (app / "vendor" / "autoload.php").write_text(f"<?php\nrequire {str(autoload)!r};\n")
            (app / "example.php").write_text(php[0])
            assert "other sessions ended" in _run(["php", "example.php"], app)
    finally:
        service.stop(signal.SIGTERM)


async def test_a_503_is_retried_after_retry_after(tmp_path, user_id):
    """Tarantool paused: the service answers 503 storage_unavailable with Retry-After: 1; a
    `get` (safe to repeat) is retried after that second, and Tarantool is back by then."""
    service = Service(tmp_path / "data", SESSIONS_TARANTOOL_TIMEOUT="0.5")
    pid = service.tarantool_pid
    retries: list[tuple[int, str, int | None, float]] = []

    def resumed(attempt: int, error: Unavailable, wait: float) -> None:
        retries.append((attempt, error.code, error.status, wait))
        os.kill(pid, signal.SIGCONT)

    try:
        async with SessionsClient(
            f"http://127.0.0.1:{service.port}", timeout=5, on_retry=resumed
        ) as sessions:
            opened = await sessions.new(user_id, "192.0.2.1")
            os.kill(pid, signal.SIGSTOP)
            try:
                assert (await sessions.get(opened.token)).token == opened.token
            finally:
                os.kill(pid, signal.SIGCONT)
            assert retries == [(1, "storage_unavailable", 503, 1.0)]
            # Not safe to repeat: a delete whose first attempt may have been applied.
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(Unavailable):
                    await sessions.delete(opened.token)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert len(retries) == 1
    finally:
        service.stop(signal.SIGTERM)
