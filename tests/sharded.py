"""A sharded cluster of real processes for tests: replica sets of vshard storages on the
project's Lua (tarantool/storage.lua) and a router (tarantool/router.lua), each Tarantool a
child that dies with the test process (sessions/embedded.py), on unix sockets in a temp dir,
with the vendored vshard 0.1.26 on LUA_PATH."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sessions.config import Settings
from sessions.console import Console
from sessions.embedded import EmbeddedTarantool

from .conftest import PASSWORD, ROOT, settings_for

__all__ = [
    "MODES",
    "VSHARD",
    "Cluster",
    "console_by_mode",
    "require_vshard",
    "running",
    "settings_by_mode",
    "sharded_cluster",
]

# vshard 0.1.26, unmodified, beside the checkout as the Tarantool 2.11 binary is (CI has it),
# or where SESSIONS_TEST_VSHARD says.
VSHARD = Path(os.environ.get("SESSIONS_TEST_VSHARD") or ROOT.parent / "shared" / "vendor" / "vshard-0.1.26")
# The user vshard's storages and routers talk to each other as (created by vshard).
_VSHARD_USER = "vshard"
_VSHARD_PASSWORD = "vshard-test-password-5e1c"


def require_vshard() -> None:
    """Skip, with the reason, where vshard is not here; in CI, fail: it runs them."""
    if (VSHARD / "vshard" / "init.lua").is_file():
        return
    reason = f"no Tarantool 2.11 / vshard: {VSHARD} is absent"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI runs the sharded tests (see docs/testing.md)")
    pytest.skip(reason)


@dataclass
class Storage:
    """One storage instance: its replica set's and its own uuid, its process, and its
    replica set's number (1, 2, ...) and place in the set (0: the first primary)."""

    replicaset: str
    uuid: str
    process: EmbeddedTarantool
    console: Console | None = None
    number: int = 1
    place: int = 0

    @property
    def address(self) -> str:
        """How its set's other instances and `sessions rejoin` name it."""
        return f"unix/:{self.process.socket_path}"

    def eval(self, code: str) -> Any:
        if self.console is None:
            self.console = Console(self.process.console_path)
        return self.console.eval(code)


@dataclass
class EveryStorage:
    """A console that evaluates on each storage of a cluster, for the tests' changes to one
    session (set_activity), which only the storage holding it makes: the first answer that
    is not nil."""

    storages: list[Storage]

    def eval(self, code: str) -> Any:
        answers = [storage.eval(code) for storage in self.storages]
        return next((answer for answer in answers if answer is not None), None)


# The operator's step after a change of the configuration file, on a console.
_RELOAD = "return require('sessions.sharded').reload()"
_ACTIVE = "return box.space._bucket.index.status:count({'active'})"


@dataclass
class Cluster:
    """`sets` replica sets of `replicas` storages each and one router, under `root`. A set
    of two or more fails over (`"master": "auto"`, storage.lua): its first instance starts
    as the primary, the others as its replicas (SESSIONS_ROLE=replica)."""

    root: Path
    binary: str
    sets: int = 2
    replicas: int = 1
    # vshard's options of the configuration's "vshard" (the rebalancer's pace).
    vshard: dict[str, Any] = field(default_factory=dict)
    storages: list[Storage] = field(default_factory=list)
    router: EmbeddedTarantool | None = None
    _router_console: Console | None = None

    def _instance(self, name: str, script: str, environment: dict[str, str]) -> EmbeddedTarantool:
        lua_path = f"{VSHARD}/?.lua;{VSHARD}/?/init.lua;;"
        return EmbeddedTarantool(
            data_dir=self.root / name,
            scripts_dir=ROOT / "tarantool",
            script=script,
            binary=self.binary,
            user="sessions",
            password=PASSWORD,
            memory=128 * 2**20,
            wal_mode="write",
            idle_ttl=180 * 86400,
            startup_timeout=30,
            shutdown_timeout=10,
            environment={"LUA_PATH": lua_path, **environment},
        )

    def _config(self) -> Path:
        sharding: dict[str, Any] = {}
        for storage in self.storages:
            socket = storage.process.socket_path
            failover = self.replicas > 1
            entry = sharding.setdefault(storage.replicaset, {"replicas": {}})
            replica: dict[str, Any] = {
                "uri": f"{_VSHARD_USER}:{_VSHARD_PASSWORD}@unix/:{socket}",
                "name": storage.process.data_dir.name,
            }
            if failover:
                entry["master"] = "auto"
            else:
                replica["master"] = True
            entry["replicas"][storage.uuid] = replica
        numbers = {storage.replicaset: storage.number for storage in self.storages}
        path = self.root / "cluster.json"
        config: dict[str, Any] = {"sharding": sharding, "numbers": numbers}
        if self.vshard:
            config["vshard"] = self.vshard
        path.write_text(json.dumps(config))
        return path

    def _storage(self, number: int, replicaset: str | None = None, place: int = 0) -> Storage:
        instance = str(uuid.uuid4())
        environment = {
            "SESSIONS_VSHARD_CONFIG": str(self.root / "cluster.json"),
            "SESSIONS_VSHARD_INSTANCE": instance,
        }
        if place > 0:
            # SESSIONS_PRIMARY is left to its default: the set's other instance.
            environment["SESSIONS_ROLE"] = "replica"
        name = f"rs{number}" if place == 0 else f"rs{number}-{place + 1}"
        return Storage(
            replicaset or str(uuid.uuid4()),
            instance,
            self._instance(name, "storage.lua", environment),
            number=number,
            place=place,
        )

    def _set(self, number: int) -> list[Storage]:
        first = self._storage(number)
        return [first, *(self._storage(number, first.replicaset, place) for place in range(1, self.replicas))]

    def instances(self, number: int) -> list[Storage]:
        """The storages of replica set `number` (1, 2, ...), its first primary first."""
        return [storage for storage in self.storages if storage.number == number]

    async def add_set(self) -> Storage:
        """A replica set of one storage more (of one instance), as docs/operations.md ("Sharded cluster",
        "Adding a replica set") says: the new set in the configuration file with the next
        number, its storage started, then `reload()` on every other storage's console and
        on the router's. vshard's rebalancer then moves buckets to it."""
        storage = self._storage(max(storage.number for storage in self.storages) + 1)
        self.storages.append(storage)
        self._config()
        await storage.process.start()
        for other in self.storages[:-1]:
            other.eval(_RELOAD)
        self.router_eval(_RELOAD)
        return storage

    def active_buckets(self) -> list[int]:
        """Each storage's count of active buckets (neither being sent nor received)."""
        return [int(storage.eval(_ACTIVE)) for storage in self.storages]

    async def start(self) -> None:
        require_vshard()
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "cluster.json"
        for number in range(1, self.sets + 1):
            self.storages.extend(self._set(number))
        self._config()
        for storage in self.storages:
            await storage.process.start()
        self.router = self._instance("router", "router.lua", {"SESSIONS_VSHARD_CONFIG": str(config)})
        await self.router.start()
        self.bootstrap()

    def router_eval(self, code: str) -> Any:
        assert self.router is not None
        if self._router_console is None:
            self._router_console = Console(self.router.console_path)
        return self._router_console.eval(code)

    def bootstrap(self, within: float = 30.0) -> None:
        """Spread the buckets over the replica sets (once per cluster), and wait until the
        router knows where each one is."""
        deadline = time.monotonic() + within
        while True:
            done = self.router_eval(
                "local ok, err = require('vshard').router.bootstrap({if_not_bootstrapped = true}) "
                "return {ok = ok == true, err = err and tostring(err.message or err) or nil}"
            )
            if done["ok"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"vshard bootstrap: {done['err']}")
            time.sleep(0.1)  # polling: the storages' connections come up on their own
        while (
            self.router_eval("return require('vshard').router.info().bucket.available_rw")
            < self.bucket_count()
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the router did not discover every bucket")
            time.sleep(0.1)

    def bucket_count(self) -> int:
        return int(self.router_eval("return require('vshard').router.bucket_count()"))

    def service_settings(self, **overrides: Any) -> Settings:
        """The service's settings for this cluster: its router, SESSIONS_TARANTOOL_MODE=sharded."""
        assert self.router is not None
        return Settings(
            tarantool=f"unix/:{self.router.socket_path}",
            tarantool_password=PASSWORD,
            tarantool_mode="sharded",
            **overrides,
        )

    async def stop(self) -> None:
        for console in [self._router_console, *(s.console for s in self.storages)]:
            if console is not None:
                console.close()
        if self.router is not None:
            await self.router.stop()
        for storage in self.storages:
            await storage.process.stop()


@contextlib.asynccontextmanager
async def running(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster started, and stopped at the end (a test's own cluster, as a fixture)."""
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


# The modes an API test marked to run in both is served in: on one instance, and through a
# router of a cluster of two replica sets.
MODES = ("instance", "sharded")


@pytest.fixture(scope="session")
def sharded_cluster(tmp_path_factory: pytest.TempPathFactory, tarantool_bin: str) -> Iterator[Cluster]:
    """One cluster per release for the whole run (tests keep apart by their own users and
    addresses, as on the shared instance)."""
    require_vshard()
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), tarantool_bin)
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        asyncio.run(cluster.stop())


@pytest.fixture(name="settings", params=MODES)
def settings_by_mode(request: pytest.FixtureRequest, tarantool: EmbeddedTarantool) -> Settings:
    """`settings` for a module that imports this fixture: each of its tests runs on the
    shared instance and through the cluster's router (SESSIONS_TARANTOOL_MODE=sharded)."""
    if request.param == "instance":
        return settings_for(tarantool)
    cluster: Cluster = request.getfixturevalue("sharded_cluster")
    return cluster.service_settings()


@pytest.fixture(name="console")
def console_by_mode(
    request: pytest.FixtureRequest, settings: Settings, console: Console
) -> Console | EveryStorage:
    """`console` beside settings_by_mode: the shared instance's (conftest's), or every
    storage's."""
    if settings.tarantool_mode == "sharded":
        cluster: Cluster = request.getfixturevalue("sharded_cluster")
        return EveryStorage(cluster.storages)
    return console


SERVED = {"new 200", "get 200"}
UNAVAILABLE = {"new 503 storage_unavailable", "get 503 storage_unavailable"}


def assert_only_the_killed_set_failed(counted: dict[str, Any]) -> None:
    """The failover tests' common verdict over `counted` (outcome -> count, per phase):
    set 2 served every call; set 1 served before the kill and, from the kill to the
    promote, answered 503 storage_unavailable only (never a 404 for an acknowledged
    session, never a 500)."""
    assert set(counted["set 2"]) == SERVED, counted
    assert set(counted["set 1 before the kill"]) == SERVED, counted
    assert set(counted["set 1 from the kill to the promote"]) == UNAVAILABLE, counted
