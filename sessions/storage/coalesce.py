"""Calls of one operation made at once, sent as one `batch`: one round trip, one transaction
and one WAL write serve many requests, which measured as the largest saving on the `get`
path (bench/README.md). Each caller gets its own item's reply, or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..contract import failure_of
from ..errors import StorageUnavailable
from .faults import fresh, mapped

__all__ = ["MAX_BATCH", "Coalescer"]

# Batches are cut at this size so that several are in flight at once: Tarantool works on
# one while the service writes out the answers of another, instead of each waiting on the
# other in lock step. 16 measured best of 4/8/16/32/unbounded (bench/README.md).
MAX_BATCH = 16

Reply = dict[str, Any]


class Coalescer:
    """Sends the calls of one operation made in one event loop iteration as one batch."""

    def __init__(self, operation: str, send: Callable[[str, list[Reply]], Awaitable[list[Reply]]]) -> None:
        self._operation = operation
        self._send = send
        self._pending: list[tuple[Reply, asyncio.Future[Reply]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def call(self, args: Reply) -> asyncio.Future[Reply]:
        """The reply to these arguments, once their batch is answered."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            # Runs after every handler that is ready in this iteration has added its call.
            loop.call_soon(self._flush)
        future = loop.create_future()
        self._pending.append((args, future))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        return future

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(pending))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, pending: list[tuple[Reply, asyncio.Future[Reply]]]) -> None:
        try:
            replies = await self._send(self._operation, [args for args, _ in pending])
        except BaseException as error:
            failure = fresh(error) if isinstance(error, Exception) else StorageUnavailable()
            for _, future in pending:
                if not future.done():
                    future.set_exception(fresh(failure))
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), reply in zip(pending, replies, strict=True):
            if future.done():
                continue
            failed = failure_of(reply)
            if failed is not None:
                future.set_exception(mapped(*failed))
            else:
                future.set_result(reply)
