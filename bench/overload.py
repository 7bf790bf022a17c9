"""`make bench`'s overload shapes (issue 25): what a client can make the service hold, each
shape beside a bystander `get` stream, with the memory of the service and of its Tarantool
before, at peak (sampled every 0.2 s during the shape) and 30 s after the shape ends.

- listings: 12 bursts of 300 concurrent `/user`, alternating a user with 1,000 sessions and
  one with 64 sessions of 64 KiB extra data.
- slow_readers: 200 concurrent `/user` of 1 MiB pages, read by clients with a small receive
  buffer at about 2 KB/s for 20 s, then closed.
- fat_json: 12 bursts of 300 `/user` of a user whose extra data is control characters (10 KB
  stored, 60 KB as JSON each); the largest page seen against SESSIONS_PAGE_MAX_BYTES.
- big_new: 12 bursts of 300 concurrent `/new`, each with just under 64 KiB of JSON extra.
- idle_flood: 1,100 connections that send nothing, held 10 s, against a service whose file
  descriptor limit is 1024 (soft and hard, as `prlimit --nofile=1024:1024` would set), while
  the bystander opens a fresh connection for every `get`.

A fresh service (and embedded Tarantool) serves each shape, so that the figures of one shape
do not carry into the next. The service runs from a checkout given by --root (this one by
default), so that two commits can be measured in the same run (`--root /tmp/before --root .`);
no SESSIONS_* setting beyond the data directory and the log level is set, so that an older
checkout (which refuses settings it does not know) runs the same way. Loopback only and
bounded in time (about four minutes a checkout; `--quick` about one). Nothing is
asserted: the issue's targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import Server

ROOT = Path(__file__).resolve().parent.parent
BIG_USER = 5_100_000_001  # 1,000 sessions: a 140 KB page, and the bystander's tokens
FAT_USER = 5_100_000_002  # 64 sessions of 64 KiB extra: 4 MiB of sessions
PAGE_USER = 5_100_000_003  # 1,000 sessions of 1.1 KB extra: 1.3 MB of JSON, a full page
CONTROL_USER = 5_100_000_004  # 120 sessions of 10,000 control characters: 60 KB of JSON each
NEW_USER = 5_100_000_005  # the sessions big_new makes
SHAPES = ("listings", "slow_readers", "fat_json", "big_new", "idle_flood")
GET_WORKERS = 8
SAMPLE_EVERY = 0.2
# The service's descriptor limit in idle_flood: the common soft limit the issue names.
FLOOD_NOFILE = 1024
# slow_readers: the clients' receive buffer (the kernel doubles it) and their pace.
SLOW_RCVBUF = 4096
SLOW_CHUNK = 512
SLOW_PAUSE = 0.25  # 512 bytes every 0.25 s: about 2 KB/s
# The targets, printed beside the figures.
TARGET_P99_FACTOR = 5
TARGET_P99_FLOOR_MS = 50
TARGET_PEAK_MB = 256
TARGET_SETTLE_MB = 64
# Sets a descriptor limit (soft and hard) and becomes the given Python command, keeping its
# pid: what `prlimit --nofile=N:N python ...` does, without needing util-linux.
WITH_NOFILE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


@dataclass
class Plan:
    """The counts and times of a run: the full one, or --quick's for development."""

    burst: int = 300
    bursts: int = 12
    slow_readers: int = 200
    slow_seconds: float = 20.0
    idle: int = 1100
    hold: float = 10.0
    quiet: float = 5.0
    settle: float = 30.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(burst=100, bursts=3, slow_readers=50, slow_seconds=8.0, hold=5.0, quiet=3.0, settle=5.0)


def rss_mb(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    """The largest RSS of some processes, sampled every SAMPLE_EVERY seconds in a thread (so
    that a busy event loop does not skip samples) while the block runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {name: rss_mb(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_mb(pid))


@dataclass
class Stream:
    """The `get` stream's answers in one window."""

    ok: int = 0
    failed: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        total = self.ok + self.failed
        return {
            "rps": round(total / self.seconds, 1) if self.seconds else 0,
            "success": round(self.ok / total, 4) if total else None,
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
            "total": total,
            "failed": self.failed,
            "codes": self.codes,
        }


def count(codes: dict[str, int], code: str, n: int = 1) -> None:
    codes[code] = codes.get(code, 0) + n


async def get_stream(base: str, tokens: list[str], *, fresh: bool) -> list[tuple[float, float, str]]:
    """GET_WORKERS closed loops of /get until SIGTERM (on kept-alive connections, or a fresh
    connection per request); then each answer's start time, latency and code. Run in a
    process of its own (`--stream`), so that the shapes' own client work does not slow it."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    samples: list[tuple[float, float, str]] = []

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        i = n
        while not stop.is_set():
            token = tokens[i % len(tokens)]
            i += GET_WORKERS
            wall, started = time.time(), time.perf_counter()
            try:
                async with session.get(f"{base}/get", headers={"X-Session-Token": token}) as answer:
                    body = await answer.json(content_type=None)
                    code = "success" if answer.status == 200 else body.get("code", str(answer.status))
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
                code = type(error).__name__
            samples.append((wall, time.perf_counter() - started, code))

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(force_close=fresh)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session, n) for n in range(GET_WORKERS)))
    return samples


def window(samples: list[list[Any]], start: float, end: float) -> Stream:
    """The stream's answers to requests sent between `start` and `end` (time.time())."""
    stream = Stream(seconds=end - start)
    for wall, latency, code in samples:
        if start <= wall < end:
            stream.latencies.append(latency)
            count(stream.codes, code)
            if code == "success":
                stream.ok += 1
            else:
                stream.failed += 1
    return stream


def envelope_code(status: int, body: bytes) -> str:
    if status == 200:
        return "success"
    try:
        return str(json.loads(body).get("code", status))
    except (ValueError, AttributeError):
        return str(status)


# --- the shapes ------------------------------------------------------------------------------


@dataclass
class Context:
    """What a shape gets: the service's address, the run's counts and the checkout's
    defaults (its page and extra data limits)."""

    base: str
    port: int
    plan: Plan
    defaults: dict[str, Any]


async def list_burst(base: str, user_id: int, size: int) -> tuple[dict[str, int], int]:
    """`size` listings of one user at once, each on its own connection; answers by code,
    and the largest body of a page."""
    codes: dict[str, int] = {}
    largest = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal largest
            try:
                async with session.get(f"{base}/user", params={"id": str(user_id)}) as answer:
                    body = await answer.read()
                    code = envelope_code(answer.status, body)
                    if answer.status == 200:
                        largest = max(largest, len(body))
            except (aiohttp.ClientError, TimeoutError) as error:
                code = type(error).__name__
            count(codes, code)

        await asyncio.gather(*(one() for _ in range(size)))
    return codes, largest


async def bursts_of_listings(ctx: Context, users: list[int]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    largest = 0
    for n in range(ctx.plan.bursts):
        burst_codes, burst_largest = await list_burst(ctx.base, users[n % len(users)], ctx.plan.burst)
        for code, k in burst_codes.items():
            count(codes, code, k)
        largest = max(largest, burst_largest)
    return {"codes": codes, "largest_page": largest}


async def listings(ctx: Context) -> dict[str, Any]:
    return await bursts_of_listings(ctx, [BIG_USER, FAT_USER])


async def fat_json(ctx: Context) -> dict[str, Any]:
    result = await bursts_of_listings(ctx, [CONTROL_USER])
    result["page_budget"] = ctx.defaults["page_max_bytes"]
    return result


async def slow_reader(
    addr: tuple[str, int], path: str, deadline: float, codes: dict[str, int], received: list[int]
) -> None:
    """One listing read a little at a time by a client with a small receive buffer, until
    `deadline` (time.monotonic()), the end of its answer, or the service closing it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)  # before connect: the window
    sock.setblocking(False)
    got = 0
    try:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            await loop.sock_connect(sock, addr)
            await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, SLOW_CHUNK)
                if not chunk:
                    count(codes, "closed before an answer")
                    return
                head += chunk
            got = len(head)
            head, _, body = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(
                (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")),
                None,
            )
            if status != 200:
                # A refusal is small: read it whole, at once.
                while length is not None and len(body) < length:
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk:
                        break
                    body += chunk
                count(codes, envelope_code(status, body))
                return
            read = len(body)
            while length is None or read < length:
                await asyncio.sleep(SLOW_PAUSE)
                chunk = await loop.sock_recv(sock, SLOW_CHUNK)
                if not chunk:
                    count(codes, "200, then closed by the service")
                    return
                read += len(chunk)
                got += len(chunk)
            count(codes, "200, read whole")
    except TimeoutError:
        count(codes, "200, still reading at the end" if got else "no answer by the end")
    except ConnectionResetError:
        count(codes, "200, then reset by the service" if got else "reset before an answer")
    except OSError as error:
        count(codes, type(error).__name__)
    finally:
        received.append(got)
        sock.close()


async def slow_readers(ctx: Context) -> dict[str, Any]:
    codes: dict[str, int] = {}
    received: list[int] = []
    deadline = time.monotonic() + ctx.plan.slow_seconds
    path = f"/user?id={PAGE_USER}"
    await asyncio.gather(
        *(
            slow_reader(("127.0.0.1", ctx.port), path, deadline, codes, received)
            for _ in range(ctx.plan.slow_readers)
        )
    )
    return {"codes": codes, "bytes_read": sum(received)}


async def big_new(ctx: Context) -> dict[str, Any]:
    # Just under the extra data limit as sent: `{"blob":"xxx...x"}`.
    size = ctx.defaults["extra_max_bytes"] - 64
    body = b'{"blob":"' + b"x" * (size - 11) + b'"}'
    assert len(body) == size
    codes: dict[str, int] = {}
    params = {"user_id": str(NEW_USER), "ip": "192.0.2.78"}
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    for _ in range(ctx.plan.bursts):
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(session: aiohttp.ClientSession = session) -> None:
                try:
                    async with session.post(
                        f"{ctx.base}/new", params=params, data=body, headers=headers
                    ) as answer:
                        code = envelope_code(answer.status, await answer.read())
                except (aiohttp.ClientError, TimeoutError) as error:
                    code = type(error).__name__
                count(codes, code)

            await asyncio.gather(*(one() for _ in range(ctx.plan.burst)))
    return {"codes": codes, "body_bytes": size}


async def idle_flood(ctx: Context) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    codes: dict[str, int] = {}
    opened: list[socket.socket] = []

    async def connect() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(3):
                await loop.sock_connect(sock, ("127.0.0.1", ctx.port))
        except (OSError, TimeoutError) as error:
            sock.close()
            count(codes, f"connect: {type(error).__name__}")
            return
        opened.append(sock)

    await asyncio.gather(*(connect() for _ in range(ctx.plan.idle)))
    count(codes, "opened", len(opened))

    async def watch(sock: socket.socket) -> None:
        # Nothing is sent, so anything but waiting is the service's doing.
        try:
            data = await loop.sock_recv(sock, 4096)
            count(codes, "closed by the service" if not data else "answered by the service")
        except OSError:
            count(codes, "reset by the service")

    watchers = [asyncio.create_task(watch(sock)) for sock in opened]
    await asyncio.sleep(ctx.plan.hold)
    count(codes, "open at the end", sum(not each.done() for each in watchers))
    for each in watchers:
        each.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    for sock in opened:
        sock.close()
    return {"codes": codes}


RUNS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "listings": listings,
    "slow_readers": slow_readers,
    "fat_json": fat_json,
    "big_new": big_new,
    "idle_flood": idle_flood,
}


# --- the service -----------------------------------------------------------------------------


async def seed(base: str, shape: str) -> list[str]:
    """The bystander's 1,000 sessions (of BIG_USER), and what the shape lists."""
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def new(user_id: int, extra: dict[str, Any] | None = None) -> str:
            params = {"user_id": str(user_id), "ip": "192.0.2.77"}
            async with session.post(f"{base}/new", params=params, json=extra) as answer:
                body = await answer.json()
                assert answer.status == 200, body
                return str(body["data"]["token"])

        tokens = await asyncio.gather(*(new(BIG_USER) for _ in range(1000)))
        if shape == "listings":
            await asyncio.gather(*(new(FAT_USER, {"blob": "x" * 65000}) for _ in range(64)))
        elif shape == "slow_readers":
            await asyncio.gather(*(new(PAGE_USER, {"pad": "x" * 1100}) for _ in range(1000)))
        elif shape == "fat_json":
            # 10,000 bytes stored each, 60,000 as JSON (\u0001); the body sent is as large.
            await asyncio.gather(*(new(CONTROL_USER, {"x": "\u0001" * 10000}) for _ in range(120)))
    return list(tokens)


def checkout_defaults(root: Path) -> dict[str, Any]:
    """The checkout's settings and their defaults (whether it knows the memory budgets, its
    page and extra data limits), from its own code."""
    code = (
        "import json; from sessions.config import Settings; "
        "print(json.dumps({name: f.default if isinstance(f.default, (int, float)) else None "
        "for name, f in Settings.model_fields.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True, timeout=60
    )
    defaults: dict[str, Any] = json.loads(out.stdout)
    return defaults


class Served(Server):
    """`python -m sessions serve` from the checkout `root`, on a free port; with `nofile`,
    under that file descriptor limit (soft and hard)."""

    def __init__(self, root: Path, *, nofile: int | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sessions-overload-"))
        env = {
            "PYTHONPATH": str(root),
            "SESSIONS_DATA_DIR": str(self.workdir / "var"),
            "SESSIONS_LOG_LEVEL": "WARNING",
        }
        # `python -m` imports from the working directory first: the checkout's own.
        command = [sys.executable, "-m", "sessions", "serve"]
        if nofile is not None:
            command = [sys.executable, "-c", WITH_NOFILE, str(nofile), *command[1:]]
        super().__init__(command, env, self.workdir / "service.log", cwd=root)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def metrics_of_interest(text: str) -> dict[str, float]:
    """The shedding and the connections the service closed, from /metrics."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("sessions_requests_total{") and 'code="overloaded"' in name:
            found["overloaded"] = found.get("overloaded", 0) + float(value)
        elif name.startswith(("sessions_shed_total{", "sessions_connections_closed_total{")) or (
            name.startswith("sessions_fds_exhausted_total")
        ):
            found[name] = found.get(name, 0) + float(value)
    return {name: value for name, value in found.items() if value}


async def run_shape(served: Served, ctx: Context, shape: str) -> dict[str, Any]:
    process, workdir, plan = served.process, served.workdir, ctx.plan
    tokens = await seed(ctx.base, shape)
    pids = {"service": process.pid, "tarantool": int((workdir / "var" / "tarantool.pid").read_text())}

    (workdir / "tokens.json").write_text(json.dumps(tokens))
    samples_file = workdir / "samples.json"
    fresh = ["--fresh"] if shape == "idle_flood" else []
    streamer = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--stream",
        ctx.base,
        str(workdir / "tokens.json"),
        str(samples_file),
        *fresh,
    )
    await asyncio.sleep(1)  # the stream's own start-up is not the quiet window
    quiet_start = time.time()
    await asyncio.sleep(plan.quiet)
    before = {name: rss_mb(pid) for name, pid in pids.items()}
    shape_start = time.time()
    with Peak(pids) as peak:
        outcome = await RUNS[shape](ctx)
    shape_end = time.time()
    streamer.send_signal(signal.SIGTERM)
    await streamer.wait()
    samples = json.loads(samples_file.read_text())
    quiet, during = window(samples, quiet_start, shape_start), window(samples, shape_start, shape_end)
    await asyncio.sleep(plan.settle)
    after = {name: rss_mb(pid) for name, pid in pids.items()}
    async with aiohttp.ClientSession() as session, session.get(f"{ctx.base}/metrics") as answer:
        metrics = await answer.text()
    return {
        "shape": shape,
        "seconds": round(shape_end - shape_start, 1),
        "get_quiet": quiet.summary(),
        "get_during": during.summary(),
        "rss_mb": {
            name: {
                "before": round(before[name], 1),
                "peak": round(peak.peak[name], 1),
                "after": round(after[name], 1),
            }
            for name in pids
        },
        "outcome": outcome,
        "metrics": metrics_of_interest(metrics),
    }


def measure(root: Path, shape: str, plan: Plan, defaults: dict[str, Any]) -> dict[str, Any]:
    served = Served(root, nofile=FLOOD_NOFILE if shape == "idle_flood" else None)
    try:
        ctx = Context(f"http://127.0.0.1:{served.port}", served.port, plan, defaults)
        return asyncio.run(run_shape(served, ctx, shape))
    finally:
        served.stop()


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary_line(checkout: str, result: dict[str, Any]) -> str:
    quiet, during = result["get_quiet"], result["get_during"]
    q99, d99 = quiet["p99_ms"], during["p99_ms"]
    ratio = f"{d99 / q99:.1f}x" if q99 and d99 else "-"
    limit = max(TARGET_P99_FACTOR * q99, TARGET_P99_FLOOR_MS) if q99 else TARGET_P99_FLOOR_MS
    service, tarantool = result["rss_mb"]["service"], result["rss_mb"]["tarantool"]
    outcome = result["outcome"]
    settled = service["after"] <= service["before"] + TARGET_SETTLE_MB
    targets = [
        f"all gets 200 {verdict(during['failed'] == 0 and during['total'] > 0)}",
        f"p99<={limit:.0f}ms {verdict(d99 is not None and d99 <= limit)}",
        f"peak<={TARGET_PEAK_MB}MB {verdict(service['peak'] <= TARGET_PEAK_MB)}",
        f"after<=start+{TARGET_SETTLE_MB}MB {verdict(settled)}",
    ]
    extra = ""
    if "page_budget" in outcome:
        # One session of CONTROL_USER is about 60 KB of JSON.
        allowed = outcome["page_budget"] + 61_000
        extra = f"; largest page {outcome['largest_page']} B (budget {outcome['page_budget']} B)"
        targets.append(f"page<=budget+1 session {verdict(outcome['largest_page'] <= allowed)}")
    elif "bytes_read" in outcome:
        extra = f"; {outcome['bytes_read']} B read"
    return (
        f"{checkout} {result['shape']} ({result['seconds']} s): get p99 quiet {q99} ms, during {d99} ms "
        f"({ratio}), success {during['success']} of {during['total']}; service RSS {service['before']} / "
        f"{service['peak']} / {service['after']} MB, tarantool RSS {tarantool['before']} / "
        f"{tarantool['peak']} / {tarantool['after']} MB (before / peak / after); "
        f"{json.dumps(outcome['codes'])}{extra} | targets: {', '.join(targets)}"
    )


def raise_own_fd_limit() -> None:
    """idle_flood's 1,100 sockets need more than the common soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", action="append", type=Path, help="checkouts to measure, in order")
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts and 5 s to settle, for development"
    )
    parser.add_argument(
        "--slow-readers", type=int, help="concurrent slow readers (default 200, 50 with --quick)"
    )
    parser.add_argument("--stream", nargs=3, metavar=("URL", "TOKENS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        base, tokens, out = args.stream
        samples = asyncio.run(get_stream(base, json.loads(Path(tokens).read_text()), fresh=args.fresh))
        Path(out).write_text(json.dumps(samples))
        return
    shapes = [shape.strip() for shape in args.shapes.split(",") if shape.strip()]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    plan = Plan.quick() if args.quick else Plan()
    if args.slow_readers is not None:
        plan.slow_readers = args.slow_readers
    raise_own_fd_limit()
    lines = []
    for root in args.root or [ROOT]:
        resolved = root.resolve()
        defaults = checkout_defaults(resolved)
        budgets = "max_connections" in defaults
        print(f"# {root}: memory budgets {'known' if budgets else 'unknown'} to this checkout", flush=True)
        for shape in shapes:
            result = measure(resolved, shape, plan, defaults)
            result["checkout"] = str(root)
            print(json.dumps(result), flush=True)
            lines.append(summary_line(str(root), result))
            print(lines[-1], flush=True)
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
