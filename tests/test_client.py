"""sessions.client.SessionsClient against the real service."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sessions.client import ServiceUnavailable, SessionsClient
from sessions.errors import InvalidExtra, InvalidIp, InvalidUserId, TokenNotFound, Unauthorized
from sessions.models import SessionObject

from .conftest import settings_for
from .service import Service


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
        with pytest.raises(InvalidUserId):
            await sessions.new(0, "192.0.2.1")
        with pytest.raises(InvalidIp):
            await sessions.by_ip("nowhere")
        with pytest.raises(InvalidExtra):
            await sessions.new(user_id, "192.0.2.1", extra={"n": 2**70})
        with pytest.raises(TokenNotFound):
            await sessions.delete("not-a-token")


async def test_api_key(serve, tarantool, user_id):
    server = (await serve(settings_for(tarantool, api_keys="k"))).server
    url = str(server.make_url("")).rstrip("/")
    async with SessionsClient(url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.by_user(user_id)
    async with SessionsClient(url, api_key="k") as keyed:
        assert await keyed.by_user(user_id) == []


async def test_unreachable_service_is_not_a_missing_session():
    async with SessionsClient("http://127.0.0.1:9", timeout=1) as sessions:
        with pytest.raises(ServiceUnavailable):
            await sessions.get("61494096-9af7-49ba-9fb4-e89c0811e6d3")


def _readme_python_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)


def test_the_readme_example_runs_as_printed(tmp_path):
    """Every Python block of the README, run as a script exactly as printed, against the service
    where the README says it serves (port 8080)."""
    blocks = _readme_python_blocks()
    assert blocks
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            if os.environ.get("CI") == "true":
                pytest.fail("port 8080 is taken: the README's examples need it")
            pytest.skip("something already listens on port 8080")
    service = Service(tmp_path / "data", port=8080)
    try:
        for number, block in enumerate(blocks):
            script = tmp_path / f"readme_{number}.py"
            script.write_text(block)
            done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert "devices" in done.stdout or number > 0, done.stdout
    finally:
        service.stop(signal.SIGTERM)
