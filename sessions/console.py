"""A client for the admin console socket of a local Tarantool (`tarantool.control` in the
embedded data dir): for operator commands, the benchmark and tests, never the API path."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

_END = b"\n...\n"


__all__ = ["Console", "ConsoleError"]


class ConsoleError(RuntimeError):
    """The Lua sent to the console raised an error."""


class Console:
    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError:
            # Nobody there: the socket is not left for the collector to find.
            self._sock.close()
            raise

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def eval(self, code: str) -> Any:
        """Run Lua on one line and return its first result."""
        self._sock.sendall(" ".join(code.split()).encode() + b"\n")
        data = b""
        while not data.endswith(_END):
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("console closed")
            data += chunk
        # The greeting comes before the first answer; every answer is one YAML document.
        document = data[data.rindex(b"---\n") :]
        values = yaml.safe_load(document)
        if isinstance(values, list) and values and isinstance(values[0], dict) and "error" in values[0]:
            raise ConsoleError(values[0]["error"])
        return values[0] if values else None

    def close(self) -> None:
        self._sock.close()
