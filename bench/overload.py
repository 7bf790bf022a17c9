"""`make bench`'s overload scenario: a steady `get` stream, quiet and then during bursts of
300 concurrent listings, with the memory of both processes before, after and 30 s later.

The service runs from a checkout given by --root (this one by default), so that two commits
can be measured one after the other in the same run (`--root /tmp/before --root .`). Loopback
only and bounded in time (about 90 s a checkout). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import Server

ROOT = Path(__file__).resolve().parent.parent
BIG_USER = 5_100_000_001  # 1,000 sessions: a 140 KB page
FAT_USER = 5_100_000_002  # 64 sessions of 64 KiB extra: 4 MiB of sessions
BURST = 300
BURSTS = 12
GET_WORKERS = 8


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
            "failed": self.failed,
            "codes": self.codes,
        }


async def get_stream(base: str, tokens: list[str]) -> list[tuple[float, float, str]]:
    """GET_WORKERS closed loops of /get until SIGTERM; then each answer's start time,
    latency and code go to `out` as JSON. Run in a process of its own (`--stream`), so that
    the bursts' own client work does not slow it down."""
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
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session, n) for n in range(GET_WORKERS)))
    return samples


def window(samples: list[list[Any]], start: float, end: float) -> Stream:
    """The stream's answers to requests sent between `start` and `end` (time.time())."""
    stream = Stream(seconds=end - start)
    for wall, latency, code in samples:
        if start <= wall < end:
            stream.latencies.append(latency)
            stream.codes[code] = stream.codes.get(code, 0) + 1
            if code == "success":
                stream.ok += 1
            else:
                stream.failed += 1
    return stream


async def burst(base: str, user_id: int) -> dict[str, int]:
    """BURST listings of one user at once, each on its own connection; answers by code."""
    codes: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.get(f"{base}/user", params={"id": str(user_id)}) as answer:
                    body = await answer.read()
                    code = "success" if answer.status == 200 else json.loads(body).get("code", "?")
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                code = type(error).__name__
            codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(one() for _ in range(BURST)))
    return codes


async def seed(base: str) -> list[str]:
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def new(user_id: int, extra: dict[str, Any] | None = None) -> str:
            params = {"user_id": str(user_id), "ip": "192.0.2.77"}
            async with session.post(f"{base}/new", params=params, json=extra) as answer:
                body = await answer.json()
                assert answer.status == 200, body
                return str(body["data"]["token"])

        tokens = await asyncio.gather(*(new(BIG_USER) for _ in range(1000)))
        await asyncio.gather(*(new(FAT_USER, {"blob": "x" * 65000}) for _ in range(64)))
    return list(tokens)


class Served(Server):
    """`python -m sessions serve` from the checkout `root`, on a free port."""

    def __init__(self, root: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sessions-overload-"))
        env = {
            "PYTHONPATH": str(root),
            "SESSIONS_DATA_DIR": str(self.workdir / "var"),
            "SESSIONS_LOG_LEVEL": "WARNING",
        }
        # `python -m` imports from the working directory first: the checkout's own.
        command = [sys.executable, "-m", "sessions", "serve"]
        super().__init__(command, env, self.workdir / "service.log", cwd=root)


async def scenario(served: Served, label: str) -> dict[str, Any]:
    process, workdir = served.process, served.workdir
    base = f"http://127.0.0.1:{served.port}"
    tokens = await seed(base)
    tarantool_pid = int((workdir / "var" / "tarantool.pid").read_text())
    rss = {"before": {"tarantool": rss_mb(tarantool_pid), "service": rss_mb(process.pid)}}
    service_peak = rss["before"]["service"]

    (workdir / "tokens.json").write_text(json.dumps(tokens))
    samples_file = workdir / "samples.json"
    streamer = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--stream", base, str(workdir / "tokens.json"), str(samples_file)
    )
    await asyncio.sleep(1)  # the stream's own start-up is not the quiet window
    quiet_start = time.time()
    await asyncio.sleep(5)
    bursts_start = time.time()
    listings: dict[str, int] = {}
    for n in range(BURSTS):
        codes = await burst(base, BIG_USER if n % 2 == 0 else FAT_USER)
        for code, count in codes.items():
            listings[code] = listings.get(code, 0) + count
        service_peak = max(service_peak, rss_mb(process.pid))
        if n == 3:
            rss["after 4 bursts"] = {"tarantool": rss_mb(tarantool_pid), "service": rss_mb(process.pid)}
    bursts_end = time.time()
    streamer.send_signal(signal.SIGTERM)
    await streamer.wait()
    samples = json.loads(samples_file.read_text())
    windows = [window(samples, quiet_start, bursts_start), window(samples, bursts_start, bursts_end)]
    rss["after 12 bursts"] = {"tarantool": rss_mb(tarantool_pid), "service": rss_mb(process.pid)}
    await asyncio.sleep(30)
    rss["30 s later"] = {"tarantool": rss_mb(tarantool_pid), "service": rss_mb(process.pid)}
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as answer:
        metrics = await answer.text()
    shed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sessions_requests_total{") and 'code="overloaded"' in line
    )
    return {
        "checkout": label,
        "get_quiet": windows[0].summary(),
        "get_bursts": windows[1].summary(),
        "bursts_seconds": round(bursts_end - bursts_start, 1),
        "listings": listings,
        "listings_shed_in_metrics": shed,
        "rss_mb": {k: {p: round(v, 1) for p, v in d.items()} for k, d in rss.items()},
        "service_peak_mb": round(service_peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", action="append", type=Path, help="checkouts to measure, in order")
    parser.add_argument("--stream", nargs=3, metavar=("URL", "TOKENS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        base, tokens, out = args.stream
        samples = asyncio.run(get_stream(base, json.loads(Path(tokens).read_text())))
        Path(out).write_text(json.dumps(samples))
        return
    results = []
    for root in args.root or [ROOT]:
        served = Served(root.resolve())
        try:
            result = asyncio.run(scenario(served, str(root)))
        finally:
            served.stop()
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    for result in results:
        quiet, loaded = result["get_quiet"], result["get_bursts"]
        ratio = loaded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] and loaded["p99_ms"] else None
        print(
            f"{result['checkout']}: get quiet {quiet['rps']}/s p99 {quiet['p99_ms']} ms "
            f"success {quiet['success']}; during bursts {loaded['rps']}/s p99 {loaded['p99_ms']} ms "
            f"({ratio and round(ratio, 1)}x quiet) success {loaded['success']}; "
            f"listings {result['listings']}; RSS {result['rss_mb']}; service peak "
            f"{result['service_peak_mb']} MB"
        )


if __name__ == "__main__":
    main()
