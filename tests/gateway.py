"""A gateway in front of a service, as a site's reverse proxy would put one, for the clients'
tests: what it serves under a path prefix goes to the service, and it records every request
it gets, so a test can see what a client sent (and that it sent nothing).

- `<prefix>/...` (`http://127.0.0.1:PORT/sessions/get`): forwarded to the service without the
  prefix, the answer passed back with its headers (`Link`, `Retry-After`);
- `/canned/<status>/<code>/...`: answers that error envelope with that status, for the codes a
  healthy service does not give on demand (`internal_error`, codes of a later release);
- `/seen`: the requests recorded so far, as JSON (`method`, `target`, `headers`);
- anything else: 404 with a page of HTML, as a gateway answers a path it does not route.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Gateway"]

_JSON = {"Content-Type": "application/json"}
# Not forwarded either way: they describe one connection, not the message.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length", "host"}


class Gateway:
    """The gateway on a port of its own, in a thread; `close()` stops it."""

    def __init__(self, upstream: str, prefix: str = "/sessions") -> None:
        target = urlsplit(upstream)
        assert target.hostname is not None and target.port is not None, upstream
        self.prefix = prefix
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/seen":
                    with gateway._lock:
                        self._answer(200, json.dumps(gateway.seen).encode(), _JSON)
                    return
                with gateway._lock:
                    gateway.seen.append(
                        {"method": self.command, "target": self.path, "headers": dict(self.headers.items())}
                    )
                if self.path.startswith(prefix + "/"):
                    self._forward(self.path[len(prefix) :], body)
                elif self.path.startswith("/canned/"):
                    status, code = self.path.split("/")[2:4]
                    envelope = {"status": "error", "code": code, "message": "A canned answer."}
                    self._answer(int(status), json.dumps(envelope).encode(), _JSON)
                else:
                    page = b"<html><body>404 Not Found</body></html>"
                    self._answer(404, page, {"Content-Type": "text/html"})

            def _forward(self, target: str, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection(target_host, target_port, timeout=30)
                try:
                    upstream.request(self.command, target, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    passed = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP}
                finally:
                    upstream.close()
                self._answer(answer.status, data, passed)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any  # the base class's names

        target_host, target_port = target.hostname, target.port
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where the service answers through the gateway: `http://127.0.0.1:PORT/sessions`."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
