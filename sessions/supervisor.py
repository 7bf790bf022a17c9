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
import subprocess
import sys
import time

from .config import Settings
from .embedded import EmbeddedTarantool

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
        return subprocess.Popen([sys.executable, "-m", "sessions", "worker"], env=self._env)

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
    password = settings.service_password()
    embedded = None
    tarantool = settings.tarantool
    stopping = asyncio.Event()
    status = 0
    watchdog = None

    def give_up() -> None:
        nonlocal status
        status = 1
        stopping.set()

    if settings.embedded:
        embedded = EmbeddedTarantool.from_settings(settings, password=password)
        await embedded.start()
        tarantool = f"unix/:{embedded.socket_path}"
        watchdog = asyncio.create_task(embedded.watch(give_up))
    assert tarantool is not None
    env = {
        **os.environ,
        "SESSIONS_TARANTOOL": tarantool,
        "SESSIONS_TARANTOOL_PASSWORD": password,
        "SESSIONS_WORKERS": "1",
    }

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    workers = [_Worker(number, env) for number in range(settings.workers)]
    log.info("supervising %d workers on http://%s:%d", len(workers), settings.host, settings.port)
    try:
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
    finally:
        processes = [w.process for w in workers if w.process.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        if not await _wait(processes, settings.shutdown_timeout):
            log.warning("workers did not stop in %.1fs, killing them", settings.shutdown_timeout)
            for process in processes:
                process.kill()
            await _wait(processes, 5.0)
        if embedded is not None:
            await embedded.stop()
        if watchdog is not None:
            await watchdog
    return status
