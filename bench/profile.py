"""Where the service's CPU goes under a load, part by part, sampled with py-spy.

`python bench/profile.py get` starts the service on an embedded Tarantool, runs the wrk
load `get` (one thread, 64 connections) and samples the service process with py-spy
meanwhile; then it prints each part's share of the samples and what that share is per
request in microseconds (CPU seconds sampled / requests served). `--api-key` turns API
keys on (and sends the key), to see what the check costs. Nothing is asserted.

A sample counts towards a part when one of the part's functions is on its stack, so the
parts overlap where one calls another (the router calls everything).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import BENCH_IP, BENCH_USER, WRK_SCRIPT, seed, service

RATE = 250  # samples a second

# Each part by the functions that make it up, as py-spy names them: "function (file)".
PARTS = {
    "whole router (everything below)": ["Router.__call__ (sessions/routing.py)"],
    "request id": ["_request_id (sessions/routing.py)"],
    "metrics": ["_MethodStats.record (sessions/metrics.py)"],
    "API key check": ["ApiKeys.check (sessions/auth.py)"],
    "parameters": ["read (sessions/params.py)", "read_query (sessions/params.py)"],
    "extra data": ["_read_extra (sessions/routing.py)"],
    "envelope (orjson, Response)": ["success (sessions/envelope.py)", "failure (sessions/envelope.py)"],
    "storage adapter (coalescing, asynctnt calls)": ["(sessions/storage/", "(asynctnt/"],
    "aiohttp: parsing, request objects": [
        "data_received (aiohttp/web_protocol.py)",
        "_make_request (sessions/aiohttp_internals.py)",
        "BaseRequest.",
    ],
    "aiohttp: writing answers": ["finish_response (aiohttp/web_protocol.py)"],
}

# Samples in none of the parts: the event loop's own C code (uvloop, the socket calls,
# asynctnt's reader), asyncio's task steps, aiohttp's connection loop between requests.
REST = "none of the above"


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    names = []
    for frame in stack.split(";"):
        # "function (file:line)" -> "function (file)"
        head, _, tail = frame.rpartition(":")
        names.append(f"{head})" if tail.rstrip(")").isdigit() else frame)
    return names, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", default="get", help="a load of bench/wrk/sessions.lua")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--api-key", action="store_true", help="serve with an API key and send it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sessions-profile-") as tmp:
        work = Path(tmp)
        key = "bench-key-" + "k" * 32
        env = {"SESSIONS_API_KEYS": key} if args.api_key else {}
        server = service(work / "data", work / "service.log", **env)
        try:
            files = asyncio.run(seed(work / "data" / "tarantool.sock", work, get_tokens=1000, del_tokens=0))
            wrk_env = {
                **os.environ,
                **files,
                "BENCH_MODE": args.mode,
                "BENCH_USER": str(BENCH_USER),
                "BENCH_IP": BENCH_IP,
                "BENCH_API_KEY": key if args.api_key else "",
            }
            load = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    "-c64",
                    f"-d{args.seconds + 2}s",
                    "-s",
                    str(WRK_SCRIPT),
                    f"http://127.0.0.1:{server.port}/",
                ],
                env=wrk_env,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)
            raw = work / "samples.txt"
            sampling = ["-d", str(args.seconds), "-r", str(RATE), "--nonblocking", "-f", "raw"]
            sampling += ["-o", str(raw)]
            subprocess.run(
                ["py-spy", "record", "-p", str(server.process.pid), *sampling],
                check=True,
                capture_output=True,
            )
            output = load.communicate()[0]
        finally:
            server.stop()
        rps = next(float(line.split()[1]) for line in output.splitlines() if line.startswith("Requests/sec"))
        shares: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            names, count = frames(line)
            total += count
            matched = False
            for part, patterns in PARTS.items():
                if any(pattern in name for name in names for pattern in patterns):
                    shares[part] += count
                    matched = True
            if not matched:
                shares[REST] += count
    cpu_per_request_us = total / RATE / (rps * args.seconds) * 1e6
    print(
        f"{args.mode}{' with an API key' if args.api_key else ''}: {rps:.0f} req/s under py-spy, "
        f"{total / RATE / args.seconds:.0%} of a core sampled, {cpu_per_request_us:.0f} us of CPU a request"
    )
    width = max(map(len, [*PARTS, REST]))
    for part in [*PARTS, REST]:
        share = shares[part] / total if total else 0.0
        print(f"  {part:<{width}}  {share:6.1%}  {share * cpu_per_request_us:6.1f} us")


if __name__ == "__main__":
    sys.exit(main())
