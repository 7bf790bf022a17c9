"""Several worker processes serving one port (SO_REUSEPORT) and sharing one Tarantool.

The supervisor owns the embedded Tarantool, if any, starts the workers as `sessions worker`
pointed at it, restarts a worker that dies, and on SIGINT or SIGTERM stops the workers
first and Tarantool last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .children import spawn
from .config import Settings
from .embedded import embedded_tarantool

__all__ = ["supervise"]

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is broken, not unlucky: restarting
# it would only loop, so the whole service stops instead.
_EARLY_EXIT = 5.0
_POLL = 0.2


class _Worker:
    def __init__(self, number: int, env: dict[str, str]) -> None:
        self.number = number
        self._env = env
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        # A worker dies with the supervisor, so none is left holding the port.
        return spawn([sys.executable, "-m", "sessions", "worker"], env=self._env)

    def respawn(self) -> None:
        self.process = self._spawn()


async def _wait(processes: list[subprocess.Popen[bytes]], within: float) -> bool:
    deadline = time.monotonic() + within
    while any(p.poll() is None for p in processes):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def supervise(settings: Settings) -> int:
    stopping = asyncio.Event()
    status = 0

    def give_up() -> None:
        nonlocal status
        status = 1
        stopping.set()

    _check_port_free(settings)
    password = settings.service_password()
    async with contextlib.AsyncExitStack() as stack:
        tarantool = settings.tarantool
        if settings.embedded:
            embedded = await stack.enter_async_context(
                embedded_tarantool(settings, password=password, on_fatal=give_up)
            )
            tarantool = f"unix/:{embedded.socket_path}"
        assert tarantool is not None
        # Each worker's counts, for every worker's /metrics; gone with the supervisor.
        shared = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sessions-metrics-")))
        env = {
            **os.environ,
            "SESSIONS_TARANTOOL": tarantool,
            "SESSIONS_TARANTOOL_PASSWORD": password,
            "SESSIONS_WORKERS": "1",
            "SESSIONS_METRICS_DIR": str(shared),
        }

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)

        workers = [_Worker(number, env) for number in range(settings.workers)]
        # Workers stop before Tarantool: the exit stack unwinds in reverse.
        stack.push_async_callback(_stop_workers, workers, settings.shutdown_timeout)
        log.info("supervising %d workers on %s", len(workers), settings.url(settings.port))
        while not stopping.is_set():
            for worker in workers:
                code = worker.process.poll()
                if code is None:
                    continue
                if time.monotonic() - worker.started < _EARLY_EXIT:
                    log.error("worker %d exited with code %d at start; stopping", worker.number, code)
                    status = 1
                    stopping.set()
                    break
                log.warning("worker %d exited with code %d; restarting it", worker.number, code)
                worker.respawn()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), _POLL)
    return status


async def _stop_workers(workers: list[_Worker], within: float) -> None:
    processes = [w.process for w in workers if w.process.poll() is None]
    for process in processes:
        process.send_signal(signal.SIGTERM)
    if not await _wait(processes, within):
        log.warning("workers did not stop in %.1fs, killing them", within)
        for process in processes:
            process.kill()
        await _wait(processes, 5.0)


def _check_port_free(settings: Settings) -> None:
    """Refuse to start beside anything already listening on the port.

    Workers share the port through SO_REUSEPORT, which would just as gladly share it with
    a stray left from an earlier run. A plain bind, without that option, fails whenever
    anything listens there.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:
            raise OSError(f"{settings.url(settings.port)} is already in use: {error.strerror}") from None
