"""`make bench`'s elections scenario: `new` through the service on one primary with an
asynchronous replica, and on three instances that elect their leader
(SESSIONS_FAILOVER=election: every write waits for a majority, the leader and one other),
measured in alternating turns in one run, both on Tarantool 2.11 (2.6 has no elections).
Loopback only, about a minute. Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from harness import ROOT, instance, service, wrk

from sessions.console import Console
from sessions.embedded import EmbeddedTarantool

# The Tarantool 2.11 built for this project's machines (see docs/testing.md).
TARANTOOL_2_11 = ROOT.parent / "shared" / "vendor" / "tarantool-2.11" / "bin" / "tarantool"
ROUNDS = 3
SECONDS = 4
REPLICATION_PASSWORD = "bench-replication-pw"
MODES = ("async", "election")


def member(data_dir: Path, **environment: str) -> EmbeddedTarantool:
    return instance(
        data_dir,
        memory=512 * 2**20,
        environment={"SESSIONS_REPLICATION_PASSWORD": REPLICATION_PASSWORD, **environment},
        binary=str(TARANTOOL_2_11),
    )


async def pair(work: Path) -> list[EmbeddedTarantool]:
    """A primary, then its asynchronous replica."""
    primary = member(work / "primary")
    await primary.start()
    replica = member(
        work / "replica", SESSIONS_ROLE="replica", SESSIONS_PRIMARY=f"unix/:{primary.socket_path}"
    )
    await replica.start()
    return [primary, replica]


async def trio(work: Path) -> list[EmbeddedTarantool]:
    """Three instances under elections, started together; once one of them leads."""
    names = ("a", "b", "c")
    sockets = {name: f"unix/:{work / name / 'tarantool.sock'}" for name in names}
    members = []
    for name in names:
        environment = {
            "SESSIONS_FAILOVER": "election",
            "SESSIONS_PEERS": ",".join(sockets[other] for other in names if other != name),
        }
        if name != names[0]:
            environment |= {"SESSIONS_ROLE": "replica", "SESSIONS_PRIMARY": sockets[names[0]]}
        members.append(member(work / name, **environment))
    await asyncio.gather(*(one.start() for one in members))
    deadline = time.monotonic() + 60
    while not any(leads(one) for one in members):
        if time.monotonic() > deadline:
            raise RuntimeError("no leader was elected within 60 s")
        await asyncio.sleep(0.1)
    return members


def leads(one: EmbeddedTarantool) -> bool:
    # The instances listen before their consoles open.
    try:
        with Console(one.console_path) as console:
            return bool(console.eval("return box.info.election.state == 'leader' and not box.info.ro"))
    except OSError:
        return False


def main() -> None:
    if not TARANTOOL_2_11.exists():
        print(f"bench/elections.py: skipped, no Tarantool 2.11 at {TARANTOOL_2_11} (elections need 2.10+)")
        return
    work = Path(tempfile.mkdtemp(prefix="sessions-elections-"))
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    p99: dict[str, list[float]] = {mode: [] for mode in MODES}
    errors = dict.fromkeys(MODES, 0)
    clusters: dict[str, list[EmbeddedTarantool]] = {}
    servers = {}
    try:
        clusters["async"] = asyncio.run(pair(work / "async"))
        clusters["election"] = asyncio.run(trio(work / "election"))
        for mode, members in clusters.items():
            servers[mode] = service(
                work / mode / "service",
                work / f"{mode}.log",
                SESSIONS_TARANTOOL=",".join(f"unix/:{one.socket_path}" for one in members),
            )
        for turn in range(ROUNDS):
            # Every other round the other one first, so neither always follows the same.
            for mode in MODES if turn % 2 == 0 else reversed(MODES):
                load = wrk(servers[mode].port, "new", seconds=SECONDS, connections=32, files={})
                figures[mode].append(load.rps)
                p99[mode].append(load.p99_ms)
                errors[mode] += load.errors
    finally:
        for server in servers.values():
            server.stop()
        for members in clusters.values():
            for one in reversed(members):
                asyncio.run(one.stop())
    # Kept, with the logs, when something failed.
    shutil.rmtree(work, ignore_errors=True)
    result = {
        mode: {
            "new_rps": round(statistics.median(rates), 1),
            "p99_ms": round(statistics.median(p99[mode]), 2),
            "errors": errors[mode],
        }
        for mode, rates in figures.items()
    }
    ratio = statistics.median(figures["election"]) / statistics.median(figures["async"])
    print(json.dumps({**result, "election_over_async": round(ratio, 2)}))
    print(
        f"new with elections (three instances, majority quorum) against a primary with an "
        f"asynchronous replica, both on Tarantool 2.11: {ratio:.2f}x the throughput, p99 "
        f"{result['election']['p99_ms']} against {result['async']['p99_ms']} ms"
    )


if __name__ == "__main__":
    main()
