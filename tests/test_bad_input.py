"""Bad input at the HTTP level, against a real `sessions serve`: every case is a clean 4xx
envelope or a closed connection, never a hang, and the service keeps serving."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from .service import Service

TOKEN = "61494096-9af7-49ba-9fb4-e89c0811e6d3"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(
        tmp_path_factory.mktemp("bad-input") / "data",
        SESSIONS_KEEPALIVE_TIMEOUT="1",
        SESSIONS_BODY_TIMEOUT="1",
    )
    yield running
    running.stop(signal.SIGTERM)


@pytest.fixture(autouse=True)
def still_serving(service: Service) -> Iterator[None]:
    yield
    status, body = service.request("/new?user_id=1&ip=192.0.2.1")
    assert (status, body["status"]) == (200, "success")


def request(target: bytes, *headers: bytes, body: bytes = b"", method: bytes = b"GET") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: localhost", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (request(b"/new?user_id=1&ip=" + b"1" * 20000), "bad_request"),
        (request(b"/get?token=" + TOKEN.encode(), b"X-Big: " + b"a" * 20000), "bad_request"),
        (request(b"/new?user_id=1&ip=1.2.3.4", b"Content-Length: abc"), "bad_request"),
        (
            request(b"/new?user_id=1&ip=1.2.3.4", b"Transfer-Encoding: chunked", b"Content-Length: 5"),
            "bad_request",
        ),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)), "bad_request"),
        (b"GARBAGE\r\n\r\n", "bad_request"),
        (request(b"/new?user_id=\xff\xfe&ip=1.2.3.4"), "bad_request"),
        (request(b"/new?user_id=%FF%FE&ip=1.2.3.4"), "invalid_user_id"),
        (request(b"/new?user_id=1&ip=%00"), "invalid_ip"),
        (request(b"/get?token=%00" + TOKEN[1:].encode()), "token_not_found"),
        (request(b"/get?token=" + TOKEN.encode() + b"%0A"), "token_not_found"),
        (request(b"/new?user_id=1%0D%0A&ip=1.2.3.4"), "invalid_user_id"),
    ],
    ids=[
        "long-query",
        "long-header",
        "bad-content-length",
        "chunked-and-length",
        "tls-hello",
        "garbage",
        "raw-non-utf8-query",
        "escaped-non-utf8-query",
        "nul-ip",
        "nul-token",
        "newline-token",
        "crlf-user-id",
    ],
)
def test_bad_requests_get_an_envelope(service, data, code):
    status, body, _ = service.raw(data)
    assert status is not None and 400 <= status < 500
    assert (body["status"], body["code"]) == ("error", code)


def test_a_head_that_never_ends_is_closed(service):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        conn.sendall(b"GET /new?user_id=1&ip=1.2.3.4 HTTP/1.1\r\nHost: x\r\n")
        assert conn.recv(1000) == b""  # closed by the server
    assert time.monotonic() - started < 5


def test_a_body_that_never_comes_is_408(service):
    data = request(b"/new?user_id=1&ip=1.2.3.4", b"Content-Type: application/json", b"Content-Length: 100")
    status, body, elapsed = service.raw(data + b'{"a"', timeout=10)
    assert (status, body["code"]) == (408, "request_timeout")
    assert elapsed < 5


def test_a_body_said_to_be_over_the_limit_is_413_without_waiting_for_it(service):
    # Nothing of the body is sent: a server that waited for it would answer 408 after 1 s.
    data = request(b"/new?user_id=1&ip=1.2.3.4", b"Content-Type: application/json", b"Content-Length: 65537")
    status, body, _ = service.raw(data, timeout=10)
    assert (status, body["code"]) == (413, "payload_too_large")


def test_garbage_after_a_request_in_the_same_packet_writes_nothing(service):
    # aiohttp refuses the whole packet it cannot parse, the good request with it.
    data = request(b"/new?user_id=77&ip=1.2.3.4", b"Content-Type: application/json", body=b'{"a": 1}')
    status, body, _ = service.raw(data + b"GARBAGE AFTER\r\n\r\n" + bytes(range(256)))
    assert (status, body["code"]) == (400, "bad_request")
    assert service.request("/user?id=77") == (200, {"status": "success", "data": []})
