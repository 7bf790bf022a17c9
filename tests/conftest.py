"""Fixtures: real Tarantool processes on the project's Lua, and the app on top of them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import BaseTestServer, TestClient
from hypothesis import settings as hypothesis_settings

from sessions.config import Settings
from sessions.console import Console
from sessions.embedded import EmbeddedTarantool
from sessions.server import ServiceRunner

PASSWORD = "test-password-8d1f0c2e"
ROOT = Path(__file__).resolve().parent.parent
# The suite tests this checkout's Python client, whichever one the virtualenv has installed.
sys.path.insert(0, str(ROOT / "clients" / "python"))

# The Tarantool releases the suite runs on: production's (the official image's 2.11) first,
# then Debian's 2.6, which `make run` installs. Their binaries are SESSIONS_TEST_TARANTOOL_BINS
# (comma-separated) if set, else `tarantool` on PATH and the 2.11 built for this project's
# machines, in ../shared/vendor beside the checkout (CI has it; a user's machine may not).
RELEASES = ("2.11", "2.6")
VENDORED_2_11 = ROOT.parent / "shared" / "vendor" / "tarantool-2.11" / "bin" / "tarantool"


def _release_of(binary: str) -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"Tarantool (\d+\.\d+)\.", done.stdout)
    return found.group(1) if found else None


def _binaries() -> dict[str, str]:
    setting = os.environ.get("SESSIONS_TEST_TARANTOOL_BINS", "")
    candidates = [c.strip() for c in setting.split(",") if c.strip()] or ["tarantool", str(VENDORED_2_11)]
    found: dict[str, str] = {}
    for candidate in candidates:
        release = _release_of(candidate)
        path = shutil.which(candidate)
        if release in RELEASES and release not in found and path is not None:
            found[release] = path
    return found


BINARIES = _binaries()
# Where a test runs on one release only: production's if it is here, else the other.
DEFAULT_RELEASE = next((release for release in RELEASES if release in BINARIES), None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "each_release: run once on each Tarantool release of RELEASES (tests/conftest.py)"
    )


def pytest_report_header() -> list[str]:
    found = ", ".join(f"{release} at {BINARIES[release]}" for release in RELEASES if release in BINARIES)
    return [
        f"tarantool: {found or 'none found'}; tests without a release in their id run on "
        f"{DEFAULT_RELEASE or 'the tarantool on PATH'}"
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked each_release runs once per release, its id saying which; a release
    missing here is a skip with the reason, never a test left out."""
    marked = metafunc.definition.get_closest_marker("each_release") is not None
    if marked and "tarantool_release" in metafunc.fixturenames:
        metafunc.parametrize("tarantool_release", RELEASES, ids=RELEASES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def tarantool_release(request: pytest.FixtureRequest) -> str | None:
    """The Tarantool release this test runs on (None: none was found, PATH's is tried)."""
    release: str | None = getattr(request, "param", DEFAULT_RELEASE)
    if release is not None and release not in BINARIES:
        reason = f"no Tarantool {release}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI runs every release (see docs/testing.md)")
        pytest.skip(reason)
    return release


@pytest.fixture(scope="session")
def tarantool_bin(tarantool_release: str | None) -> str:
    """The binary of this test's release."""
    return BINARIES[tarantool_release] if tarantool_release is not None else "tarantool"


@pytest.fixture(autouse=True)
def _tarantool_of_the_release(tarantool_bin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Tarantool a test starts is of its release: the embedded one through the
    service's own setting (children inherit it), the test's own through make_instance."""
    monkeypatch.setenv("SESSIONS_TARANTOOL_BIN", tarantool_bin)


# Property-based tests draw the same examples on every run of `make test` (derandomized,
# no example database to replay from), so a green run means the same thing each time.
# `make fuzz` explores with a fresh seed, which it prints, and a bigger budget.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("FUZZ_PROFILE", "repeatable"))
# Requests the random-request tests send (the schemathesis test sends a sixteenth per operation).
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))


class Served(BaseTestServer):
    """The service as `make run` serves it (low-level server, router, storage lifecycle), on
    a free port, for aiohttp's TestClient."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> ServiceRunner:
        # aiohttp's test server cancels a handler whose client left; the service does not.
        kwargs.pop("handler_cancellation", None)
        return ServiceRunner(self.settings, **kwargs)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    """A client of the service served on `settings`, closed however the block ends, even if
    the service fails to start (aiohttp's own fixture then leaks its client session)."""
    client = TestClient(Served(settings))
    try:
        await client.start_server()
        yield client
    finally:
        await client.close()


Serve = Callable[[Settings], Awaitable[TestClient]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the service on the given settings; each is stopped when the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(settings: Settings) -> TestClient:
            return await stack.enter_async_context(serving(settings))

        yield start


def make_instance(
    data_dir: Path,
    idle_ttl: int = 180 * 86400,
    memory: int = 256 * 2**20,
    environment: dict[str, str] | None = None,
    *,
    binary: str | None = None,
) -> EmbeddedTarantool:
    """A Tarantool on the project's Lua; its binary the test's release unless given."""
    return EmbeddedTarantool(
        data_dir=data_dir,
        scripts_dir=ROOT / "tarantool",
        binary=binary or os.environ.get("SESSIONS_TARANTOOL_BIN", "tarantool"),
        user="sessions",
        password=PASSWORD,
        memory=memory,
        wal_mode="write",
        idle_ttl=idle_ttl,
        startup_timeout=30,
        shutdown_timeout=10,
        environment=environment,
    )


def settings_for(instance: EmbeddedTarantool, **overrides: Any) -> Settings:
    overrides.setdefault("tarantool", f"unix/:{instance.socket_path}")
    return Settings(tarantool_password=PASSWORD, **overrides)


@pytest.fixture(scope="session")
def tarantool(tmp_path_factory: pytest.TempPathFactory, tarantool_bin: str) -> Iterator[EmbeddedTarantool]:
    """One Tarantool per release for the whole run; tests keep apart by using their own users
    and IPs."""
    instance = make_instance(tmp_path_factory.mktemp("tarantool"), binary=tarantool_bin)
    asyncio.run(instance.start())
    yield instance
    asyncio.run(instance.stop())


@pytest.fixture
async def fresh_tarantool(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[EmbeddedTarantool]:
    """A Tarantool of this test's own, for tests that change its TTL or stop it."""
    instance = make_instance(tmp_path / "tarantool", binary=tarantool_bin)
    await instance.start()
    yield instance
    await instance.stop()


@contextlib.asynccontextmanager
async def frozen_tarantool(
    data_dir: Path, *, idle_ttl: int, at: int
) -> AsyncIterator[tuple[EmbeddedTarantool, Console]]:
    """A Tarantool of its own whose clock stands still at `at` until the test moves it."""
    instance = make_instance(data_dir, idle_ttl=idle_ttl)
    await instance.start()
    admin = Console(instance.console_path)
    try:
        admin.eval(f"require('sessions.clock').freeze({at})")
        yield instance, admin
    finally:
        admin.close()
        await instance.stop()


@pytest.fixture(scope="session")
def console(tarantool: EmbeddedTarantool) -> Iterator[Console]:
    admin = Console(tarantool.console_path)
    yield admin
    admin.close()


@pytest.fixture
def settings(tarantool: EmbeddedTarantool) -> Settings:
    return settings_for(tarantool)


@pytest.fixture
async def client(serve: Serve, settings: Settings) -> TestClient:
    return await serve(settings)


_ids = itertools.count(10**12, 10)  # id + 1 .. id + 9 are free too


@pytest.fixture
def user_id() -> int:
    """A user id no other test uses."""
    return next(_ids)


@pytest.fixture
def ip() -> str:
    """An IPv6 address (documentation range) no other test uses, in canonical form."""
    n = next(_ids) % 2**32
    return str(ipaddress.ip_address(f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::1"))


async def call(client: TestClient, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
    """Status and decoded body of one API call; every answer must be a JSON envelope."""
    response = await client.request(method, path, **kwargs)
    assert response.content_type == "application/json", await response.text()
    body = await response.json()
    if response.status == 200:
        assert body["status"] == "success"
        assert set(body) == {"status", "data"}
    else:
        assert body["status"] == "error"
        assert set(body) == {"status", "code", "message"}
        assert isinstance(body["message"], str) and body["message"]
    return response.status, body


async def new_session(
    client: TestClient, user_id: int, ip: str = "192.0.2.1", **kwargs: Any
) -> dict[str, Any]:
    status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": ip}, **kwargs)
    assert status == 200, body
    return body["data"]


def set_activity(console: Console, token: str, activity: int) -> None:
    """Make a session look last used at `activity`, as if time had passed. Its stored expiry
    becomes that second too: the earliest it can be, which the purge re-checks under the
    service's rules before it ends anything."""
    console.eval(
        f"box.space.sessions:update(require('uuid').fromstr('{token}'), "
        f"{{{{'=', 'activity', {activity}}}, {{'=', 'expires', {activity}}}}})"
    )


def lua_bulk_insert(count: int, session: str, *, prelude: str = "") -> str:
    """Lua inserting `count` tuples made by the Lua expression `session` (see lua_session),
    a thousand to a transaction: one WAL write each, not one per session. On a storage of the
    sharded mode, only those of the buckets it holds: run on every storage, each session is
    inserted once, where its user's bucket is."""
    return (
        f"{prelude} for i = 1, {count} do if i % 1000 == 1 then box.begin() end "
        f"local t = {session} "
        "if t.bucket_id == nil or box.space._bucket:get(t.bucket_id) ~= nil then "
        "box.space.sessions:insert(t) end "
        f"if i % 1000 == 0 or i == {count} then box.commit() end end"
    )


# Lua: on a storage of the sharded mode (its sessions have a bucket_id index), the map of a
# session (lua_session's) gets its user's bucket, and a token that carries it in bits 64-75
# (buckets.lua), as the service makes one; on a single instance the map is as it was.
_LUA_IN_BUCKET = (
    "local function in_bucket(m) "
    "if box.space.sessions.index.bucket_id == nil then return m end "
    "local bucket = require('sessions.buckets').of_user(m.user_id) "
    "local b = {m.token:bin('b'):byte(1, 16)} "
    "b[8] = bit.band(bucket - 1, 0xFF) "
    "b[7] = bit.bor(bit.band(b[7], 0xF0), bit.rshift(bucket - 1, 8)) "
    "m.token, m.bucket_id = require('uuid').frombin(string.char(unpack(b)), 'b'), bucket "
    "return m end "
)


def lua_session(
    user_id: object, ip: object, activity: object, extra: object = "box.NULL", *, token: str | None = None
) -> str:
    """Lua for a new sessions tuple, fields by name (the layout lives in fields.lua only);
    each argument is a Lua expression, but `token` (a new one unless given). Its stored expiry
    is its activity (see set_activity). On a storage of the sharded mode, a new token carries
    the user's bucket, and the tuple its bucket_id (a given token is kept as it is)."""
    uuid = f"require('uuid').fromstr('{token}')" if token else "require('uuid').new()"
    session = (
        f"{{token = {uuid}, user_id = {user_id}, ip = {ip}, "
        f"create = {activity}, activity = {activity}, extra = {extra}, expires = {activity}, "
        "seq = require('sessions.schema').next_seq(), id = require('sessions.ids').make()}"
    )
    if token:
        return f"box.space.sessions:frommap({session})"
    return f"box.space.sessions:frommap((function() {_LUA_IN_BUCKET} return in_bucket({session}) end)())"


def days_ago(days: float) -> int:
    return int(time.time() - days * 86400)


async def wait_for_purge_passes(admin: Console, count: int) -> None:
    """Until the purge fiber has taken `count` more steps with the clock as it is now, each
    one woken at once rather than after the fiber's pause (up to a second)."""
    start = admin.eval("return require('sessions.expiry').stats().passes")
    deadline = time.monotonic() + 10
    while admin.eval("return require('sessions.expiry').stats().passes") < start + count:
        assert time.monotonic() < deadline, "the purge fiber is not running"
        admin.eval("require('sessions.expiry').wake()")
        await asyncio.sleep(0.005)


def make_pair(
    tmp_path: Path, *, via: dict[str, str] | None = None, **environment: str
) -> tuple[EmbeddedTarantool, EmbeddedTarantool, dict[str, Path], dict[str, str]]:
    """A primary and its replica (not started), each the other's peer, with `environment` on
    both; and their data dirs and sockets by name. `via` gives, by name, the address the other
    instance reaches that one at (a tests.partition.Link), instead of its socket."""
    paths = {name: (tmp_path / name).resolve() for name in ("primary", "replica")}
    socket = {name: f"unix/:{path / 'tarantool.sock'}" for name, path in paths.items()}
    reach = {**socket, **(via or {})}
    common = {"SESSIONS_REPLICATION_PASSWORD": "replication-pw-8d1f", **environment}
    primary = make_instance(paths["primary"], environment={**common, "SESSIONS_PEERS": reach["replica"]})
    replica = make_instance(
        paths["replica"],
        environment={
            **common,
            "SESSIONS_ROLE": "replica",
            "SESSIONS_PRIMARY": reach["primary"],
            "SESSIONS_PEERS": reach["primary"],
        },
    )
    return primary, replica, paths, socket
