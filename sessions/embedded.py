"""The embedded Tarantool: a child process on the project's Lua, with its data in one folder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from .children import spawn
from .config import Settings, TarantoolAddress

__all__ = ["EmbeddedError", "EmbeddedTarantool", "embedded_tarantool"]

log = logging.getLogger(__name__)

# More restarts than this within the window mean Tarantool cannot run here: stop trying.
_MAX_RESTARTS = 5
# The wait before a restart doubles with each recent one, up to 2^5 times the first:
# 0.25 s to 8 s with the default SESSIONS_RESTART_BACKOFF.
_BACKOFF_DOUBLINGS = 5
_RESTART_WINDOW = 60

# sockaddr_un holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class EmbeddedError(RuntimeError):
    """The embedded Tarantool could not be started."""


class EmbeddedTarantool:
    """Starts and stops one Tarantool process that only this service talks to."""

    def __init__(
        self,
        *,
        data_dir: Path,
        scripts_dir: Path,
        binary: str,
        user: str,
        password: str,
        memory: int,
        wal_mode: str,
        idle_ttl: int,
        max_lifetime: int | None = None,
        startup_timeout: float,
        shutdown_timeout: float,
        restart_backoff: float = 0.25,
        environment: Mapping[str, str] | None = None,
        script: str = "init.lua",
    ) -> None:
        self._backoff = restart_backoff
        self.data_dir = data_dir.resolve()
        self.socket_path = self.data_dir / "tarantool.sock"
        self.console_path = self.data_dir / "tarantool.control"
        self.log_path = self.data_dir / "tarantool.log"
        self.pid_path = self.data_dir / "tarantool.pid"
        # init.lua; the sharded mode's storages and routers have entry scripts of their own.
        self._init_script = scripts_dir.resolve() / script
        self._binary = binary
        self._env = {
            "SESSIONS_TT_LISTEN": f"unix/:{self.socket_path}",
            "SESSIONS_TT_CONSOLE_SOCKET": str(self.console_path),
            "SESSIONS_TT_WORK_DIR": str(self.data_dir),
            "SESSIONS_TT_LOG": str(self.log_path),
            "SESSIONS_TT_PID_FILE": str(self.pid_path),
            "SESSIONS_TT_MEMTX_MEMORY": str(memory),
            "SESSIONS_TT_WAL_MODE": wal_mode,
            "SESSIONS_TARANTOOL_USER": user,
            "SESSIONS_TARANTOOL_PASSWORD": password,
            "SESSIONS_IDLE_TTL": str(idle_ttl),
            "SESSIONS_MAX_LIFETIME": str(max_lifetime or 0),
            # More of init.lua's settings, e.g. SESSIONS_ROLE and SESSIONS_PRIMARY for a replica.
            **(environment or {}),
        }
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._wanted = False

    @classmethod
    def from_settings(cls, settings: Settings, *, password: str) -> EmbeddedTarantool:
        return cls(
            data_dir=settings.data_dir,
            scripts_dir=settings.tarantool_scripts,
            binary=settings.tarantool_bin,
            user=settings.tarantool_user,
            password=password,
            memory=settings.tarantool_memory,
            wal_mode=settings.wal_mode,
            idle_ttl=settings.idle_ttl,
            max_lifetime=settings.max_lifetime,
            startup_timeout=settings.startup_timeout,
            shutdown_timeout=settings.shutdown_timeout,
            restart_backoff=settings.restart_backoff,
        )

    @property
    def address(self) -> TarantoolAddress:
        return "unix/", str(self.socket_path)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        self._wanted = True
        binary = shutil.which(self._binary)
        if binary is None:
            raise EmbeddedError(
                f"{self._binary!r} not found: install Tarantool (apt-get install tarantool) "
                "or point SESSIONS_TARANTOOL at a running instance"
            )
        if not self._init_script.is_file():
            raise EmbeddedError(f"Tarantool scripts not found: {self._init_script}")
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedError(f"data dir path is too long for a unix socket: {self.data_dir}")
        _private_dir(self.data_dir)
        self._remove_stale_sockets()
        env = {**os.environ, **self._env}
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(log_fd, "ab") as log_file:
            self._process = spawn(
                [binary, str(self._init_script)],
                cwd=self.data_dir,
                env=env,
                output=log_file,
                new_session=True,  # Ctrl-C reaches the service, which stops Tarantool in order
            )
        log.info("embedded tarantool started, pid %d, data in %s", self._process.pid, self.data_dir)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._wanted = False
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        if not await self._wait_exit(process, self._shutdown_timeout):
            log.warning("embedded tarantool did not stop in %.1fs, killing it", self._shutdown_timeout)
            process.kill()
            await self._wait_exit(process, 5.0)
        log.info("embedded tarantool stopped, exit code %s", process.returncode)

    async def watch(self, on_fatal: Callable[[], None]) -> None:
        """Restart Tarantool whenever it dies, backing off; call `on_fatal` when it keeps dying.

        Runs until cancelled (see `embedded_tarantool`). The service's connection reconnects
        by itself meanwhile and answers 503 until Tarantool is back.
        """
        restarts: deque[float] = deque()
        while self._wanted:
            await asyncio.sleep(0.2)
            process = self._process
            if not self._wanted or process is None or process.poll() is None:
                continue
            log.error("embedded tarantool exited with code %s; restarting it", process.returncode)
            while self._wanted:
                now = time.monotonic()
                while restarts and now - restarts[0] > _RESTART_WINDOW:
                    restarts.popleft()
                if len(restarts) >= _MAX_RESTARTS:
                    log.error(
                        "embedded tarantool died %d times in %ds; giving up: %s",
                        _MAX_RESTARTS,
                        _RESTART_WINDOW,
                        self._log_tail(),
                    )
                    on_fatal()
                    return
                await asyncio.sleep(self._backoff * 2 ** min(len(restarts), _BACKOFF_DOUBLINGS))
                restarts.append(time.monotonic())
                try:
                    await self.start()
                except EmbeddedError as error:
                    log.error("restarting embedded tarantool failed: %s", error)
                    self._wanted = True  # start() cleaned up after itself; keep trying
                    continue
                log.info("embedded tarantool is back")
                break

    async def _wait_ready(self) -> None:
        # init.lua starts listening only once the schema and procedures are in place.
        deadline = time.monotonic() + self._startup_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"tarantool exited with code {self._process.returncode}: {self._log_tail()}"
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_unix_connection(str(self.socket_path))
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"tarantool did not start in {self._startup_timeout:.0f}s: {self._log_tail()}"
                )
            await asyncio.sleep(0.05)

    @staticmethod
    async def _wait_exit(process: subprocess.Popen[bytes], within: float) -> bool:
        deadline = time.monotonic() + within
        while process.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _remove_stale_sockets(self) -> None:
        # Sockets left by a killed instance would make the new one fail to listen, but
        # one that still answers belongs to a live instance on this same data dir.
        for path in (self.socket_path, self.console_path):
            if not path.exists():
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink(missing_ok=True)
                    continue
            raise EmbeddedError(f"another Tarantool is already running on {self.data_dir}")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in tail) or "(empty log)"


def _private_dir(path: Path) -> None:
    """Create `path` for this user only, or make an existing one so: it holds the data,
    the sockets and the log, and the sockets accept the service's credentials."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("data dir %s was open to others (mode %o); making it owner-only", path, mode)
        path.chmod(0o700)


@contextlib.asynccontextmanager
async def embedded_tarantool(
    settings: Settings, *, password: str, on_fatal: Callable[[], None]
) -> AsyncIterator[EmbeddedTarantool]:
    """The embedded Tarantool's whole life: started, watched and restarted while the block
    runs, stopped when it ends. Used by the single-process app and by the supervisor alike.

    Leaving the block cancels the watchdog before stopping Tarantool, so a stop always wins
    over a restart in progress: a Tarantool the watchdog was starting is stopped with it.
    """
    instance = EmbeddedTarantool.from_settings(settings, password=password)
    await instance.start()
    watchdog = asyncio.create_task(instance.watch(on_fatal), name="embedded-tarantool-watchdog")
    try:
        yield instance
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await instance.stop()
