"""The bench's harness, shared by its scenarios (run.py, overload.py, sync.py, soak.py,
compare.py, profile.py): servers and Tarantool instances started for a measurement, the
sessions seeded for the loads, wrk runs and their figures, and loads taken in interleaved
turns. Loopback only; nothing here measures anything by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sessions.config import Settings
from sessions.console import Console
from sessions.embedded import EmbeddedTarantool
from sessions.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk" / "sessions.lua"
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench-password-8d1f0c2e"
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
            seq = require('sessions.schema').next_seq(), id = require('sessions.ids').make()}}))
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
            activity = ts, expires = ts + 86400, seq = require('sessions.schema').next_seq(),
            id = require('sessions.ids').make()}}))
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
    data_dir: Path,
    *,
    memory: int = 3 * 2**30,
    environment: dict[str, str] | None = None,
    binary: str = "tarantool",
) -> EmbeddedTarantool:
    return EmbeddedTarantool(
        data_dir=data_dir,
        scripts_dir=ROOT / "tarantool",
        binary=binary,
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
