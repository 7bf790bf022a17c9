"""A bounded soak: mixed load for a while, watching errors, open files and memory.

    python bench/soak.py [--seconds 60]

Runs the service on a fresh embedded Tarantool, drives 90% get / 5% new / 5% del with wrk
in 10-second rounds, and after each round samples the service's and Tarantool's open file
descriptors and resident memory. Exits non-zero on any error or on growth that does not
level off (descriptors must return to their first value; memory may grow at most 25% past
the end of the first round, the warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from harness import seed, service, wrk  # bench/harness.py, next to this script

# Tokens to delete per 10-second round: 5% of well over what one process serves.
_DELETES = 20000


def sample(pid: int) -> tuple[int, int]:
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return fds, int(line.split()[1]) * 1024
    return fds, 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    rounds = max(1, args.seconds // 10)
    failures = []
    with tempfile.TemporaryDirectory(prefix="sessions-soak-") as tmp:
        work = Path(tmp)
        server = service(work / "data", work / "service.log")
        try:
            tarantool_pid = int((work / "data" / "tarantool.pid").read_text())
            files = asyncio.run(
                seed(work / "data" / "tarantool.sock", work, get_tokens=1000, del_tokens=_DELETES * rounds)
            )
            print(
                f"{'round':>5}{'req/s':>9}{'p99 ms':>9}{'errors':>8}{'svc fds':>9}{'svc MiB':>9}"
                f"{'tt fds':>8}{'tt MiB':>8}"
            )
            samples = []
            for number in range(1, rounds + 1):
                offset = {"BENCH_DEL_OFFSET": str(_DELETES * (number - 1))}
                load = wrk(
                    server.port, "mixed", seconds=10, connections=args.connections, files=files | offset
                )
                service_fds, service_rss = sample(server.process.pid)
                tt_fds, tt_rss = sample(tarantool_pid)
                samples.append((service_fds, service_rss, tt_fds, tt_rss))
                print(
                    f"{number:>5}{load.rps:>9.0f}{load.p99_ms:>9.2f}{load.errors:>8}{service_fds:>9}"
                    f"{service_rss / 2**20:>9.1f}{tt_fds:>8}{tt_rss / 2**20:>8.1f}"
                )
                if load.errors:
                    failures.append(f"round {number}: {load.errors} errors")
        finally:
            server.stop()
    first, last = samples[0], samples[-1]
    if last[0] > first[0] or last[2] > first[2]:
        failures.append(
            f"open descriptors grew: service {first[0]}->{last[0]}, tarantool {first[2]}->{last[2]}"
        )
    if last[1] > first[1] * 1.25:
        failures.append(f"service memory grew past the warm-up by {last[1] / first[1] - 1:.0%}")
    print("\n".join(failures) or "no errors, descriptors steady, memory bounded")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
