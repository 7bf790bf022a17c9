"""`make bench`'s event feed scenario: `new`, `del` and `get` through a service with the feed
off (SESSIONS_EVENTS, the default) and one with it on, each on its own embedded Tarantool,
measured in alternating turns in one run (off first, then on first), each turn's on/off
ratio taken and their median reported. Loopback only, about three minutes. Nothing is
asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from pathlib import Path

from harness import seed, service, wrk

ROUNDS = 5
SECONDS = 4
CONNECTIONS = 64
LOADS = ("new", "del", "get")
# Tokens `del` ends: one turn of it takes at most this many. 40,000 ran out (a turn reached
# 19,000/s with nothing else on the machine, and its rate then counted 404s): room for 37,500/s.
DEL_PER_TURN = 150_000
DEL_TOKENS = ROUNDS * DEL_PER_TURN


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sessions-events-"))
    setups = {}
    for name, events in (("off", "off"), ("on", "on")):
        server = service(work / name, work / f"{name}.log", SESSIONS_EVENTS=events)
        files = asyncio.run(
            seed(
                work / name / "tarantool.sock", work / name, get_tokens=1000, del_tokens=ROUNDS * DEL_PER_TURN
            )
        )
        setups[name] = (server, files)
    rates: dict[tuple[str, str], list[float]] = {}
    p99: dict[tuple[str, str], list[float]] = {}
    errors: dict[tuple[str, str], int] = {}
    try:
        for turn in range(ROUNDS):
            for load in LOADS:
                # Off then on, then on then off: a drift of the machine falls on both alike.
                order = list(setups.items()) if turn % 2 == 0 else list(reversed(setups.items()))
                for name, (server, files) in order:
                    offset = {"BENCH_DEL_OFFSET": str(turn * DEL_PER_TURN)}
                    measured = wrk(
                        server.port, load, seconds=SECONDS, connections=CONNECTIONS, files=files | offset
                    )
                    rates.setdefault((load, name), []).append(measured.rps)
                    p99.setdefault((load, name), []).append(measured.p99_ms)
                    errors[(load, name)] = errors.get((load, name), 0) + measured.errors
    finally:
        for server, _ in setups.values():
            server.stop()
    result = {
        load: {
            name: {
                "rps": round(statistics.median(rates[(load, name)]), 1),
                "p99_ms": round(statistics.median(p99[(load, name)]), 2),
                "errors": errors[(load, name)],
                "turns": [round(rate) for rate in rates[(load, name)]],
            }
            for name in setups
        }
        | {
            # The median of each turn's own ratio: the two of a turn ran seconds apart.
            "on_over_off": round(
                statistics.median(
                    on / off for on, off in zip(rates[(load, "on")], rates[(load, "off")], strict=True)
                ),
                3,
            )
        }
        for load in LOADS
    }
    print(json.dumps(result))
    for load in LOADS:
        print(
            f"{load} with SESSIONS_EVENTS=on against off: {result[load]['on_over_off']:.2f}x the throughput"
        )
        if any(errors[(load, name)] for name in setups):
            print(f"  {load}: some requests failed (see errors above): its figures are not comparable")


if __name__ == "__main__":
    main()
