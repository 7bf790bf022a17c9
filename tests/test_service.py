"""The service as a user runs it: embedded Tarantool, restarts, signals, configuration."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sessions.app import create_app
from sessions.config import Settings

from .conftest import call, new_session


async def test_data_survives_a_restart_with_the_same_data_dir(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    async with TestClient(TestServer(create_app(settings))) as client:
        session = await new_session(client, user_id, json={"device": "Nexus 5"}, method="POST")
        pid = int((tmp_path / "data" / "tarantool.pid").read_text())
    assert not _alive(pid)
    # Snapshots, WAL, log and sockets hold sessions and credentials: owner only.
    for path in [tmp_path / "data", *(tmp_path / "data").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, path

    async with TestClient(TestServer(create_app(settings))) as client:
        status, body = await call(client, "/user", params={"id": str(user_id)})
        assert (status, body["data"]) == (200, [session])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for every purpose here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


class Service:
    """`python -m sessions serve` in a child process, with its own port and data dir."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"service-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sessions", "serve"],
                env={
                    **os.environ,
                    "SESSIONS_PORT": str(self.port),
                    "SESSIONS_DATA_DIR": str(data_dir),
                    **env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.request("/get")
                break
            except OSError:
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.1)

    @property
    def tarantool_pid(self) -> int:
        return int((self.data_dir / "tarantool.pid").read_text())

    def request(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_and_stop_cleanly_leaving_no_tarantool(tmp_path, sig):
    service = Service(tmp_path / "data")
    status, body = service.request("/new?user_id=1&ip=192.168.1.1")
    assert status == 200
    token = body["data"]["token"]
    tarantool_pid = service.tarantool_pid

    assert service.stop(sig) == 0
    _wait_gone(tarantool_pid)

    again = Service(tmp_path / "data")
    try:
        status, body = again.request(f"/get?token={token}")
        assert (status, body["data"]["user_id"]) == (200, 1)
    finally:
        again.stop(signal.SIGTERM)


def test_kill_9_of_the_service_takes_tarantool_down_cleanly_and_keeps_data(tmp_path):
    service = Service(tmp_path / "data")
    status, body = service.request("/new?user_id=7&ip=192.0.2.1")
    assert status == 200
    tarantool_pid = service.tarantool_pid

    service.process.kill()
    service.process.wait(timeout=10)
    _wait_gone(tarantool_pid)

    again = Service(tmp_path / "data")
    try:
        assert again.request(f"/get?token={body['data']['token']}")[0] == 200
    finally:
        again.stop(signal.SIGTERM)


def test_a_second_service_on_the_same_data_dir_is_refused(tmp_path):
    service = Service(tmp_path / "data")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "sessions", "serve"],
            env={
                **os.environ,
                "SESSIONS_PORT": str(_free_port()),
                "SESSIONS_DATA_DIR": str(tmp_path / "data"),
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert service.request("/new?user_id=1&ip=192.0.2.1")[0] == 200
    finally:
        service.stop(signal.SIGTERM)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SESSIONS_PORT": "http"}, "SESSIONS_PORT"),
        ({"SESSIONS_IDLE_TTL": "0"}, "SESSIONS_IDLE_TTL"),
        ({"SESSIONS_WAL_MODE": "sometimes"}, "SESSIONS_WAL_MODE"),
        ({"SESSIONS_TARANTOOL": "nowhere"}, "SESSIONS_TARANTOOL"),
        ({"SESSIONS_TARANTOOL": "127.0.0.1:3301"}, "SESSIONS_TARANTOOL_PASSWORD"),
    ],
)
def test_invalid_configuration_fails_with_one_clear_line(tmp_path, env, named):
    result = subprocess.run(
        [sys.executable, "-m", "sessions", "serve"],
        env={**os.environ, "SESSIONS_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
