"""Random requests against a real `sessions serve`: never a 5xx, always a valid envelope."""

from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import FUZZ_EXAMPLES
from .service import Service

PATHS = ["/new", "/get", "/del", "/user", "/ip", "/", "/new/", "/health", "/x" * 3]
NAMES = ["user_id", "id", "ip", "token", "except", "x", ""]
INTERESTING = [
    "",
    "0",
    "1",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "1e3",
    "\u0661",
    "²",
    "192.0.2.1",
    "::1",
    "::ffff:1.2.3.4",
    "fe80::1%eth0",
    "2001:DB8::1",
    "256.0.0.1",
    "61494096-9af7-49ba-9fb4-e89c0811e6d3",
    "61494096-9AF7-49BA-9FB4-E89C0811E6D3",
    "\x00",
    "\r\n",
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/merge-patch+json",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
]

values = st.one_of(
    st.sampled_from(INTERESTING),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode()
    ),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("fuzz") / "data", SESSIONS_BODY_TIMEOUT="2")
    yield running
    running.stop(signal.SIGTERM)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=st.sampled_from(PATHS),
    params=st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=4),
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_random_requests_get_an_envelope_and_never_a_5xx(service, method, path, params, body, content_type):
    query = "&".join(
        f"{quote_from_bytes(name.encode())}={quote_from_bytes(value.encode('utf-8', 'surrogatepass'))}"
        for name, value in params
    )
    target = f"{path}?{query}" if query else path
    headers = {"Content-Type": content_type} if content_type else {}
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.status < 500, raw
    assert response.getheader("Content-Type") == "application/json"
    envelope = json.loads(raw)
    if response.status == 200:
        assert set(envelope) == {"status", "data"} and envelope["status"] == "success"
    else:
        assert set(envelope) == {"status", "code", "message"} and envelope["status"] == "error"
