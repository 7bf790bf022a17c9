"""Failover without an operator (SESSIONS_FAILOVER=election): three real Tarantool 2.11
instances elect their leader, the service follows it, and killing the leader again and
again loses no acknowledged session. Needs Tarantool 2.11 (production's release); where it
is not there, these tests say so and skip (under CI they fail)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessions.console import Console
from sessions.embedded import EmbeddedTarantool

from .conftest import BINARIES, PASSWORD, call, settings_for
from .test_overload import _metric

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("a", "b", "c")


def _tarantool(release: str) -> str:
    """The binary of `release`; where it is not here, a skip with the reason (a failure in CI)."""
    if release not in BINARIES:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Tarantool {release}: CI runs every release (see docs/testing.md)")
        pytest.skip(f"no Tarantool {release}")
    return BINARIES[release]


def _instance(root: Path, name: str, binary: str, **extra: str) -> EmbeddedTarantool:
    sockets = {other: f"unix/:{root / other / 'tarantool.sock'}" for other in NAMES}
    environment = {
        "SESSIONS_FAILOVER": "election",
        "SESSIONS_REPLICATION_PASSWORD": "replication-pw-8d1f-c0ffee",
        "SESSIONS_PEERS": ",".join(sockets[other] for other in NAMES if other != name),
        # A dead leader is noticed within a second, and a new one elected soon after.
        "SESSIONS_ELECTION_TIMEOUT": "1",
        **extra,
    }
    if name != NAMES[0]:
        # The first start only: the others join the first, then the elections decide.
        environment |= {"SESSIONS_ROLE": "replica", "SESSIONS_PRIMARY": sockets[NAMES[0]]}
    return EmbeddedTarantool(
        data_dir=root / name,
        scripts_dir=ROOT / "tarantool",
        binary=binary,
        user="sessions",
        password=PASSWORD,
        memory=128 * 2**20,
        wal_mode="write",
        idle_ttl=86400,
        startup_timeout=30,
        shutdown_timeout=10,
        environment=environment,
    )


def _state(data_dir: Path) -> dict[str, Any] | None:
    """An instance's view, or None while it does not answer."""
    try:
        with Console(data_dir / "tarantool.control", timeout=2) as console:
            return console.eval(  # type: ignore[no-any-return]
                "local e = box.info.election return {ro = box.info.ro, state = e.state, term = e.term, "
                "leader = e.leader, id = box.info.id, n = box.space.sessions and box.space.sessions:len()}"
            )
    except (OSError, Exception):
        return None


async def _until(check: Any, what: str, within: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await asyncio.to_thread(check)):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)
    return result


class Cluster:
    def __init__(self, root: Path, binary: str) -> None:
        self.root = root
        self.instances = {name: _instance(root, name, binary) for name in NAMES}

    def states(self) -> dict[str, dict[str, Any] | None]:
        return {name: _state(self.root / name) for name in NAMES}

    def leader(self) -> str | None:
        """The elected leader, if exactly one instance is writable and it is that."""
        states = self.states()
        writable = [name for name, state in states.items() if state and not state["ro"]]
        if len(writable) != 1 or (states[writable[0]] or {}).get("state") != "leader":
            return None
        return writable[0]

    @property
    def addresses(self) -> str:
        return ",".join(f"unix/:{self.root / name / 'tarantool.sock'}" for name in NAMES)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path, _tarantool("2.11"))
    await asyncio.gather(*(instance.start() for instance in made.instances.values()))
    try:
        await _until(made.leader, "no leader was elected")
        yield made
    finally:
        for instance in made.instances.values():
            await instance.stop()


async def test_killing_the_leader_five_times_loses_no_acknowledged_session(serve, cluster, user_id):
    client = await serve(settings_for(cluster.instances["a"], tarantool=cluster.addresses))
    acknowledged: list[str] = []
    gets: dict[int | str, int] = {}
    failures: dict[str, int] = {}
    # (sent, answered) of each acknowledged write.
    answered: list[tuple[float, float]] = []
    writable_counts: list[int] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            params = {"user_id": str(user_id + n % 3), "ip": f"192.0.2.{i % 250 + 1}"}
            sent = time.monotonic()
            status, body = await call(client, "/new", params=params)
            if status == 200:
                acknowledged.append(body["data"]["token"])
                answered.append((sent, time.monotonic()))
            else:
                failures[body["code"]] = failures.get(body["code"], 0) + 1
                await asyncio.sleep(0.05)

    async def reader() -> None:
        while not stop.is_set():
            if acknowledged:
                token = acknowledged[len(acknowledged) // 2]
                status, body = await call(client, "/get", params={"token": token})
                key = status if status == 200 else f"{status} {body['code']} {body['message']}"
                gets[key] = gets.get(key, 0) + 1
            await asyncio.sleep(0.01)

    async def poller() -> None:
        while not stop.is_set():
            states = await asyncio.to_thread(cluster.states)
            # Raft's promise: one leader per term. A poll asks the three one after another, so on
            # a loaded machine it may see a deposed leader of an older term not yet read-only
            # beside the new one (whose writes it could not confirm anyway: no majority).
            terms = [state["term"] for state in states.values() if state and not state["ro"]]
            writable_counts.append(max((terms.count(term) for term in terms), default=0))
            await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(job) for job in (*(writer(n) for n in range(4)), reader(), poller())]
    resumed: list[float] = []
    killed: list[str] = []
    try:
        for _ in range(5):
            leader = await _until(cluster.leader, "no single leader")
            instance = cluster.instances[leader]
            before = len(acknowledged)
            await _until(
                lambda before=before: len(acknowledged) > before + 20, f"writes do not go on: {failures}"
            )
            assert instance.pid is not None
            # The followers fall behind for a moment, then the leader dies: what it could not
            # get a majority to confirm meanwhile was never acknowledged.
            lagging = [cluster.instances[name].pid for name in NAMES if name != leader]
            for pid in lagging:
                os.kill(pid or 0, signal.SIGSTOP)
            await asyncio.sleep(0.3)
            os.kill(instance.pid, signal.SIGKILL)
            for pid in lagging:
                os.kill(pid or 0, signal.SIGCONT)
            killed.append(leader)
            killed_at = time.monotonic()

            def resumed_after(killed_at: float = killed_at) -> float | None:
                # The first write sent after the kill that was acknowledged.
                return next((done - killed_at for sent, done in answered if sent > killed_at), None)

            resumed.append(await _until(resumed_after, "writes did not resume"))
            # The killed one comes back by itself as a follower.
            await instance.stop()
            await instance.start()
            await _until(
                lambda leader=leader: (cluster.states()[leader] or {}).get("state") == "follower",
                "the killed leader did not rejoin",
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    print(
        f"\nkilled {killed}; writes resumed after {[round(r, 2) for r in resumed]} s "
        f"(median {statistics.median(resumed):.2f}, worst {max(resumed):.2f}); "
        f"{len(acknowledged)} acknowledged; gets {gets}"
    )
    assert len(set(killed)) >= 2, "the same instance was leader every time"
    assert max(writable_counts) == 1, "two instances were writable in one term"
    # `get` answered throughout: served untouched while no leader was there.
    assert set(gets) == {200}, gets
    tokens = set(acknowledged)
    for name in NAMES:
        await _until(
            lambda name=name: (cluster.states()[name] or {}).get("n", 0) >= len(tokens),
            f"{name} did not catch up",
        )
        with Console(cluster.root / name / "tarantool.control") as console:
            stored = set(
                console.eval(
                    "local t = {} for _, s in box.space.sessions:pairs() do t[#t + 1] = s.token:str() end "
                    "return t"
                )
            )
        assert tokens <= stored, f"{len(tokens - stored)} acknowledged sessions missing on {name}"


async def test_a_leader_cut_off_from_the_majority_stops_taking_writes(serve, cluster, user_id):
    client = await serve(settings_for(cluster.instances["a"], tarantool=cluster.addresses))
    assert (await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"}))[0] == 200

    def stats_of_the_leader() -> tuple[str, str] | None:
        # A loaded machine may hold another election between finding the leader and asking it.
        leader = cluster.leader()
        if not leader:
            return None
        stats = subprocess.run(
            [sys.executable, "-m", "sessions", "stats"],
            env={**os.environ, "SESSIONS_DATA_DIR": str(cluster.root / leader)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        found = re.search(r"^election: +leader, term \d+, leader id \d+$", stats.stdout, re.M)
        return (leader, stats.stdout) if found else None

    leader, _ = await _until(stats_of_the_leader, "sessions stats of the leader does not say leader")
    followers = [name for name in NAMES if name != leader]
    metrics = await (await client.get("/metrics")).text()
    term = _metric(metrics, "sessions_tarantool_election_term")
    assert term >= 1 and _metric(metrics, "sessions_tarantool_election_leader") >= 1
    pids = [cluster.instances[name].pid for name in followers]
    for pid in pids:
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
    try:
        # Fenced: it resigns once it has not heard from a majority for the election timeout.
        await _until(
            lambda: (_state(cluster.root / leader) or {}).get("ro") is True, "the cut-off leader still writes"
        )
        status, body = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"})
        assert status == 503, body
    finally:
        for pid in pids:
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
    await _until(cluster.leader, "no leader after the partition healed")
    deadline = time.monotonic() + 30
    while (await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1"}))[0] != 200:
        assert time.monotonic() < deadline, "writes did not resume after the partition healed"
        await asyncio.sleep(0.1)
    # No term goes back. (Not always a later one: one run in about seven, the fenced leader
    # took its writes back in its own term once its followers answered again, no election
    # between; CI saw the test's former `> term` fail so. Either way one leader writes.)
    assert _metric(await (await client.get("/metrics")).text(), "sessions_tarantool_election_term") >= term


def _start_alone(binary: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "alone"
    data.mkdir()
    return subprocess.run(
        [binary, str(ROOT / "tarantool" / "init.lua")],
        env={
            "PATH": os.environ["PATH"],
            "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
            "SESSIONS_TT_WORK_DIR": str(data),
            "SESSIONS_TT_LISTEN": f"unix/:{data / 'tarantool.sock'}",
            "SESSIONS_FAILOVER": "election",
            "SESSIONS_REPLICATION_PASSWORD": "replication-pw-8d1f-c0ffee",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_on_tarantool_2_6_the_election_mode_refuses_to_start_and_says_why(tmp_path):
    result = _start_alone(_tarantool("2.6"), tmp_path, SESSIONS_PEERS="127.0.0.1:3302,127.0.0.1:3303")
    assert result.returncode == 1
    assert "SESSIONS_FAILOVER=election needs Tarantool 2.10 or newer" in result.stderr
    assert "this is 2.6" in result.stderr


def test_fewer_than_three_instances_are_refused(tmp_path):
    result = _start_alone(_tarantool("2.11"), tmp_path, SESSIONS_PEERS="127.0.0.1:3302")
    assert result.returncode == 1
    assert "needs SESSIONS_PEERS to name the two or more other instances (1 given)" in result.stderr
