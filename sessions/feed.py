"""Waiting for the event feed: one wait on Tarantool per process, however many clients
long-poll `/events` (and the webhook worker with them).

A wait in Tarantool holds one of its request fibers (and a slot of its network queue,
net_msg_max) for as long as it waits: a thousand clients waiting there would stop every
other request. So one task per process, while anybody waits, asks Tarantool to answer when
the feed's head passes the last one it saw (`events_wait`, a fiber condition there), and
wakes the waiters here, who then read their page as any other call does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .contract import EVENTS_WAIT
from .errors import SessionsError
from .storage import Storage

__all__ = ["Feed"]

log = logging.getLogger(__name__)

# After a failed wait (Tarantool away), the next one this much later.
_RETRY = 0.5


class _Waiter:
    """One long poll's wait: `cut` once it is to answer at once (Feed.cut_one)."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


class Feed:
    """The feed's head as this process last saw it, and waits for it to move."""

    def __init__(self, storage: Storage, stopping: asyncio.Event | None = None) -> None:
        self._storage = storage
        # Set when the process is asked to stop: long polls answer then, not at their end.
        self._stopping = stopping
        self._stopper: asyncio.Task[None] | None = None
        self.head: int | None = None
        self._moved = asyncio.Event()  # set, and replaced, when the head moves
        self._waiters = 0
        # The waits of HTTP long polls, oldest first: one may be cut short for a connection.
        self._polls: dict[_Waiter, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiters(self) -> int:
        return self._waiters

    async def wait(self, after: int, seconds: float, *, poll: bool = False) -> bool:
        """Until the feed may have an event after `after`, at most `seconds` (or until the
        process stops). `poll`: an HTTP long poll's, which cut_one may end early; whether
        it was (its connection should then close)."""
        if self._closed or seconds <= 0:
            return False
        waiter = _Waiter()
        if poll:
            self._polls[waiter] = None
        self._waiters += 1
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._watch())
            if self._stopper is None and self._stopping is not None:
                self._stopper = asyncio.create_task(self._stop_when(self._stopping))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while not self._closed and not waiter.cut and (self.head is None or self.head <= after):
                        await self._moved.wait()
        finally:
            self._waiters -= 1
            self._polls.pop(waiter, None)
        return waiter.cut

    def cut_one(self) -> bool:
        """End the longest-waiting long poll now (it answers what is there, as at the end of
        its wait, and its connection closes); whether there was one. The connection cap
        takes this before refusing a newcomer: a poll is at work, so never closed as idle,
        and enough of them would otherwise lock every other client out."""
        for waiter in self._polls:
            if not waiter.cut:
                waiter.cut = True
                self._wake()
                return True
        return False

    async def _watch(self) -> None:
        try:
            while self._waiters > 0 and not self._closed:
                try:
                    reply = await self._storage.call(EVENTS_WAIT, {"after": self.head or 0})
                except SessionsError:
                    await asyncio.sleep(_RETRY)
                    continue
                head = int(reply["head"])
                if head != self.head:
                    self.head = head
                    self._wake()
        finally:
            self._task = None

    async def _stop_when(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def close(self) -> None:
        """Answer every waiter now, and wait no more."""
        self._closed = True
        self._wake()
        for task in (self._task, self._stopper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
