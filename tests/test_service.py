"""The service as a user runs it: embedded Tarantool, restarts, signals, configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sessions.config import Settings

from .conftest import call, new_session, serving
from .service import Service, alive, free_port, wait_gone


@pytest.mark.each_release
async def test_data_survives_a_restart_with_the_same_data_dir(tmp_path, user_id):
    settings = Settings(data_dir=tmp_path / "data")
    async with serving(settings) as client:
        session = await new_session(client, user_id, json={"device": "Nexus 5"}, method="POST")
        pid = int((tmp_path / "data" / "tarantool.pid").read_text())
    assert not alive(pid)
    # Snapshots, WAL, log and sockets hold sessions and credentials: owner only.
    for path in [tmp_path / "data", *(tmp_path / "data").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, path

    async with serving(settings) as client:
        status, body = await call(client, "/user", params={"id": str(user_id)})
        assert (status, body["data"]) == (200, [session])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.each_release
def test_serve_and_stop_cleanly_leaving_no_tarantool(tmp_path, sig):
    service = Service(tmp_path / "data")
    status, body = service.request("/new?user_id=1&ip=192.168.1.1")
    assert status == 200
    token = body["data"]["token"]
    tarantool_pid = service.tarantool_pid

    assert service.stop(sig) == 0
    wait_gone(tarantool_pid)

    again = Service(tmp_path / "data")
    try:
        status, body = again.request(f"/get?token={token}")
        assert (status, body["data"]["user_id"]) == (200, 1)
    finally:
        again.stop(signal.SIGTERM)


@pytest.mark.each_release
def test_kill_9_of_the_service_takes_tarantool_down_cleanly_and_keeps_data(tmp_path):
    service = Service(tmp_path / "data")
    status, body = service.request("/new?user_id=7&ip=192.0.2.1")
    assert status == 200
    tarantool_pid = service.tarantool_pid

    service.process.kill()
    service.process.wait(timeout=10)
    wait_gone(tarantool_pid)

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
                "SESSIONS_PORT": str(free_port()),
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


def test_openapi_into_a_closed_pipe_ends_quietly():
    """`sessions openapi | head`: the reader leaves early; no traceback, exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sessions", "openapi"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(10)
    process.stdout.close()
    assert process.wait(timeout=30) == 0
    assert b"Traceback" not in process.stderr.read()
    process.stderr.close()


@pytest.mark.parametrize("command", ["backup", "restore", "stats", "promote", "rejoin"])
def test_each_command_that_works_on_files_says_where_in_its_help(command):
    done = subprocess.run(
        [sys.executable, "-m", "sessions", command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "SESSIONS_DATA_DIR (./var by default" in text
