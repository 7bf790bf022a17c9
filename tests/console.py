"""A minimal client for a Tarantool admin console socket, so tests can inspect and
rewind stored data (e.g. make a session look idle for 200 days) without sleeping."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

_END = b"\n...\n"


class Console:
    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(10)
        self._sock.connect(str(path))

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
            raise RuntimeError(values[0]["error"])
        return values[0] if values else None

    def close(self) -> None:
        self._sock.close()
