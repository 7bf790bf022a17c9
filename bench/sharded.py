"""What a router costs: the service's storage layer (sessions.storage.Storage, as the
handlers call it, coalescing included) doing `get`s and `new`s against one vshard storage
directly (SESSIONS_TARANTOOL_MODE=instance) and through a router of a two-replica-set
cluster (sharded), interleaved, on the cluster tests/sharded.py starts.

`python bench/sharded.py [--seconds 3] [--turns 3] [--concurrency 64]` prints, per mode and
operation, calls per second and the median and 99th percentile latency of the best turn.
Needs the vendored vshard (tests/sharded.py says where). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessions.config import Settings
from sessions.storage import Storage
from tests.conftest import PASSWORD, VENDORED_2_11
from tests.sharded import VSHARD, Cluster


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


async def main(seconds: float, turns: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root), str(VENDORED_2_11) if VENDORED_2_11.exists() else "tarantool")
        await cluster.start()
        try:
            assert cluster.router is not None
            addresses = {
                "instance": f"unix/:{cluster.storages[0].process.socket_path}",
                "sharded": f"unix/:{cluster.router.socket_path}",
            }
            storages = {}
            for mode, address in addresses.items():
                settings = Settings(tarantool=address, tarantool_password=PASSWORD, tarantool_mode=mode)
                storages[mode] = Storage(settings.tarantool_addresses, settings, password=PASSWORD)
                await storages[mode].connect()
            tokens = {
                mode: [(await s.new(n, "192.0.2.1", None))["token"] for n in range(1, 1001)]
                for mode, s in storages.items()
            }
            best: dict[tuple[str, str], list[float]] = {}
            for _ in range(turns):
                for operation in ("get", "new"):
                    for mode, storage in storages.items():
                        latencies = await _load(storage, operation, tokens[mode], seconds, concurrency)
                        key = (mode, operation)
                        if key not in best or len(latencies) > len(best[key]):
                            best[key] = latencies
            print(f"{'mode':10} {'op':4} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
            for (mode, operation), latencies in best.items():
                latencies.sort()
                p99 = latencies[int(len(latencies) * 0.99)]
                print(
                    f"{mode:10} {operation:4} {len(latencies) / seconds:9.0f} "
                    f"{statistics.median(latencies) * 1000:7.2f} {p99 * 1000:7.2f}"
                )
            for storage in storages.values():
                await storage.close()
        finally:
            await cluster.stop()


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
