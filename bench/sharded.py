"""What a router costs, and what a second replica set gives: the service's storage layer
(sessions.storage.Storage, as the handlers call it, coalescing included) doing `get`s and
`new`s against

- `direct`: one vshard storage of a two-replica-set cluster, called as a single instance
  (SESSIONS_TARANTOOL_MODE=instance);
- `routed, 1 set`: the router of a cluster of one replica set (sharded);
- `routed, 2 sets`: the router of the two-replica-set cluster (sharded),

in interleaved turns (every other turn backwards), on clusters tests/sharded.py starts.

`python bench/sharded.py [--seconds 3] [--turns 3] [--concurrency 64]` prints, per target
and operation, calls per second and the median and 99th percentile latency of the best turn,
and the CPU per call over all turns: the CPU seconds (utime + stime of /proc/<pid>/stat,
every thread) of every process the calls go through (this Python process, which is the
service side, and the Tarantools: the storage for `direct`; the router and every storage of
the cluster for `routed`) divided by the calls completed. Then two ratios: CPU per call
routed (2 sets) against direct, and calls per second with two replica sets against one.
On a machine of two cores every process here shares them, so the second ratio shows the
cost per call and the balance, not the throughput a cluster of real machines would get.
Needs the vendored vshard (tests/sharded.py says where). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessions.config import Settings
from sessions.storage import Storage
from tests.conftest import PASSWORD, VENDORED_2_11
from tests.sharded import VSHARD, Cluster

_TICKS = os.sysconf("SC_CLK_TCK")
_OPERATIONS = ("get", "new")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread of it, in seconds."""
    # The command name (field 2) may hold spaces: the fields after its ')' are split.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Target:
    """Where the calls go, and the processes they go through (names by pid)."""

    name: str
    storage: Storage
    processes: dict[str, int]
    tokens: list[str] = field(default_factory=list)
    # Over every turn, by operation: calls completed, CPU seconds by process, seconds run.
    calls: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    best: dict[str, list[float]] = field(default_factory=dict)


async def _load(
    storage: Storage, operation: str, tokens: list[str], seconds: float, concurrency: int
) -> list[float]:
    """Latencies of `operation` calls made by `concurrency` callers for `seconds`."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            if operation == "get":
                await storage.get(random.choice(tokens), None, None)
            else:
                await storage.new(random.randrange(1, 10**9), "192.0.2.1", None)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def _measure(target: Target, operation: str, seconds: float, concurrency: int) -> None:
    before = {name: cpu_seconds(pid) for name, pid in target.processes.items()}
    started = time.monotonic()
    latencies = await _load(target.storage, operation, target.tokens, seconds, concurrency)
    elapsed = time.monotonic() - started
    cpu = target.cpu.setdefault(operation, {})
    for name, pid in target.processes.items():
        cpu[name] = cpu.get(name, 0.0) + cpu_seconds(pid) - before[name]
    target.calls[operation] = target.calls.get(operation, 0) + len(latencies)
    target.seconds[operation] = target.seconds.get(operation, 0.0) + elapsed
    if len(latencies) > len(target.best.get(operation, [])):
        target.best[operation] = latencies


async def _target(name: str, address: str, mode: str, processes: dict[str, int]) -> Target:
    settings = Settings(tarantool=address, tarantool_password=PASSWORD, tarantool_mode=mode)
    storage = Storage(settings.tarantool_addresses, settings, password=PASSWORD)
    await storage.connect()
    target = Target(name, storage, {"python": os.getpid(), **processes})
    target.tokens = [(await storage.new(n, "192.0.2.1", None))["token"] for n in range(1, 1001)]
    return target


def _per_call(target: Target, operation: str) -> float:
    """CPU seconds per call over every turn, every process summed."""
    return sum(target.cpu[operation].values()) / target.calls[operation]


def _rate(target: Target, operation: str) -> float:
    """Calls per second over every turn."""
    return target.calls[operation] / target.seconds[operation]


def _tarantools(cluster: Cluster) -> dict[str, int]:
    assert cluster.router is not None and cluster.router.pid is not None
    found = {"router": cluster.router.pid}
    for number, storage in enumerate(cluster.storages, 1):
        assert storage.process.pid is not None
        found[f"storage {number}"] = storage.process.pid
    return found


def _report(targets: list[Target], seconds: float) -> None:
    print(
        f"{'target':15} {'op':4} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/call':>12}  by process"
    )
    for operation in _OPERATIONS:
        for target in targets:
            latencies = sorted(target.best[operation])
            p99 = latencies[int(len(latencies) * 0.99)]
            calls = target.calls[operation]
            cpu = target.cpu[operation]
            parts = ", ".join(f"{name} {used / calls * 1e6:.0f}" for name, used in cpu.items())
            print(
                f"{target.name:15} {operation:4} {len(latencies) / seconds:9.0f} "
                f"{statistics.median(latencies) * 1000:7.2f} {p99 * 1000:7.2f} "
                f"{sum(cpu.values()) / calls * 1e6:12.1f}  {parts}"
            )
    direct, one, two = targets
    for operation in _OPERATIONS:
        ratio = _per_call(two, operation) / _per_call(direct, operation)
        routed_two, routed_one = _rate(two, operation), _rate(one, operation)
        print(
            f"{operation}: CPU per call routed (2 sets) / direct {ratio:.2f}x; "
            f"calls/s over all turns 2 sets / 1 set {routed_two / routed_one:.2f}x "
            f"({routed_two:.0f} / {routed_one:.0f})"
        )


async def main(seconds: float, turns: int, concurrency: int) -> None:
    binary = str(VENDORED_2_11) if VENDORED_2_11.exists() else "tarantool"
    with tempfile.TemporaryDirectory() as root:
        two = Cluster(Path(root) / "two", binary, sets=2)
        one = Cluster(Path(root) / "one", binary, sets=1)
        targets: list[Target] = []
        try:
            await two.start()
            await one.start()
            assert two.router is not None and one.router is not None
            first = two.storages[0].process
            assert first.pid is not None
            targets = [
                await _target("direct", f"unix/:{first.socket_path}", "instance", {"storage 1": first.pid}),
                await _target(
                    "routed, 1 set", f"unix/:{one.router.socket_path}", "sharded", _tarantools(one)
                ),
                await _target(
                    "routed, 2 sets", f"unix/:{two.router.socket_path}", "sharded", _tarantools(two)
                ),
            ]
            for turn in range(turns):
                for operation in _OPERATIONS:
                    # Every other turn backwards, so that no target always follows the same one.
                    for target in targets if turn % 2 == 0 else targets[::-1]:
                        await _measure(target, operation, seconds, concurrency)
            _report(targets, seconds)
        finally:
            for target in targets:
                await target.storage.close()
            await one.stop()
            await two.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    # `make bench` runs this on any machine; without the vendored vshard there is nothing to run.
    if not (VSHARD / "vshard" / "init.lua").is_file():
        print(f"bench/sharded.py skipped: no Tarantool 2.11 / vshard: {VSHARD} is absent")
        sys.exit(0)
    asyncio.run(main(options.seconds, options.turns, options.concurrency))
