"""This checkout's service against another checkout's, interleaved with the ceiling.

    git worktree add /tmp/before 83ca282
    python bench/compare.py /tmp/before --modes get new user

Both services run at once, each on an embedded Tarantool of its own seeded alike, and each
load takes its turns round-robin with the same load against the other checkout and the
ceiling (`interleaved` of bench/harness.py), so the machine's drifts fall on both alike. Prints
each load's rate and p99 against the ceiling's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from harness import PASSWORD, Server, constant, interleaved, seed, service


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("before", type=Path, help="the other checkout (its sessions/ and tarantool/)")
    parser.add_argument("--modes", nargs="+", default=["get", "new", "user"], help="loads of bench/wrk")
    parser.add_argument("--seconds", type=float, default=12, help="duration of each load, in all")
    parser.add_argument("--rounds", type=int, default=6, help="turns each load takes")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sessions-compare-") as tmp:
        work = Path(tmp)
        ceiling = constant("ceiling.py", "ceiling", work)
        # PYTHONPATH first on sys.path: `-m sessions` runs the other checkout's package,
        # which finds its own Lua next to it.
        before = Server(
            [sys.executable, "-m", "sessions", "serve"],
            {
                "SESSIONS_DATA_DIR": str(work / "before"),
                "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
                "PYTHONPATH": str(args.before.resolve()),
            },
            work / "before.log",
        )
        now = service(work / "now", work / "now.log")
        try:
            files = {}
            for name in ("before", "now"):
                out = work / f"{name}-files"
                out.mkdir()
                socket = work / name / "tarantool.sock"
                files[name] = asyncio.run(seed(socket, out, get_tokens=1000, del_tokens=0))
            targets = [("ceiling", ceiling.port, "get", {})]
            for mode in args.modes:
                targets += [
                    (f"before {mode}", before.port, mode, files["before"]),
                    (f"now {mode}", now.port, mode, files["now"]),
                ]
            loads = interleaved(targets, args)
        finally:
            for each in (ceiling, before, now):
                each.stop()
    top = loads[0]
    print(f"{'load':<14}{'req/s':>9}{'x ceil':>8}{'p99 ms':>9}{'p99 xc':>8}")
    for load in loads:
        print(
            f"{load.name:<14}{load.rps:>9.0f}{load.rps / top.rps:>8.2f}"
            f"{load.p99_ms:>9.2f}{load.p99_ms / top.p99_ms:>8.2f}"
        )


if __name__ == "__main__":
    main()
