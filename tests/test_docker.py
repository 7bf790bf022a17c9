"""The deployment run for real: the image built from the Dockerfile, the compose stack of
the README with its healthchecks, tools and replica profiles, and Tarantool in a container.

Base images are local stand-ins (tests/docker/images.sh) under their own names: Debian's
Python 3.11 for python:3.11-slim-bookworm, and for tarantool/tarantool:2.11 the Tarantool 2.11
the suite found (tests/conftest.py), on Debian 12, or Debian's Tarantool 2.6 where there is
none. Not covered here, then: the official Tarantool image's entrypoint, its Alpine build, and
its user id on the volume. Without a Docker engine these tests skip with the reason; under
CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sessions.config import Settings

from .conftest import BINARIES, call, new_session
from .service import free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sessionstest"
# The release the stack's Tarantool runs: production's when the suite has it.
RELEASE = "2.11" if "2.11" in BINARIES else "2.6"
STANDINS = {
    "TARANTOOL_IMAGE": f"sessions-test/tarantool:{RELEASE}",
    "PYTHON_IMAGE": "sessions-test/python:3.11",
    "APP_IMAGE": "sessions-test/app:latest",
    "TARANTOOL_APP_IMAGE": "sessions-test/tarantool-app:latest",
}


def _why_no_docker() -> str | None:
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "no docker or docker-compose command (make test installs them as root)"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "no Docker engine answers (make test starts dockerd as root)"
    return None


@pytest.fixture(scope="module")
def docker() -> None:
    reason = _why_no_docker()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the deployment tests must run in CI: {reason}")
        pytest.skip(reason)
    subprocess.run(
        ["bash", str(ROOT / "tests/docker/images.sh")],
        env={**os.environ, "TARANTOOL_2_11_BIN": BINARIES.get("2.11", "")},
        check=True,
        timeout=900,
    )


class Stack:
    """`docker-compose -f docker-compose.yml -f dc.sample.yml` with the stand-in images."""

    def __init__(self, env_file: Path, port: int, api_key: str) -> None:
        self.env_file = env_file
        self.port = port
        self.api_key = api_key

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        result = subprocess.run(
            [
                "docker-compose",
                "--env-file",
                str(self.env_file),
                "-p",
                PROJECT,
                "-f",
                "docker-compose.yml",
                "-f",
                "dc.sample.yml",
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def request(self, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}", **(headers or {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def wait_healthy(self, container: str, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while True:
            status = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.Health.Status}}", f"{PROJECT}_{container}_1"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if status == "healthy":
                return
            assert time.monotonic() < deadline, (
                f"{container} is {status!r}: {self.compose('logs', '--tail=20')}"
            )
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(docker: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env_file = tmp_path_factory.mktemp("compose") / "env"
    port = free_port()
    settings = {
        **STANDINS,
        "PUBLISH_PORT": str(port),
        "SESSIONS_TARANTOOL_PASSWORD": secrets.token_urlsafe(16),
        "SESSIONS_REPLICATION_PASSWORD": secrets.token_urlsafe(16),
        "SESSIONS_API_KEYS": secrets.token_urlsafe(16),
        "SESSIONS_VERSION": "9.8.7-test",
        "SESSIONS_REVISION": "test-revision",
    }
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    running = Stack(env_file, port, settings["SESSIONS_API_KEYS"])
    backups = ROOT / "backups"
    had_backups = backups.exists()
    everything = ("--profile", "tools", "--profile", "replica")
    # Whatever a run that was killed midway left behind goes first.
    running.compose(*everything, "down", "-v", "--remove-orphans", check=False)
    try:
        running.compose("build", "-q")
        running.compose("up", "-d")
        running.wait_healthy("tarantool")
        running.wait_healthy("sessions")
        yield running
    finally:
        running.compose(
            "--profile", "tools", "--profile", "replica", "down", "-v", "--remove-orphans", check=False
        )
        if not had_backups:
            shutil.rmtree(backups, ignore_errors=True)


def test_the_readme_examples_against_the_published_port(stack: Stack) -> None:
    status, body = stack.request("/new?user_id=1&ip=192.168.1.1")
    assert status == 200, body
    session = body["data"]
    assert (session["user_id"], session["ip"], session["extra"]) == (1, "192.168.1.1", None)
    token = session["token"]
    # The original design's PHP example: a form body on GET /get.
    status, body = stack.request(
        f"/get?token={token}",
        data=b"device=Nexus+5&os=Android",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and body["data"]["extra"] == {"device": "Nexus 5", "os": "Android"}
    assert [s["token"] for s in stack.request("/user?id=1")[1]["data"]] == [token]
    assert token in [s["token"] for s in stack.request("/ip?ip=192.168.1.1")[1]["data"]]
    assert stack.request(f"/del?token={token}")[0] == 200
    assert stack.request(f"/get?token={token}") == (
        404,
        {"status": "error", "code": "token_not_found", "message": "No live session has this token."},
    )


def test_the_published_port_needs_the_key(stack: Stack) -> None:
    status, body = stack.request("/user?id=1", headers={"Authorization": "Bearer wrong"})
    assert (status, body["code"]) == (401, "unauthorized")


def _sample_config() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose must be installed in CI (make lint installs it)")
        pytest.skip("no docker-compose")
    files = ["-f", "docker-compose.yml", "-f", "dc.sample.yml"]
    done = subprocess.run(
        ["docker-compose", "--env-file", ".env.sample", *files, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_the_sample_deployment_publishes_on_loopback_only() -> None:
    """With .env.sample as shipped, the service is published on the host's loopback only,
    needs an API key, and no replication user is made."""
    config = _sample_config()
    app = config["services"]["sessions"]
    assert app["ports"] == ["127.0.0.1:80:8080/tcp"]
    assert app["environment"]["SESSIONS_ALLOW_OPEN"] == "false"
    assert app["environment"]["SESSIONS_API_KEYS"]
    assert config["services"]["tarantool"]["environment"]["SESSIONS_REPLICATION_PASSWORD"] == ""
    # Every secret the sample ships is one the service and Tarantool refuse (test_security.py).
    sample = dict(
        line.split("=", 1) for line in (ROOT / ".env.sample").read_text().splitlines() if line[:1].isalpha()
    )
    assert {name for name, value in sample.items() if value.startswith("change-me")} == {
        "SESSIONS_TARANTOOL_PASSWORD",
        "SESSIONS_API_KEYS",
    }


def test_ready_through_the_healthchecks(stack: Stack) -> None:
    status, body = stack.request("/ready")
    assert status == 200 and body["data"]["ready"] is True


def test_the_tools_profile_backs_up_and_reports(stack: Stack) -> None:
    assert stack.request("/new?user_id=2&ip=192.0.2.2")[0] == 200
    stats = stack.compose("--profile", "tools", "run", "--rm", "tools", "stats")
    assert "sessions stored:" in stats and "read-only:          False" in stats
    assert f"(Tarantool {RELEASE}." in stats
    name = f"test-{secrets.token_hex(4)}.tar.gz"
    output = stack.compose("--profile", "tools", "run", "--rm", "tools", "backup", f"/backups/{name}")
    assert "backed up" in output
    assert (ROOT / "backups" / name).stat().st_size > 0


def _until(check: Any, what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return result


def _health(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", f"{PROJECT}_{container}_1"],
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.mark.timeout(600)
def test_the_failover_runbook_step_by_step(stack: Stack) -> None:
    """docs/operations.md's "Replica and failover", as an operator runs it: the primary lost, the replica
    promoted, the promoted one killed and brought back by the restart policy (still writable),
    the old primary back (read-only), rejoined, and the roles swapped back; every session
    acknowledged on the way is there at the end."""
    stack.env_file.write_text(
        stack.env_file.read_text() + "SESSIONS_TARANTOOL=tarantool:3301,tarantool-replica:3301\n"
    )
    stack.compose("--profile", "replica", "up", "-d")
    stack.wait_healthy("tarantool-replica")
    stack.wait_healthy("sessions")
    acknowledged: list[str] = []
    timings: dict[str, float] = {}

    def write(count: int) -> bool:
        for i in range(count):
            status, body = stack.request(f"/new?user_id=3&ip=192.0.2.{i + 1}")
            if status != 200:
                return False
            acknowledged.append(body["data"]["token"])
        return True

    tools = ("--profile", "tools", "run", "--rm", "tools")
    replica_tools = ("--profile", "replica", "run", "--rm", "replica-tools")

    def stored(which: tuple[str, ...]) -> int:
        line = next(
            line for line in stack.compose(*which, "stats").splitlines() if "sessions stored:" in line
        )
        return int(line.split(":")[1])

    assert write(5)
    total = stored(tools)
    _until(lambda: stored(replica_tools) >= total, "the replica does not follow")

    # The primary is lost: promote the replica; the service follows it.
    started = time.monotonic()
    stack.compose("stop", "tarantool")
    assert "writable primary" in stack.compose(*replica_tools, "promote")
    _until(lambda: write(1), "the service did not follow the promoted replica")
    timings["promote"] = time.monotonic() - started

    # Its process is killed: the restart policy brings it back, still the writable primary.
    started = time.monotonic()
    pid = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", f"{PROJECT}_tarantool-replica_1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["kill", "-9", pid], check=True)
    _until(lambda: write(1), "the promoted replica did not come back writable")
    stack.wait_healthy("tarantool-replica")
    timings["restart"] = time.monotonic() - started

    # The old primary comes back: read-only (fenced), unhealthy until an operator acts.
    started = time.monotonic()
    stack.compose("start", "tarantool")
    _until(lambda: "role:               fenced" in stack.compose(*tools, "stats", check=False), "not fenced")
    assert "read-only:          True" in stack.compose(*tools, "stats")
    assert _health("tarantool") != "healthy"  # its healthcheck fails: it needs an operator
    assert write(2)
    assert "is writable" in stack.compose(*tools, "promote", check=False)  # no second writer
    timings["fenced"] = time.monotonic() - started

    # It rejoins as a replica of the new primary and catches up.
    started = time.monotonic()
    assert "replica of tarantool-replica:3301" in stack.compose(*tools, "rejoin", "tarantool-replica:3301")
    stack.wait_healthy("tarantool")
    total = stored(replica_tools)
    _until(lambda: stored(tools) >= total, "the rejoined primary does not catch up")
    timings["rejoin"] = time.monotonic() - started

    # The roles are swapped back: the current primary becomes a replica, the old one primary.
    started = time.monotonic()
    assert "replica of tarantool:3301" in stack.compose(*replica_tools, "rejoin", "tarantool:3301")
    assert "writable primary" in stack.compose(*tools, "promote")
    _until(lambda: write(1), "the service did not follow the swap back")
    stack.wait_healthy("tarantool")
    stack.wait_healthy("tarantool-replica")
    timings["swap back"] = time.monotonic() - started

    for token in acknowledged:
        status, body = stack.request(f"/get?token={token}")
        assert status == 200, (token, body)
    print("failover runbook timings (s):", {step: round(took, 1) for step, took in timings.items()})


def test_both_images_share_one_version(stack: Stack) -> None:
    labels = {}
    for image in (STANDINS["APP_IMAGE"], STANDINS["TARANTOOL_APP_IMAGE"]):
        labels[image] = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    versions = {found["org.opencontainers.image.version"] for found in labels.values()}
    revisions = {found["org.opencontainers.image.revision"] for found in labels.values()}
    assert versions == {"9.8.7-test"} and revisions == {"test-revision"}
    # The running service says the revision it was built from.
    assert stack.request("/version")[1]["data"]["revision"] == "test-revision"
    user = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Config.User}}", STANDINS["TARANTOOL_APP_IMAGE"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user == "10002:10002"


@pytest.fixture
def tarantool_container(docker: None, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """One Tarantool in a container, on the project's Lua, through testcontainers."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # its reaper image cannot be pulled here
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(STANDINS["TARANTOOL_IMAGE"])
        .with_command("tarantool /opt/sessions/tarantool/init.lua")
        .with_volume_mapping(str(ROOT / "tarantool"), "/opt/sessions/tarantool", "ro")
        .with_env("SESSIONS_TT_LISTEN", "3301")
        .with_env("SESSIONS_TARANTOOL_PASSWORD", "container-pw-8d1f0c2e")
        .with_exposed_ports(3301)
    )
    container.start()
    try:
        yield container.get_container_host_ip(), int(container.get_exposed_port(3301))
    finally:
        container.stop()


async def test_storage_against_tarantool_in_a_container(
    serve: Any, tarantool_container: tuple[str, int]
) -> None:
    host, port = tarantool_container
    settings = Settings(
        tarantool=f"{host}:{port}", tarantool_password="container-pw-8d1f0c2e", startup_timeout=30
    )
    client = await serve(settings)
    session = await new_session(client, 77, json={"device": "container"})
    status, body = await call(client, "/get", params={"token": session["token"]})
    assert status == 200 and body["data"]["extra"] == {"device": "container"}
    assert [s["token"] for s in (await call(client, "/user", params={"id": "77"}))[1]["data"]] == [
        session["token"]
    ]
    assert (await call(client, "/del", params={"token": session["token"]}))[0] == 200
    assert (await call(client, "/get", params={"token": session["token"]}))[0] == 404
