"""`make bench`: the service measured side by side with a bare aiohttp baseline, in one run.

Loopback only and bounded in time (about three minutes on 2 cores). Prints one table and
writes it as JSON and as a PNG chart of the ratios under bench/results/. Nothing here is
asserted: the figures are for reading and for comparing commits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import (
    DEL_USER_BASE,
    EXTRA_200,
    MEMORY_LUA,
    NO_EXTRA,
    RESULTS,
    ROOT,
    WRK_SCRIPT,
    Load,
    constant,
    insert,
    instance,
    interleaved,
    redis_peer,
    seed,
    service,
    users,
    wrk,
)

from sessions.console import Console


def measure_loads(work: Path, args: argparse.Namespace) -> list[Load]:
    seconds, connections = args.seconds, args.connections
    with contextlib.ExitStack() as running:
        references = {
            "baseline": constant("baseline.py", "baseline", work),
            "ceiling": constant("ceiling.py", "ceiling", work),
            # get's distance from the ceiling, split: the router over a constant answer,
            # then also waiting one loop turn for it (bench/steps.py); storage is the rest.
            "router": constant("steps.py", "router", work, "router"),
            "router+wait": constant("steps.py", "router+wait", work, "wait"),
        }
        for each in references.values():
            running.callback(each.stop)
        peer_port, peer_files = running.enter_context(redis_peer(work))
        server = service(work / "one", work / "service.log")
        running.callback(server.stop)
        files = asyncio.run(seed(work / "one" / "tarantool.sock", work, get_tokens=1000, del_tokens=40000))
        # The loads issue 12 sets targets for, with the references they are measured against.
        loads = interleaved(
            [
                *((name, each.port, "get", {}) for name, each in references.items()),
                *(
                    (f"redis peer {mode}", peer_port, mode, peer_files)
                    for mode in ("get", "new", "user", "ip")
                ),
                *((mode, server.port, mode, files) for mode in ("get", "new", "user", "ip")),
            ],
            args,
        )
        # Enough for the fastest of the two loads at about three times today's rate.
        with Console(work / "one" / "tarantool.control", timeout=600) as console:
            files["BENCH_ROTATE_TOKENS"] = users(
                console, work, first=DEL_USER_BASE, count=int(60_000 * seconds / 5), per_user=1, name="rotate"
            )
            users(
                console,
                work,
                first=DEL_USER_BASE + 10**8,
                count=int(20_000 * seconds / 5),
                per_user=10,
                name="user_del",
            )
        files["BENCH_DEL_USER"] = str(DEL_USER_BASE + 10**8)
        for mode in ("get_ip", "mixed", "rotate", "user_del"):
            loads.append(wrk(server.port, mode, seconds=seconds, connections=connections, files=files))

    # The price of surviving power loss: every batch's WAL write waits for fsync.
    durable = service(work / "fsync", work / "fsync.log", SESSIONS_WAL_MODE="fsync")
    try:
        synced = wrk(durable.port, "new", seconds=seconds, connections=connections, files={})
        synced.name = "new, WAL fsync"
        loads.append(synced)
    finally:
        durable.stop()

    workers = service(work / "one", work / "workers.log", SESSIONS_WORKERS=str(args.workers))
    try:
        many = wrk(workers.port, "get", seconds=seconds, connections=connections, files=files)
        many.name = f"get, {args.workers} workers"
        loads.append(many)
    finally:
        workers.stop()

    by_name = {load.name: load for load in loads}
    base, ceiling = by_name["baseline"], by_name["ceiling"]
    for load in loads:
        load.ratio = load.rps / base.rps
        load.p99_ratio = load.p99_ms / base.p99_ms
        load.ceiling_ratio = load.rps / ceiling.rps
        load.ceiling_p99_ratio = load.p99_ms / ceiling.p99_ms
        same = by_name.get(f"redis peer {load.name}")
        if same is not None:
            load.redis_ratio = load.rps / same.rps
    return loads


def measure_memory_and_recovery(work: Path, count: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    tarantool = instance(work / "memory")
    asyncio.run(tarantool.start())
    try:
        with Console(tarantool.console_path, timeout=600) as console:
            for label, extra in (("no_extra", NO_EXTRA), ("extra_200", EXTRA_200)):
                console.eval("box.space.sessions:truncate()")
                before = console.eval(MEMORY_LUA)
                insert(console, count, ts=int(time.time()), extra=extra)
                after = console.eval(MEMORY_LUA)
                result[f"bytes_per_session_{label}"] = (after["arena"] - before["arena"]) / count
                result[f"tuple_bytes_{label}"] = (after["items"] - before["items"]) / count
                result[f"index_bytes_{label}"] = (after["index"] - before["index"]) / count
            console.eval("box.space.sessions:truncate()")
            insert(console, count, ts=int(time.time()))
            console.eval("box.snapshot()")
    finally:
        asyncio.run(tarantool.stop())

    started = time.monotonic()
    asyncio.run(tarantool.start())
    result["recovery_s_from_snapshot"] = time.monotonic() - started
    try:
        with Console(tarantool.console_path, timeout=600) as console:
            result["recovered_sessions"] = console.eval("return box.space.sessions:len()")
    finally:
        asyncio.run(tarantool.stop())

    # The same sessions from the write-ahead log alone, as after a crash between checkpoints.
    wal_only = instance(work / "wal")
    asyncio.run(wal_only.start())
    try:
        with Console(wal_only.console_path, timeout=600) as console:
            insert(console, count, ts=int(time.time()))
    finally:
        asyncio.run(wal_only.stop())
    started = time.monotonic()
    asyncio.run(wal_only.start())
    result["recovery_s_from_wal"] = time.monotonic() - started
    asyncio.run(wal_only.stop())
    return result


def measure_expiry(work: Path, args: argparse.Namespace, count: int) -> dict[str, Any]:
    """Purge `count` sessions that lapse together while `get` runs, against `get` without."""
    # Long enough for the insert and the quiet load to finish before the sessions lapse,
    # even on a slow day; the `get` tokens are made after the insert, so they stay live.
    ttl = 60
    server = service(work / "expiry", work / "expiry.log", SESSIONS_IDLE_TTL=str(ttl))
    try:
        with Console(work / "expiry" / "tarantool.control", timeout=600) as console:
            inserted_at = int(time.time())
            total = insert(console, count, ts=inserted_at, ttl=ttl)
            files = asyncio.run(seed(work / "expiry" / "tarantool.sock", work, get_tokens=1000, del_tokens=0))
            total += 1020
            quiet = wrk(server.port, "get", seconds=args.seconds, connections=args.connections, files=files)
            # They lapse at the first second when now - activity > ttl.
            due = inserted_at + ttl + 1
            time.sleep(max(0.0, due - 1 - time.time()))
            env = {**os.environ, "BENCH_MODE": "get", **files}
            command = ["wrk", "-t1", f"-c{args.connections}", "-d10s", "-s", str(WRK_SCRIPT)]
            during = subprocess.Popen(
                [*command, f"http://127.0.0.1:{server.port}/"], env=env, stdout=subprocess.PIPE, text=True
            )
            first = last = None
            live = total - count
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = console.eval("return box.space.sessions:len()")
                now = time.monotonic()
                # A hundred gone: the handful of older seed sessions lapse a moment earlier.
                if first is None and left < total - 100:
                    first = now
                if left <= live:
                    last = now
                    break
                time.sleep(0.02)
            output, _ = during.communicate(timeout=60)
        line = next(line for line in output.splitlines() if line.startswith("BENCH "))
        data = json.loads(line.removeprefix("BENCH "))
    finally:
        server.stop()
    purge_s = (last - first) if first is not None and last is not None else None
    return {
        "purged": count,
        "purge_s": purge_s,
        "purge_per_s": count / purge_s if purge_s else None,
        "get_p99_ms_quiet": quiet.p99_ms,
        "get_p99_ms_during_purge": data["p99_us"] / 1000,
        "p99_ratio": (data["p99_us"] / 1000) / quiet.p99_ms,
        "errors_during_purge": data["errors"] + data["non_2xx"],
    }


def measure_bulk_delete(work: Path, args: argparse.Namespace, count: int) -> dict[str, Any]:
    """`/user/del` of one user with `count` sessions while `get` runs, against `get` without."""
    server = service(work / "bulk", work / "bulk.log")
    try:
        files = asyncio.run(seed(work / "bulk" / "tarantool.sock", work, get_tokens=1000, del_tokens=0))
        with Console(work / "bulk" / "tarantool.control", timeout=600) as console:
            users(console, work, first=DEL_USER_BASE, count=1, per_user=count, name="bulk")
        quiet = wrk(server.port, "get", seconds=args.seconds, connections=args.connections, files=files)
        env = {**os.environ, "BENCH_MODE": "get", **files}
        command = ["wrk", "-t1", f"-c{args.connections}", "-d6s", "-s", str(WRK_SCRIPT)]
        during = subprocess.Popen(
            [*command, f"http://127.0.0.1:{server.port}/"], env=env, stdout=subprocess.PIPE, text=True
        )
        time.sleep(1)
        started = time.monotonic()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/user/del?id={DEL_USER_BASE}", timeout=120
        ) as r:
            ended = json.load(r)["data"]["deleted"]
        took = time.monotonic() - started
        output, _ = during.communicate(timeout=60)
        line = next(line for line in output.splitlines() if line.startswith("BENCH "))
        data = json.loads(line.removeprefix("BENCH "))
    finally:
        server.stop()
    return {
        "ended": ended,
        "seconds": took,
        "ended_per_s": ended / took,
        "get_p99_ms_quiet": quiet.p99_ms,
        "get_p99_ms_during": data["p99_us"] / 1000,
        "p99_ratio": (data["p99_us"] / 1000) / quiet.p99_ms,
        "errors_during": data["errors"] + data["non_2xx"],
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"sessions benchmark, {report['machine']}, {report['connections']} connections, "
        f"{report['seconds']}s per load, commit {report['commit']}",
        "",
        f"{'load':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x base':>9}{'x ceil':>8}{'p99 xc':>8}"
        f"{'x redis':>9}{'errors':>8}",
    ]
    for load in report["loads"]:
        redis_ratio = f"{load['redis_ratio']:>9.2f}" if load.get("redis_ratio") else f"{'-':>9}"
        lines.append(
            f"{load['name']:<18}{load['rps']:>9.0f}{load['p50_ms']:>9.2f}{load['p99_ms']:>9.2f}"
            f"{load['ratio']:>9.2f}{load['ceiling_ratio']:>8.2f}{load['ceiling_p99_ratio']:>8.2f}"
            f"{redis_ratio}{load['errors']:>8}"
        )
    memory, expiry, bulk = report["memory"], report["expiry"], report["bulk_delete"]
    if not (memory and expiry and bulk):
        return "\n".join(lines)
    per_s = expiry["purge_per_s"]
    lines += [
        "",
        f"memory per session: {memory['bytes_per_session_no_extra']:.0f} B without extra "
        f"(tuple {memory['tuple_bytes_no_extra']:.0f} + indexes {memory['index_bytes_no_extra']:.0f}), "
        f"{memory['bytes_per_session_extra_200']:.0f} B with a 200-byte extra",
        f"expiry: {expiry['purged']} sessions purged in {expiry['purge_s'] or float('nan'):.2f}s "
        f"({per_s or float('nan'):.0f}/s); get p99 {expiry['get_p99_ms_during_purge']:.2f} ms during, "
        f"{expiry['get_p99_ms_quiet']:.2f} ms without ({expiry['p99_ratio']:.2f}x), "
        f"{expiry['errors_during_purge']} errors",
        f"user/del of one user's {bulk['ended']} sessions: {bulk['seconds']:.2f}s "
        f"({bulk['ended_per_s']:.0f}/s); get p99 {bulk['get_p99_ms_during']:.2f} ms during, "
        f"{bulk['get_p99_ms_quiet']:.2f} ms without ({bulk['p99_ratio']:.2f}x), "
        f"{bulk['errors_during']} errors",
        f"recovery of {memory['recovered_sessions']} sessions: {memory['recovery_s_from_snapshot']:.2f}s "
        f"from a snapshot, {memory['recovery_s_from_wal']:.2f}s from the WAL alone",
    ]
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [
        load
        for load in report["loads"]
        if load["name"] not in ("baseline", "ceiling", "router", "router+wait")
    ]
    names = [load["name"] for load in loads]
    positions = range(len(loads))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(
        [p - 0.2 for p in positions],
        [load["ceiling_ratio"] for load in loads],
        width=0.4,
        color="#4a7ab5",
        label="x the low-level ceiling",
    )
    ax.bar(
        [p + 0.2 for p in positions],
        [load.get("redis_ratio") or 0 for load in loads],
        width=0.4,
        color="#d9822b",
        label="x the Redis peer's same load",
    )
    ax.set_xticks(list(positions), names)
    for target, label in ((0.8, "get target vs ceiling"), (0.6, "new target"), (0.5, "user/ip target")):
        ax.axhline(target, linestyle="--", linewidth=0.8, color="grey")
        ax.text(len(loads) - 0.5, target, label, fontsize=7, va="bottom", ha="right", color="grey")
    ax.legend(fontsize=8)
    ax.set_ylabel("requests/s ratio")
    ax.set_title(f"sessions {report['commit']}: throughput ratio at {report['connections']} connections")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8, help="duration of each load")
    parser.add_argument(
        "--rounds", type=int, default=4, help="turns the compared loads take, round-robin, in those seconds"
    )
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the scaling load")
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions for memory/expiry/recovery")
    parser.add_argument(
        "--loads-only", action="store_true", help="only the wrk loads (skip memory, expiry, bulk delete)"
    )
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sessions-bench-") as tmp:
        work = Path(tmp)
        loads = measure_loads(work, args)
        memory: dict[str, Any] = {}
        expiry: dict[str, Any] = {}
        bulk: dict[str, Any] = {}
        if not args.loads_only:
            memory = measure_memory_and_recovery(work, args.sessions)
            expiry = measure_expiry(work, args, args.sessions)
            bulk = measure_bulk_delete(work, args, 100_000)
    report = {
        "commit": commit or "unknown",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "connections": args.connections,
        "seconds": args.seconds,
        "loads": [asdict(load) for load in loads],
        "memory": memory,
        "expiry": expiry,
        "bulk_delete": bulk,
        "elapsed_s": time.monotonic() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{report['commit']}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    chart(report, RESULTS / f"{stem}.png")
    print(f"\nwritten: bench/results/{stem}.json and .png ({report['elapsed_s']:.0f}s in all)")


if __name__ == "__main__":
    main()
