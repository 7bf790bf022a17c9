"""What each part of the router costs per request, in microseconds, measured in-process.

`python bench/costs.py` times the pieces `sessions/routing.py` adds around a handler (the
request id, the metrics, the API key check, reading the parameters, the envelope) one by
one with timeit, and the whole router around a handler that answers at once against that
handler called directly. No server and no Tarantool: it isolates the Python cost of each
piece from the network and the storage; the py-spy profile in bench/README.md shows their
share under a real load. Nothing is asserted.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import statistics
import time
import timeit
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sessions.auth import ApiKeys
from sessions.config import Settings
from sessions.envelope import success
from sessions.metrics import METRICS
from sessions.params import OPTIONAL_IP, TOKEN
from sessions.routing import Route, Router, Service

TOKEN_VALUE = "61494096-9af7-49ba-9fb4-e89c0811e6d3"
SESSION = {
    "ip": "192.168.1.1",
    "extra": None,
    "user_id": 1,
    "create": 1464909151,
    "activity": 1465564426,
    "token": TOKEN_VALUE,
}
KEY = "k" * 43


def per_call_us(function: Callable[[], Any], *, number: int = 20000, repeat: int = 7) -> float:
    """The median of `repeat` runs, in microseconds per call."""
    runs = timeit.repeat(function, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def run_once(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """A coroutine that never suspends, driven without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def main() -> None:
    settings = Settings(tarantool="127.0.0.1:3301", tarantool_password="bench-unused-8d1f0c2e")
    request = make_mocked_request(
        "GET", f"/get?token={TOKEN_VALUE}", headers={"Authorization": f"Bearer {KEY}"}
    )
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    counter = itertools.count()
    prefix = os.urandom(4).hex()
    stats = METRICS.method("costs")
    one_key, three_keys = ApiKeys([KEY]), ApiKeys([KEY, "a" * 43, "b" * 43])
    response = success(SESSION)

    def request_id() -> None:
        given = request.headers.get("X-Request-Id")
        made = given if given is not None else f"{prefix}{next(counter) & 0xFFFFFFFF:08x}"
        token = variable.set(made)
        variable.reset(token)
        response.headers["X-Request-Id"] = made

    def metrics() -> None:
        started = time.perf_counter()
        stats.record("success", time.perf_counter() - started)

    async def answer(service: Service, token: str, ip: str | None) -> web.Response:
        return response

    service = Service(settings, storage=None)  # type: ignore[arg-type]
    route = Route("/get", answer, "get", (TOKEN, OPTIONAL_IP))
    bare = Router([route], service, None)
    keyed = Router([route], service, one_key)

    pieces = {
        "request id (made, context variable, header)": per_call_us(request_id),
        "metrics (two clock reads, one record)": per_call_us(metrics),
        "API key check, one key": per_call_us(lambda: one_key.check(request)),
        "API key check, three keys": per_call_us(lambda: three_keys.check(request)),
        "parameters of get (token, ip)": per_call_us(
            lambda: [TOKEN.read(request, settings), OPTIONAL_IP.read(request, settings)]
        ),
        "envelope of a SessionObject (orjson, Response)": per_call_us(lambda: success(SESSION)),
        "handler called directly": per_call_us(lambda: run_once(answer(service, TOKEN_VALUE, None))),
        "router around it, no API keys": per_call_us(lambda: run_once(bare(request))),
        "router around it, one API key": per_call_us(lambda: run_once(keyed(request))),
    }
    width = max(map(len, pieces))
    for name, cost in pieces.items():
        print(f"{name:<{width}}  {cost:6.2f} us")


if __name__ == "__main__":
    main()
