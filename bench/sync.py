"""`make bench`'s replication scenario: `new` on a primary with an asynchronous replica and
with SESSIONS_SYNC_REPLICAS=1 (each write acknowledged once the replica has it), measured in
turns in one run. Loopback only, about 40 s. Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from pathlib import Path

from harness import instance, service, wrk

from sessions.embedded import EmbeddedTarantool

ROUNDS = 3
SECONDS = 4


def pair_instance(data_dir: Path, **environment: str) -> EmbeddedTarantool:
    return instance(
        data_dir,
        memory=512 * 2**20,
        environment={"SESSIONS_REPLICATION_PASSWORD": "bench-replication-pw", **environment},
    )


async def pair(work: Path, sync: int) -> tuple[EmbeddedTarantool, EmbeddedTarantool]:
    primary = pair_instance(work / "primary", SESSIONS_SYNC_REPLICAS=str(sync))
    await primary.start()
    replica = pair_instance(
        work / "replica", SESSIONS_ROLE="replica", SESSIONS_PRIMARY=f"unix/:{primary.socket_path}"
    )
    await replica.start()
    return primary, replica


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sessions-sync-"))
    figures: dict[str, list[float]] = {"async": [], "sync": []}
    p99: dict[str, list[float]] = {"async": [], "sync": []}
    errors = {"async": 0, "sync": 0}
    setups = {}
    for name, sync in (("async", 0), ("sync", 1)):
        primary, replica = asyncio.run(pair(work / name, sync))
        server = service(
            work / name / "service",
            work / f"{name}.log",
            SESSIONS_TARANTOOL=f"unix/:{primary.socket_path},unix/:{replica.socket_path}",
        )
        setups[name] = (primary, replica, server)
    try:
        for _ in range(ROUNDS):
            for name, (_, _, server) in setups.items():
                load = wrk(server.port, "new", seconds=SECONDS, connections=32, files={})
                figures[name].append(load.rps)
                errors[name] += load.errors
                p99[name].append(load.p99_ms)
    finally:
        for primary, replica, server in setups.values():
            server.stop()
            asyncio.run(replica.stop())
            asyncio.run(primary.stop())
    result = {
        name: {
            "new_rps": round(statistics.median(rates), 1),
            "p99_ms": round(statistics.median(p99[name]), 2),
            "errors": errors[name],
        }
        for name, rates in figures.items()
    }
    ratio = statistics.median(figures["sync"]) / statistics.median(figures["async"])
    print(json.dumps({**result, "sync_over_async": round(ratio, 2)}))
    print(f"new with SESSIONS_SYNC_REPLICAS=1 against an asynchronous replica: {ratio:.2f}x the throughput")


if __name__ == "__main__":
    main()
