"""aiohttp's private parts, kept to this one module: the low-level server's request handler
and request factory, the writer a `100 Continue` goes out on, the transport a client leaves
by, the protocol errors its parser raises, and a runner's hooks that make and clean up its
server. The rest of the service uses aiohttp's public `web` API only (test_layers.py scans
for private names), so an aiohttp upgrade is checked here.

aiohttp answers requests it cannot parse (a request line over 8 KiB, broken headers, TLS on
the plain port) with a plain-text page before any handler runs; EnvelopeServer answers them
with the API's JSON envelope like everything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from .envelope import failure
from .errors import BadRequest, InternalError, SessionsError
from .logs import RateLimitedLog
from .metrics import METRICS

__all__ = [
    "PROTOCOL_ERRORS",
    "SEND_PIECE",
    "EnvelopeServer",
    "HookedRunner",
    "abandon_body",
    "client_left",
    "from_protocol",
    "send_bounded",
    "send_continue",
]

log = logging.getLogger("sessions")

# What the parser raises while a handler reads a request that breaks HTTP midway.
PROTOCOL_ERRORS: tuple[type[Exception], ...] = (HttpProcessingError, RequestPayloadError)


async def send_continue(request: web.BaseRequest) -> None:
    """Tell an HTTP/1.1 client waiting on `Expect: 100-continue` to send its body."""
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Not part of the answer: the answer proper has not started.
        request.writer.output_size = 0


# A large answer is written a piece of this size at a time, each once the client has taken
# the one before: what a slow reader makes the process hold is the answer itself (which a
# memory budget counts), never copies of it queued in the transport.
SEND_PIECE = 64 * 1024


async def send_bounded(
    request: web.BaseRequest, response: web.StreamResponse, body: bytes, *, patience: float
) -> web.StreamResponse:
    """Write `response` (its status and headers, and `body`) a piece at a time, each piece
    only once the transport has handed the one before to the kernel; a client that takes no
    piece within `patience` seconds has its connection closed (ConnectionResetError).
    Returns the answer as written, complete."""
    streamed = web.StreamResponse(status=response.status, headers=response.headers)
    streamed.content_length = len(body)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left before its answer")
    # Drained means empty: the transport keeps nothing of ours behind while it waits.
    transport.set_write_buffer_limits(high=0)
    writer = request.writer
    try:
        view = memoryview(body)
        async with asyncio.timeout(patience):
            await streamed.prepare(request)
        for start in range(0, len(body), SEND_PIECE):
            async with asyncio.timeout(patience):
                await streamed.write(view[start : start + SEND_PIECE])
                await writer.drain()
        async with asyncio.timeout(patience):
            await streamed.write_eof()
            await writer.drain()
    except TimeoutError:
        METRICS.closed("slow_reader")
        transport.abort()
        raise ConnectionResetError("the client took no part of its answer in time") from None
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits()
    return streamed


def client_left(request: web.BaseRequest) -> bool:
    """Whether the client has closed its connection (no one will read an answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def abandon_body(request: web.BaseRequest) -> None:
    """Mark the request body as ended, so that aiohttp does not try to drain the rest of it
    after the answer (which, for a broken body, would raise and log the same error again)."""
    request.content.feed_eof()


def from_protocol(error: Exception) -> SessionsError:
    # A body that breaks HTTP's rules (a bad chunk, a length it does not keep, an encoding
    # that does not decode) is the client's doing; aiohttp raises it from the read, as its
    # own error or wrapped in a RequestPayloadError.
    if isinstance(error.__cause__ or error, ContentEncodingError):
        return BadRequest("The request body could not be decoded (Content-Encoding).")
    return BadRequest("The request body is not valid HTTP.")


def _protocol_error(status: int, exc: BaseException | None) -> SessionsError:
    if isinstance(exc, LineTooLong):
        return BadRequest("The request line or a header is too long (the limit is 8190 bytes).")
    if 400 <= status < 500:
        return BadRequest()
    return InternalError()


# Anyone can send bytes that are not HTTP, as often as they like: one short line per such
# request at most, and no more than one a second, never with what they sent in it (a
# header may hold a credential).
_rejected_log = RateLimitedLog(log, interval=1.0)
_refused = METRICS.method("other")


class _EnvelopeRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = _protocol_error(status, exc)
        kind = type(exc).__name__ if exc is not None else "no exception"
        # Never reached a route: counted as the unknown paths are.
        _refused.record(error.code, 0.0)
        if error.status >= 500:
            _rejected_log.error("internal", "answered %d to a request that failed: %s", error.status, kind)
        else:
            _rejected_log.warning(
                "protocol", "answered %d to a request that is not valid HTTP: %s", error.status, kind
            )
        # Some data already went out: the connection is broken, nothing more can be said.
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        response = failure(error)
        response.force_close()
        return response


class EnvelopeServer(web.Server):
    """aiohttp's low-level server with protocol errors answered as envelopes, request
    bodies limited to `client_max_size` bytes, and (for the API) at most `max_connections` connections:
    beyond it, a new connection makes the one idle longest close (a connection with no
    request at work: one waiting for its next request, or still sending its first), or is
    closed itself at once when none is idle. A flood of idle connections so never takes the
    descriptors or the memory a working client needs."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        client_max_size: int,
        max_connections: int | None = None,
        make_room: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._client_max_size = client_max_size
        self._max_connections = max_connections
        # Asked, when no connection is idle, to end some work early that frees one (a long
        # poll's: Feed.cut_one); whether it will.
        self._make_room = make_room
        if max_connections is not None:
            METRICS.connections = lambda: len(self._connections)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self._max_connections is None:
            return
        connections = self._connections
        if len(connections) > self._max_connections:
            # Oldest first (a dict keeps its order): the first idle one met has been
            # connected longest.
            victim = next(
                (other for other in connections if other is not handler and not other._request_in_progress),
                None,
            )
            if victim is None and self._make_room is not None and self._make_room():
                # A long poll answers now and closes: this one takes its place.
                METRICS.closed("long_poll")
                return
            METRICS.closed("refused" if victim is None else "idle")
            closing = handler if victim is None else victim
            # Forgotten at once, so the count above stays the count of open ones.
            del connections[closing]
            if closing is handler:
                # Not closed before aiohttp's task for it is scheduled (it is, once this
                # returns): a close now would run its connection_lost first, and the task
                # would fail an assertion and log a traceback for every refused newcomer.
                self._loop.call_soon(closing.force_close)
            else:
                closing.force_close()

    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=self._client_max_size
        )


class HookedRunner(web.BaseRunner):
    """A runner whose server a subclass makes in `make_server(**kwargs)` (with the keyword
    arguments the runner was given for it, such as the access log) and cleans up after in
    `cleanup_server()`: aiohttp asks for both through private hooks of BaseRunner's."""

    __slots__ = ()

    async def shutdown(self) -> None:
        pass

    async def make_server(self, **kwargs: Any) -> web.Server:
        raise NotImplementedError

    async def cleanup_server(self) -> None:
        pass

    async def _make_server(self) -> web.Server:
        return await self.make_server(**self._kwargs)

    async def _cleanup_server(self) -> None:
        await self.cleanup_server()
