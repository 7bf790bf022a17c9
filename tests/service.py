"""A real `python -m sessions serve` in a child process, for tests of the service as a whole."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for every purpose here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


class Service:
    """`python -m sessions serve` in a child process, with its own port and data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        probe_host: str = "127.0.0.1",
        fd_limit: int | None = None,
        fd_hard_limit: int | None = None,
        port: int | None = None,
        **env: str,
    ) -> None:
        self.host = probe_host
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"service-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sessions", "serve"],
                env={
                    **os.environ,
                    "SESSIONS_PORT": str(self.port),
                    "SESSIONS_DATA_DIR": str(data_dir),
                    **env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if fd_limit is None else lambda: _limit_fds(fd_limit, fd_hard_limit),
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.request("/get")
                break
            except OSError:
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.1)

    @property
    def tarantool_pid(self) -> int:
        return int((self.data_dir / "tarantool.pid").read_text())

    def request(self, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = urllib.request.Request(f"http://{host}:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def raw(self, data: bytes, *, timeout: float = 5.0) -> tuple[int | None, Any, float]:
        """Send raw bytes; the status and JSON body of the answer (None if the server just
        closed the connection) and the seconds it took."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(data)
            received = b""
            try:
                while chunk := conn.recv(65536):
                    received += chunk
                    head, sep, body = received.partition(b"\r\n\r\n")
                    length = _content_length(head) if sep else None
                    if length is not None and len(body) >= length:
                        break
            except ConnectionResetError:
                pass
        elapsed = time.monotonic() - started
        if not received:
            return None, None, elapsed
        head, _, body = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert b"content-type: application/json" in head.lower(), received[:300]
        return status, json.loads(body), elapsed


def _limit_fds(soft: int, hard: int | None) -> None:
    """The child's descriptor limits: `soft`, and `hard` (the same as soft when None)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def requests_by_method(exposition: str) -> dict[str, float]:
    """How many requests each API method label has answered, from a /metrics exposition
    (read with prometheus_client's own parser), whatever their codes."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "sessions_requests_total":
                method = sample.labels["method"]
                counts[method] = counts.get(method, 0.0) + sample.value
    return counts


def api_methods_not_called(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """The API's method labels (a route each) that no request reached between two scrapes."""
    from sessions.api import METHODS

    return [route.name for route in METHODS if after.get(route.name, 0.0) <= before.get(route.name, 0.0)]
