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

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sessions.buckets import bucket_of_user
from sessions.config import Settings

from .conftest import BINARIES, call, new_session
from .service import free_port
from .sharded import assert_only_the_killed_set_failed

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sessionstest"
SAMPLE = ("docker-compose.yml", "dc.sample.yml")
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
    """`docker-compose -f docker-compose.yml -f dc.sample.yml` (and more `files`) with the
    stand-in images, as compose project `project`."""

    def __init__(
        self,
        env_file: Path,
        port: int,
        api_key: str,
        *,
        project: str = PROJECT,
        files: tuple[str, ...] = SAMPLE,
    ) -> None:
        self.env_file = env_file
        self.port = port
        self.api_key = api_key
        self.project = project
        self.files = files

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        result = subprocess.run(
            [
                "docker-compose",
                "--env-file",
                str(self.env_file),
                "-p",
                self.project,
                *(option for name in self.files for option in ("-f", name)),
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
                ["docker", "inspect", "--format", "{{.State.Health.Status}}", self.container(container)],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if status == "healthy":
                return
            assert time.monotonic() < deadline, (
                f"{container} is {status!r}: {self.compose('logs', '--tail=20')}"
            )
            time.sleep(1)


def _env_file(path: Path, **more: str) -> dict[str, str]:
    """The .env of a test stack, written to `path`: stand-in images, a free port, fresh secrets."""
    settings = {
        **STANDINS,
        "PUBLISH_PORT": str(free_port()),
        "SESSIONS_TARANTOOL_PASSWORD": secrets.token_urlsafe(16),
        "SESSIONS_REPLICATION_PASSWORD": secrets.token_urlsafe(16),
        "SESSIONS_API_KEYS": secrets.token_urlsafe(16),
        "SESSIONS_VERSION": "9.8.7-test",
        "SESSIONS_REVISION": "test-revision",
        **more,
    }
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    return settings


@pytest.fixture(scope="module")
def stack(docker: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env_file = tmp_path_factory.mktemp("compose") / "env"
    settings = _env_file(env_file)
    running = Stack(env_file, int(settings["PUBLISH_PORT"]), settings["SESSIONS_API_KEYS"])
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


TOOLS = ("--profile", "tools", "run", "--rm", "tools")
REPLICA_TOOLS = ("--profile", "replica", "run", "--rm", "replica-tools")


def _stored(stack: Stack, tools: tuple[str, ...]) -> int:
    """How many sessions the instance `tools` (TOOLS or REPLICA_TOOLS) reaches stores."""
    line = next(line for line in stack.compose(*tools, "stats").splitlines() if "sessions stored:" in line)
    return int(line.split(":")[1])


@pytest.mark.timeout(600)
def test_the_failover_runbook_step_by_step(stack: Stack) -> None:
    """docs/operations.md's "Replica and failover", as an operator runs it: the primary lost, the replica
    promoted, the promoted one killed and brought back by the restart policy (still writable),
    the old primary back by `up -d` (a replica of the promoted one by itself), and the roles
    swapped back; every session acknowledged on the way is there at the end."""
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

    tools, replica_tools = TOOLS, REPLICA_TOOLS

    def stored(which: tuple[str, ...]) -> int:
        return _stored(stack, which)

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

    # The old primary comes back by `up -d` (which waits for nothing it cannot have): it
    # follows the promoted one by itself, healthy, read-only, and catches up.
    started = time.monotonic()
    stack.compose("--profile", "replica", "up", "-d")
    _until(lambda: "role:               replica" in stack.compose(*tools, "stats", check=False), "no replica")
    assert "read-only:          True" in stack.compose(*tools, "stats")
    assert write(2)
    assert "is writable" in stack.compose(*tools, "promote", check=False)  # no second writer
    stack.wait_healthy("tarantool")
    total = stored(replica_tools)
    _until(lambda: stored(tools) >= total, "the old primary does not catch up")
    timings["old primary back"] = time.monotonic() - started

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


@pytest.mark.timeout(600)
def test_the_runbook_with_a_replica_cut_off_before_the_primary_is_lost(stack: Stack) -> None:
    """Issue 30's lagging path in Docker: the replica cut off the compose network, sessions
    acknowledged by the primary meanwhile (the same users and addresses as later), the primary
    stopped, the replica reconnected and promoted: the service writes again without a restart,
    the old primary comes back as a replica by itself, and after the swap back every session
    acknowledged before the cut, during it and after the promotion answers `get`, on two
    instances that hold the same count."""
    if "SESSIONS_TARANTOOL=" not in stack.env_file.read_text():
        stack.env_file.write_text(
            stack.env_file.read_text() + "SESSIONS_TARANTOOL=tarantool:3301,tarantool-replica:3301\n"
        )
    stack.compose("--profile", "replica", "up", "-d")
    stack.wait_healthy("tarantool-replica")
    stack.wait_healthy("tarantool")
    stack.wait_healthy("sessions")
    tools, replica_tools = TOOLS, REPLICA_TOOLS

    def stored(which: tuple[str, ...]) -> int:
        return _stored(stack, which)

    def write(count: int, into: list[str]) -> bool:
        for i in range(count):
            # Few users and addresses, shared by every phase: their (user, seq) and (ip, seq)
            # keys would meet if the two writers numbered alike.
            status, body = stack.request(f"/new?user_id={40 + i % 3}&ip=192.0.2.{200 + i % 2}")
            if status != 200:
                return False
            into.append(body["data"]["token"])
        return True

    before: list[str] = []
    cut: list[str] = []
    after: list[str] = []
    assert write(6, before)
    total = stored(tools)
    _until(lambda: stored(replica_tools) >= total, "the replica does not follow")

    network = f"{stack.project}_default"
    replica = stack.container("tarantool-replica")
    subprocess.run(["docker", "network", "disconnect", network, replica], check=True)
    assert write(9, cut)
    stack.compose("stop", "tarantool")
    subprocess.run(
        ["docker", "network", "connect", "--alias", "tarantool-replica", network, replica], check=True
    )
    started = time.monotonic()
    assert "writable primary" in stack.compose(*replica_tools, "promote")
    _until(lambda: write(1, after), "the service did not follow the promoted replica", within=30)
    promoted = time.monotonic() - started
    assert write(8, after)

    # The old primary is started again: it follows the promoted one by itself.
    stack.compose("--profile", "replica", "up", "-d")
    _until(lambda: "role:               replica" in stack.compose(*tools, "stats", check=False), "no replica")
    stack.wait_healthy("tarantool")
    # The roles swapped back as the runbook does.
    assert "replica of tarantool:3301" in stack.compose(*replica_tools, "rejoin", "tarantool:3301")
    assert "writable primary" in stack.compose(*tools, "promote")
    _until(lambda: write(1, after), "the service did not follow the swap back", within=30)
    stack.wait_healthy("tarantool-replica")
    _until(lambda: stored(tools) == stored(replica_tools), "the two instances hold different counts")

    lost = {
        phase: sum(stack.request(f"/get?token={token}")[0] != 200 for token in tokens)
        for phase, tokens in (("before", before), ("cut", cut), ("after", after))
    }
    print(f"lagging path: writes {promoted:.1f} s after promote; not found at the end: {lost}")
    assert lost == {"before": 0, "cut": 0, "after": 0}


# The three instances of dc.ha.yml, and the Lua the HA test runs inside one of their
# containers: CODE (one line) on its admin console, the answer (YAML) on standard output.
HA_FILES = (*SAMPLE, "dc.ha.yml")
ELECTED = ("tarantool", "tarantool-2", "tarantool-3")
CONSOLE_LUA = """
local s = require('socket').tcp_connect('unix/', '/var/lib/tarantool/tarantool.control')
if s == nil then os.exit(1) end
s:write(os.getenv('CODE') .. '\\n')
local out = ''
while not out:find('\\n%.%.%.\\n$') do
    local chunk = s:read({delimiter = '\\n...\\n'}, 10)
    if chunk == nil or chunk == '' then os.exit(1) end
    out = out .. chunk
end
io.stdout:write(out)
os.exit(0)
"""
STATE_LUA = (
    "local e = box.info.election return {ro = box.info.ro, state = e.state, term = e.term, "
    "leader = e.leader, n = box.space.sessions:len()}"
)
TOKENS_LUA = "local t = {} for _, s in box.space.sessions:pairs() do t[#t + 1] = s.token:str() end return t"


def _console(container: str, code: str) -> Any:
    """`code` run on the admin console of the Tarantool in `container`; None while it does
    not answer."""
    done = subprocess.run(
        ["docker", "exec", "-e", f"CODE={code}", container, "tarantool", "-e", CONSOLE_LUA],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0 or "---\n" not in done.stdout:
        return None
    values = yaml.safe_load(done.stdout[done.stdout.rindex("---\n") :])
    return values[0] if values else None


def _inspect(container: str, template: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", template, container], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def ha_stack(docker: None, tmp_path: Path) -> Iterator[Stack]:
    """`docker-compose -f docker-compose.yml -f dc.sample.yml -f dc.ha.yml up -d`, as a
    project of its own beside the module's stack, all healthy; `down -v` at the end."""
    # Images of its own: the module's stack, or another checkout's on the same engine,
    # rebuilds the `latest` ones whenever it starts.
    images = {"APP_IMAGE": "sessions-test/app:ha", "TARANTOOL_APP_IMAGE": "sessions-test/tarantool-app:ha"}
    settings = _env_file(tmp_path / "env", **images)
    running = Stack(
        tmp_path / "env",
        int(settings["PUBLISH_PORT"]),
        settings["SESSIONS_API_KEYS"],
        project=f"{PROJECT}ha",
        files=HA_FILES,
    )
    running.compose("--profile", "tools", "down", "-v", "--remove-orphans", check=False)
    try:
        running.compose("build", "-q")
        running.compose("up", "-d")
        for service in (*ELECTED, "sessions"):
            running.wait_healthy(service)
        yield running
    finally:
        running.compose("--profile", "tools", "down", "-v", "--remove-orphans", check=False)


@pytest.mark.timeout(600)
def test_ha_the_elected_stack_survives_its_leader_killed_three_times(ha_stack: Stack) -> None:
    """dc.ha.yml as an operator meets a crash: while a writer of `new` and a reader of `get`
    run through the published port, the leader's Tarantool is killed with SIGKILL from the
    host, three times; each time the others elect a leader and writes resume within seconds,
    the restart policy brings the killed one back, and it rejoins as a follower by itself.
    Every `get` is answered, and every acknowledged session is on all three at the end."""
    stack = ha_stack
    acknowledged: list[str] = []
    # (sent, answered) of each acknowledged write.
    answered: list[tuple[float, float]] = []
    gets: dict[int | str, int] = {}
    failures: dict[str, int] = {}
    stop = threading.Event()

    def ask(path: str) -> tuple[int, Any]:
        try:
            status, body = stack.request(path)
        except (OSError, ValueError) as error:
            return 0, {"code": type(error).__name__}
        return status, body

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            sent = time.monotonic()
            status, body = ask(f"/new?user_id={2600 + i % 50}&ip=192.0.2.{i % 250 + 1}")
            if status == 200:
                acknowledged.append(body["data"]["token"])
                answered.append((sent, time.monotonic()))
            else:
                failures[body["code"]] = failures.get(body["code"], 0) + 1
                time.sleep(0.05)

    def reader() -> None:
        while not stop.is_set():
            if acknowledged:
                status, body = ask(f"/get?token={acknowledged[len(acknowledged) // 2]}")
                key = status if status == 200 else f"{status} {body['code']}"
                gets[key] = gets.get(key, 0) + 1
            time.sleep(0.02)

    def leader() -> str | None:
        """The elected leader, if exactly one instance is writable and it is that."""
        states = {name: _console(stack.container(name), STATE_LUA) or {} for name in ELECTED}
        writable = [name for name, state in states.items() if state.get("ro") is False]
        if len(writable) != 1 or states[writable[0]].get("state") != "leader":
            return None
        return writable[0]

    threads = [threading.Thread(target=job, daemon=True) for job in (writer, reader)]
    for thread in threads:
        thread.start()
    killed: list[str] = []
    resumed: list[float] = []
    try:
        for _ in range(3):
            name = _until(leader, "no single leader")
            container = stack.container(name)
            before = len(acknowledged)
            _until(lambda before=before: len(acknowledged) > before + 20, f"writes do not go on: {failures}")
            restarts = int(_inspect(container, "{{.RestartCount}}"))
            # The process itself, as a crash or the kernel's OOM killer would: unlike
            # `docker kill`, the restart policy brings the container back.
            os.kill(int(_inspect(container, "{{.State.Pid}}")), signal.SIGKILL)
            killed_at = time.monotonic()
            killed.append(name)

            def resumed_after(killed_at: float = killed_at) -> float | None:
                # The first write sent after the kill that was acknowledged.
                return next((done - killed_at for sent, done in answered if sent > killed_at), None)

            resumed.append(_until(resumed_after, f"writes did not resume: {failures}"))
            _until(
                lambda container=container, restarts=restarts: (
                    int(_inspect(container, "{{.RestartCount}}")) > restarts
                ),
                f"{name} was not restarted",
            )
            stack.wait_healthy(name)
            _until(
                # Back in the cluster by itself: a follower, or (an election it won since) the
                # leader; never a candidate stuck alone.
                lambda container=container: (
                    (_console(container, STATE_LUA) or {}).get("state") in ("follower", "leader")
                ),
                f"{name} did not rejoin the cluster",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    print(
        f"\nHA stack: killed {killed}; writes resumed after {[round(took, 2) for took in resumed]} s; "
        f"{len(acknowledged)} acknowledged; failed writes {failures}; gets {gets}"
    )
    assert len(set(killed)) >= 2, "the same instance was leader every time"
    assert max(resumed) < 10, resumed
    assert set(gets) == {200}, gets
    tokens = set(acknowledged)
    for name in ELECTED:
        container = stack.container(name)
        _until(
            lambda container=container: (_console(container, STATE_LUA) or {}).get("n", 0) >= len(tokens),
            f"{name} did not catch up",
        )
        missing = tokens - set(_console(container, TOKENS_LUA))
        assert not missing, f"{len(missing)} acknowledged sessions missing on {name}"
    for token in acknowledged[:: max(1, len(acknowledged) // 100)]:
        assert ask(f"/get?token={token}")[0] == 200, token
    # What an operator sees: each instance healthy, and its place in the election.
    for name in ELECTED:
        stack.wait_healthy(name)
    assert "election:           " in stack.compose("--profile", "tools", "run", "--rm", "tools-2", "stats")


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


VSHARD_DIR = ROOT.parent / "shared" / "vendor" / "vshard-0.1.26"
SHARDED_FILES = (*SAMPLE, "dc.sharded.yml")
# dc.sharded.yml's replica sets: each one's first primary, then its first replica.
SETS = {1: ("tarantool", "tarantool-b"), 2: ("tarantool-2", "tarantool-2b")}
STORAGES = tuple(name for pair in SETS.values() for name in pair)
# Its uuid in dc.sharded.json.
INSTANCE_UUIDS = {
    "tarantool": "5e551035-0001-4000-8000-000000000001",
    "tarantool-b": "5e551035-0001-4000-8000-000000000002",
    "tarantool-2": "5e551035-0002-4000-8000-000000000001",
    "tarantool-2b": "5e551035-0002-4000-8000-000000000002",
}
# The project and image tags of this checkout's sharded stack: another checkout's run on the
# same engine would otherwise take its containers down (`down -v` first) and retag its images.
CHECKOUT = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
ACTIVE_BUCKETS_LUA = (
    "local t = {} for _, b in box.space._bucket:pairs() do "
    "if b.status == 'active' then t[#t + 1] = b.id end end return t"
)
ROLE_LUA = "return {ro = box.info.ro, role = sessions.info().role}"


@pytest.fixture(scope="module")
def sharded_stack(docker: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`docker-compose -f docker-compose.yml -f dc.sample.yml -f dc.sharded.yml up -d` on the
    2.11 stand-in with the vendored vshard, as a project of its own, every storage, router
    and the service healthy; `down -v` at the end."""
    if RELEASE != "2.11" or not (VSHARD_DIR / "vshard" / "init.lua").is_file():
        pytest.skip(f"the sharded stack needs the 2.11 stand-in and {VSHARD_DIR}")
    subprocess.run(
        ["bash", str(ROOT / "tests/docker/images.sh")],
        env={**os.environ, "TARANTOOL_2_11_BIN": BINARIES["2.11"], "VSHARD_DIR": str(VSHARD_DIR)},
        check=True,
        timeout=900,
    )
    images = {
        "TARANTOOL_IMAGE": "sessions-test/tarantool-vshard:2.11",
        "APP_IMAGE": f"sessions-test/app:sharded-{CHECKOUT}",
        "TARANTOOL_APP_IMAGE": f"sessions-test/tarantool-app:sharded-{CHECKOUT}",
        "SESSIONS_VSHARD_PASSWORD": secrets.token_urlsafe(16),
    }
    env_file = tmp_path_factory.mktemp("sharded") / "env"
    settings = _env_file(env_file, **images)
    running = Stack(
        env_file,
        int(settings["PUBLISH_PORT"]),
        settings["SESSIONS_API_KEYS"],
        project=f"{PROJECT}shard{CHECKOUT}",
        files=SHARDED_FILES,
    )
    running.compose("--profile", "tools", "down", "-v", "--remove-orphans", check=False)
    try:
        running.compose("build", "-q")
        running.compose("up", "-d")
        for service in (*STORAGES, "router", "router-2", "sessions"):
            running.wait_healthy(service)
        yield running
    finally:
        running.compose("--profile", "tools", "down", "-v", "--remove-orphans", check=False)


def _count(stack: Stack, storage: str) -> int:
    """The sessions the storage `storage` holds (-1 while its console does not answer)."""
    found = _console(stack.container(storage), "return box.space.sessions:len()")
    return -1 if found is None else int(found)


@pytest.mark.timeout(900)
def test_sharded_stack_spreads_users_over_both_replica_sets(sharded_stack: Stack) -> None:
    """dc.sharded.yml: sessions of 200 users opened through the published port land on both
    replica sets' masters, reach each set's replica (healthy while read-only), and each
    answers `get`."""
    stack = sharded_stack
    tokens = [
        _until(
            lambda user=user: (lambda answer: answer[1]["data"]["token"] if answer[0] == 200 else None)(
                stack.request(f"/new?user_id={user}&ip=192.0.2.1")
            ),
            f"no session for user {user}",
        )
        for user in range(1, 201)
    ]
    masters = {first: _count(stack, first) for first, _ in SETS.values()}
    print(f"\nsharded stack: sessions per replica set's master {masters}")
    assert sum(masters.values()) == 200 and min(masters.values()) > 0, masters
    for first, second in SETS.values():
        _until(lambda first=first, second=second: _count(stack, second) == masters[first], f"{second} lags")
        assert _console(stack.container(first), ROLE_LUA) == {"ro": False, "role": "primary"}
        assert _console(stack.container(second), ROLE_LUA) == {"ro": True, "role": "replica"}
    for token in tokens:
        assert stack.request(f"/get?token={token}")[0] == 200, token


class _SetTraffic:
    """A writer of `new` and a reader of `get` for users of one replica set, through the
    published port; every call's (sent, answered, kind, outcome)."""

    def __init__(self, stack: Stack, users: list[int]) -> None:
        self.stack = stack
        self.users = users
        self.acknowledged: list[tuple[float, str]] = []
        self.seen: list[tuple[float, float, str, str]] = []
        self.stopping = threading.Event()
        # Set 1's writer stops writing while the replica is caught up before the kill.
        self.hold = threading.Event()
        self.held = threading.Event()
        self.threads = [threading.Thread(target=job, daemon=True) for job in (self.write, self.read)]

    def _call(self, kind: str, path: str) -> tuple[int, Any]:
        sent = time.monotonic()
        try:
            status, body = self.stack.request(path)
        except (OSError, ValueError) as error:
            status, body = 0, {"code": type(error).__name__}
        outcome = "200" if status == 200 else f"{status} {body.get('code')}"
        self.seen.append((sent, time.monotonic(), kind, outcome))
        return status, body

    def write(self) -> None:
        i = 0
        while not self.stopping.is_set():
            if self.hold.is_set():
                self.held.set()
                time.sleep(0.05)  # waiting for the test to let it go on
                continue
            self.held.clear()
            i += 1
            user = self.users[i % len(self.users)]
            status, body = self._call("new", f"/new?user_id={user}&ip=192.0.2.{i % 250 + 1}")
            if status == 200:
                self.acknowledged.append((time.monotonic(), body["data"]["token"]))
            else:
                time.sleep(0.05)  # a failing set answers at once: no busy loop

    def read(self) -> None:
        i = 0
        while not self.stopping.is_set():
            if self.acknowledged:
                i += 1
                self._call("get", f"/get?token={self.acknowledged[i % len(self.acknowledged)][1]}")
            time.sleep(0.01)  # a reader beside the writer, not a load test

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """The calls sent at or after `since` and answered before `until`, by kind and outcome."""
        counted: dict[str, int] = {}
        for sent, answered, kind, outcome in list(self.seen):
            if sent >= since and answered < until:
                counted[f"{kind} {outcome}"] = counted.get(f"{kind} {outcome}", 0) + 1
        return counted


@pytest.mark.timeout(900)
def test_sharded_stack_fails_over_a_set_by_promote_and_backs_up_and_restores_the_cluster(
    sharded_stack: Stack,
) -> None:
    """docs/operations.md's "Deploying it with compose": while a writer and a reader run for
    users of each replica set through the published port, set 1's master container is killed
    (`docker kill -s KILL`, which the restart policy leaves down). Set 2's users are served
    throughout; set 1's get 503 storage_unavailable (never 404, never 500) until `sessions
    promote` through `tools-b`, then are served again; every session acknowledged before the
    kill reads 200. The old master, started again by `up -d`, follows the promoted one
    read-only, healthy; `cluster-tools` backs up the cluster from each set's writable
    instance, and restores it as the docs say (the sets' other volumes emptied and seeded
    again). Set 1's writer pauses until its replica holds every session before the kill:
    what asynchronous replication may lose in a master's last moments is
    test_sharded_cluster.py's subject, not this one's."""
    stack = sharded_stack
    master, replica = SETS[1]
    held = set(_console(stack.container(master), ACTIVE_BUCKETS_LUA))
    users: dict[int, list[int]] = {1: [], 2: []}
    user = 70_000
    while min(len(found) for found in users.values()) < 20:
        user += 1
        users[1 if bucket_of_user(user) in held else 2].append(user)
    traffic = {number: _SetTraffic(stack, users[number][:20]) for number in (1, 2)}
    for t in traffic.values():
        for thread in t.threads:
            thread.start()
    try:
        _until(lambda: all(len(t.acknowledged) >= 30 for t in traffic.values()), "no traffic")
        traffic[1].hold.set()
        _until(traffic[1].held.is_set, "set 1's writer does not pause")
        _until(lambda: _count(stack, replica) == _count(stack, master), f"{replica} lags")
        # `docker kill` returns once the container is gone, some time after the signal: calls
        # answered before it is sent are before the kill, calls sent after it returns after.
        killing = time.monotonic()
        subprocess.run(
            ["docker", "kill", "-s", "KILL", stack.container(master)], check=True, capture_output=True
        )
        killed = time.monotonic()
        traffic[1].hold.clear()
        _until(
            lambda: (
                traffic[1].outcomes(killed).get("new 503 storage_unavailable", 0) >= 10
                and traffic[1].outcomes(killed).get("get 503 storage_unavailable", 0) >= 10
                and traffic[2].outcomes(killed).get("new 200", 0) >= 50
            ),
            f"the outage: {traffic[1].outcomes(killed)}",
        )
        # Ready all along, saying which part is lost (a failing probe on every service
        # instance would make one set's outage everybody's).
        status, body = stack.request("/ready")
        assert status == 200 and body["data"]["sets_lost"] == 1, body
        promoting = time.monotonic()
        promoted = stack.compose("--profile", "tools", "run", "--rm", "tools-b", "promote")
        done = time.monotonic()
        assert "is the writable primary now" in promoted, promoted
        _until(
            lambda: (
                traffic[1].outcomes(done).get("new 200", 0) >= 20
                and traffic[1].outcomes(done).get("get 200", 0) >= 20
            ),
            f"set 1 is not served after the promote: {traffic[1].outcomes(done)}",
        )
    finally:
        for t in traffic.values():
            t.stopping.set()
        for t in traffic.values():
            for thread in t.threads:
                thread.join(timeout=30)
    first_failed = min(end for sent, end, _, outcome in traffic[1].seen if outcome != "200")
    served_again = min(end for sent, end, _, outcome in traffic[1].seen if sent >= done and outcome == "200")
    counted = {
        "set 2": traffic[2].outcomes(),
        "set 1 before the kill": traffic[1].outcomes(until=killing),
        "set 1 first failed after the kill was sent, s": round(first_failed - killing, 2),
        "docker kill took, s": round(killed - killing, 2),
        "set 1 from the kill to the promote": traffic[1].outcomes(killed, promoting),
        "set 1 after the promote": traffic[1].outcomes(done),
        "set 1 first served after the promote returned, s": round(served_again - done, 2),
        "the promote took, s": round(done - promoting, 2),
    }
    print(f"\nsharded failover in compose: {counted}")
    assert_only_the_killed_set_failed(counted)
    assert {outcome for _, _, _, outcome in traffic[1].seen} <= {"200", "503 storage_unavailable"}, counted
    before = [token for t in traffic.values() for at, token in t.acknowledged if at < killing]
    unread = [token for token in before if stack.request(f"/get?token={token}")[0] != 200]
    print(f"sessions acknowledged before the kill: {len(before)}, not read 200 after: {len(unread)}")
    assert not unread, unread[:5]
    status, body = stack.request("/ready")
    assert status == 200 and body["data"]["sets_lost"] == 0, body

    # The old master back (`up -d`): it follows the promoted one by itself, healthy.
    stack.compose("up", "-d")
    stack.wait_healthy(master)
    stack.wait_healthy(replica)
    assert _console(stack.container(master), ROLE_LUA) == {"ro": True, "role": "replica"}
    assert _console(stack.container(replica), ROLE_LUA) == {"ro": False, "role": "primary"}

    # Every storage's volume given: each set's writable instance is backed up.
    name = f"cluster-{secrets.token_hex(4)}"
    backups = ROOT / "backups"
    had_backups = backups.exists()
    try:
        output = stack.compose(
            "--profile",
            "tools",
            "run",
            "--rm",
            "cluster-tools",
            "cluster-backup",
            f"/backups/{name}",
            *(f"/data/{storage}" for storage in STORAGES),
        )
        manifest = json.loads((backups / name / "cluster-manifest.json").read_text())
        sets = {entry["number"]: entry for entry in manifest["replicasets"].values()}
        print(
            "cluster backup:",
            [line for line in output.splitlines() if "replica set" in line or "backed up" in line],
        )
        assert set(sets) == {1, 2}, manifest
        assert sets[1]["instance"] == INSTANCE_UUIDS[replica], manifest
        assert sets[2]["instance"] == INSTANCE_UUIDS["tarantool-2"], manifest
        for entry in sets.values():
            assert (backups / name / entry["archive"]).stat().st_size == entry["size"] > 0
        assert manifest["sessions"] == _count(stack, replica) + _count(stack, "tarantool-2"), manifest

        # docs/operations.md's restore in compose: every container stopped, each set restored
        # into the volume of the instance its archive came from, the other instance's volume
        # emptied; the restored ones started first, then the rest, which join them anew.
        acknowledged = [token for t in traffic.values() for _, token in t.acknowledged]
        later = [
            stack.request(f"/new?user_id={users[n][0]}&ip=192.0.2.9")[1]["data"]["token"] for n in (1, 2)
        ]
        stack.compose("stop")
        restored = {1: replica, 2: "tarantool-2"}
        for number, storage in restored.items():
            output = stack.compose(
                *("--profile", "tools", "run", "--rm", "-e", f"SESSIONS_DATA_DIR=/data/{storage}"),
                *("cluster-tools", "cluster-restore", f"/backups/{name}", str(number)),
            )
            print(f"set {number}: {[line for line in output.splitlines() if line.startswith('restored')]}")
        emptied = [storage for pair in SETS.values() for storage in pair if storage not in restored.values()]
        stack.compose("rm", "-f", *emptied)
        for storage in emptied:
            volume = "tarantool-data" if storage == "tarantool" else f"{storage}-data"
            subprocess.run(
                ["docker", "volume", "rm", f"{stack.project}_{volume}"], check=True, capture_output=True
            )
        stack.compose("up", "-d", "--no-deps", *restored.values())
        for storage in restored.values():
            stack.wait_healthy(storage)
        stack.compose("up", "-d")
        for service in (*STORAGES, "router", "router-2", "sessions"):
            stack.wait_healthy(service)
        for storage in restored.values():
            assert _console(stack.container(storage), ROLE_LUA) == {"ro": False, "role": "primary"}
        for storage in emptied:
            assert _console(stack.container(storage), ROLE_LUA) == {"ro": True, "role": "replica"}
        assert {s: _count(stack, s) for s in restored.values()} == {
            s: sets[n]["sessions"] for n, s in restored.items()
        }
        for number, (first, second) in SETS.items():
            _until(
                lambda first=first, second=second: _count(stack, first) == _count(stack, second),
                f"set {number}'s emptied instance does not hold what the restored one has",
            )
        got = {token: stack.request(f"/get?token={token}")[0] for token in [*acknowledged, *later]}
        assert [got[token] for token in later] == [404, 404], got
        assert {got[token] for token in acknowledged} == {200}, got
    finally:
        shutil.rmtree(backups / name, ignore_errors=True)
        if not had_backups:
            shutil.rmtree(backups, ignore_errors=True)
