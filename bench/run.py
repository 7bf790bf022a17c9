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
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sessions.config import Settings
from sessions.console import Console
from sessions.embedded import EmbeddedTarantool
from sessions.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk" / "sessions.lua"
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench-password"
BENCH_USER = 4242424242
BENCH_IP = "198.51.100.10"
DAY = 86400
# Rows that measure the stack rather than the service, left out of the chart.
REFERENCES = ("baseline", "ceiling", "router", "router+wait")
# The loads measured against the Redis peer's same load.
COMPARED = ("get", "new", "user", "ip")

# Lua for the admin console: `n` sessions with random users and IPv4 addresses, all last
# active at `ts` and due to expire at `expires`, inserted 1000 to a transaction; fields by
# name (the layout is tarantool/sessions/fields.lua's). No line comments: the console gets
# one line.
INSERT_LUA = """
local uuid = require('uuid') local s = box.space.sessions local ts = {ts} local extra = {extra}
for i = 1, {n}, 1000 do
    box.begin()
    for j = i, math.min(i + 999, {n}) do
        s:insert(s:frommap({{token = uuid.new(), user_id = math.random(1, 5000000),
            ip = ('%d.%d.%d.%d'):format(math.random(1, 223), math.random(0, 255),
                math.random(0, 255), math.random(1, 254)),
            create = ts, activity = ts, extra = extra, expires = {expires},
            seq = box.sequence.sessions_seq:next()}}))
    end
    box.commit()
end
return s:len()
"""
# `per_user` sessions for each of `users` users from `first` on; the tokens of the first
# session of every user go to the file `tokens` (for loads that use each token once).
USERS_LUA = """
local uuid = require('uuid') local fio = require('fio') local s = box.space.sessions
local ts = require('sessions.clock').now() local out = {{}}
for u = 0, {users} - 1 do
    box.begin()
    for k = 1, {per_user} do
        local token = uuid.new()
        s:insert(s:frommap({{token = token, user_id = {first} + u, ip = '192.0.2.33', create = ts,
            activity = ts, expires = ts + 86400, seq = box.sequence.sessions_seq:next()}}))
        if k == 1 then out[#out + 1] = token:str() end
    end
    box.commit()
end
local f = fio.open('{tokens}', {{'O_WRONLY', 'O_CREAT', 'O_TRUNC'}}, tonumber('644', 8))
f:write(table.concat(out, '\\n') .. '\\n') f:close()
return #out
"""
# Users whose sessions the `user_del` and `rotate` loads use up, one user per request.
DEL_USER_BASE = 7_000_000_000
NO_EXTRA = "box.NULL"
EXTRA_200 = "setmetatable({device = string.rep('x', 190)}, {__serialize = 'map'})"
MEMORY_LUA = """
local si = box.slab.info() local s = box.space.sessions local index = 0
for _, name in ipairs({'token', 'user', 'ip', 'expires'}) do index = index + s.index[name]:bsize() end
return {arena = si.arena_used, items = si.items_used, index = index}
"""


@dataclass
class Load:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio: float | None = None  # against the Application baseline
    p99_ratio: float | None = None
    ceiling_ratio: float | None = None  # against the low-level constant responder
    ceiling_p99_ratio: float | None = None
    redis_ratio: float | None = None  # against the Redis peer's same load, where it has one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


class Server:
    """A server process on a free port, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, cwd: Path | None = None) -> None:
        self.port = free_port()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                args,
                env={**os.environ, **env, "SESSIONS_PORT": str(self.port)},
                stdout=out,
                stderr=out,
                cwd=cwd,
            )
        wait_port(self.port, self.process)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wrk(port: int, mode: str, *, seconds: float, connections: int, files: dict[str, str]) -> Load:
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_USER": str(BENCH_USER), "BENCH_IP": BENCH_IP, **files}
    # wrk takes whole seconds only.
    duration = f"-d{max(1, round(seconds))}s"
    command = ["wrk", "-t1", f"-c{connections}", duration, "--timeout", "5s", "-s", str(WRK_SCRIPT)]
    result = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    return Load(
        name=mode,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"] + data["non_2xx"],
    )


async def seed(socket_path: Path, workdir: Path, *, get_tokens: int, del_tokens: int) -> dict[str, str]:
    """Sessions for the loads, written straight through the storage adapter; token files."""
    storage = Storage(
        [("unix/", str(socket_path))],
        Settings(tarantool_user="sessions", tarantool_timeout=10),
        password=PASSWORD,
    )
    await storage.connect()
    try:

        async def many(count: int, user_id: int | None = None, ip: str | None = None) -> list[str]:
            tokens: list[str] = []
            while len(tokens) < count:
                batch = min(500, count - len(tokens))
                made = await asyncio.gather(
                    *(
                        storage.new(user_id or random.randrange(1, 10**9), ip or "192.0.2.1", None)
                        for _ in range(batch)
                    )
                )
                tokens += [session["token"] for session in made]
            return tokens

        await many(10, user_id=BENCH_USER)
        await many(10, ip=BENCH_IP)
        files = {}
        for name, count in (("BENCH_TOKENS", get_tokens), ("BENCH_DEL_TOKENS", del_tokens)):
            path = workdir / f"{name.lower()}.txt"
            path.write_text("\n".join(await many(count)) + "\n")
            files[name] = str(path)
        return files
    finally:
        await storage.close()


def service(data_dir: Path, log: Path, **env: str) -> Server:
    settings = {"SESSIONS_DATA_DIR": str(data_dir), "SESSIONS_TARANTOOL_PASSWORD": PASSWORD, **env}
    return Server([sys.executable, "-m", "sessions", "serve"], settings, log)


def instance(
    data_dir: Path, *, memory: int = 3 * 2**30, environment: dict[str, str] | None = None
) -> EmbeddedTarantool:
    return EmbeddedTarantool(
        data_dir=data_dir,
        scripts_dir=ROOT / "tarantool",
        binary="tarantool",
        user="sessions",
        password=PASSWORD,
        memory=memory,
        wal_mode="write",
        idle_ttl=180 * DAY,
        startup_timeout=120,
        shutdown_timeout=60,
        environment=environment,
    )


def insert(console: Console, count: int, *, ts: int, extra: str = NO_EXTRA, ttl: int = 180 * DAY) -> int:
    return int(console.eval(INSERT_LUA.format(n=count, ts=ts, extra=extra, expires=f"ts + {ttl}")))


def users(console: Console, work: Path, *, first: int, count: int, per_user: int, name: str) -> str:
    """`count` users with `per_user` sessions each; the path of their first tokens' file."""
    path = work / f"{name}.txt"
    console.eval(USERS_LUA.format(users=count, per_user=per_user, first=first, tokens=path))
    return str(path)


def constant(script: str, name: str, work: Path, *extra: str) -> Server:
    """One of the constant responders, started."""
    return Server([sys.executable, str(ROOT / "bench" / script), *extra], {}, work / f"{name}.log")


@contextlib.contextmanager
def redis_peer(work: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """bench/redis_peer.py on a redis-server of its own (append-only file written without
    fsync, like Tarantool's WAL mode `write`), seeded like the service; its port and files."""
    port = free_port()
    (work / "redis").mkdir()
    redis_server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "no",
            "--dir",
            str(work / "redis"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, redis_server)
        peer = Server(
            [sys.executable, str(ROOT / "bench" / "redis_peer.py")],
            {"REDIS_PORT": str(port)},
            work / "redis-peer.log",
        )
        try:

            def new(query: str) -> str:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{peer.port}/new?{query}", timeout=10
                ) as answer:
                    return str(json.load(answer)["data"]["token"])

            for _ in range(10):
                new(f"user_id={BENCH_USER}&ip=192.0.2.1")
                new(f"user_id={random.randrange(1, 10**9)}&ip={BENCH_IP}")
            tokens = [new(f"user_id={random.randrange(1, 10**9)}&ip=192.0.2.1") for _ in range(1000)]
            path = work / "redis-tokens.txt"
            path.write_text("\n".join(tokens) + "\n")
            yield peer.port, {"BENCH_TOKENS": str(path)}
        finally:
            peer.stop()
    finally:
        redis_server.terminate()
        redis_server.wait(timeout=30)


def interleaved(targets: list[tuple[str, int, str, dict[str, str]]], args: argparse.Namespace) -> list[Load]:
    """Each (name, port, mode, files) load for `args.seconds` in all, in `args.rounds` turns
    taken round-robin, every other round backwards, so that the machine's drifts (these
    machines change speed by tens of percent within a minute) fall on every load alike.
    Rates are the mean of the turns; latencies the median turn's."""
    burst = args.seconds / args.rounds
    rounds: dict[str, list[Load]] = {name: [] for name, *_ in targets}
    for turn in range(args.rounds):
        # Every other round backwards, so that no load always follows the same one.
        for name, port, mode, files in targets if turn % 2 == 0 else reversed(targets):
            rounds[name].append(wrk(port, mode, seconds=burst, connections=args.connections, files=files))
    loads = []
    for name, measured in rounds.items():
        loads.append(
            Load(
                name=name,
                rps=statistics.mean(load.rps for load in measured),
                p50_ms=statistics.median(load.p50_ms for load in measured),
                p99_ms=statistics.median(load.p99_ms for load in measured),
                errors=sum(load.errors for load in measured),
            )
        )
    return loads


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
