"""Admission of work by its class, so that bulk work never starves the check path.

Each class has a gate: a bounded number of requests at work at once, a bounded queue of
requests waiting for a turn, and a deadline for the wait. A request the gate cannot take
is shed at once with `Overloaded`, before any of its work is done. Plain asyncio: the
router (routing.py) decides which gate a request goes through.
"""

from __future__ import annotations

import asyncio

from .errors import Overloaded

__all__ = ["BULK", "CHECK", "FEED", "Budget", "Gate"]

# Classes of work, each admitted through a gate of its own: the check path that every
# backend calls on each of its own requests (get, new, del, rotate), and bulk work
# (listings and bulk deletes).
CHECK, BULK = "check", "bulk"
# Pages of the event feed: bulk work with a gate of its own, whose queue holds every long
# poll woken at once by an event (each a short read), rather than shedding them.
FEED = "feed"


class Gate:
    """At most `concurrency` holders at once and `queue` waiting, each at most `wait`
    seconds."""

    __slots__ = ("_queue", "_semaphore", "_shed", "active", "concurrency", "name", "waiting")

    def __init__(self, name: str, *, concurrency: int, queue: int) -> None:
        self.name = name
        self.concurrency = concurrency
        self._queue = queue
        self._semaphore = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.active = 0
        # Shed requests by reason: "queue_full" or "deadline" (see metrics.py).
        self._shed: dict[str, int] = {}

    @property
    def shed(self) -> dict[str, int]:
        return dict(self._shed)

    def _refuse(self, reason: str, message: str) -> Overloaded:
        self._shed[reason] = self._shed.get(reason, 0) + 1
        return Overloaded(message)

    async def enter(self, wait: float) -> None:
        """Take a turn, waiting at most `wait` seconds for one; raises `Overloaded` if none."""
        semaphore = self._semaphore
        if not semaphore.locked():
            # Free: taken without suspending (asyncio.Semaphore's own fast path).
            await semaphore.acquire()
            self.active += 1
            return
        if self.waiting >= self._queue:
            raise self._refuse(
                "queue_full", f"Too much {self.name} work is waiting; retry after Retry-After."
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(wait):
                await semaphore.acquire()
        except TimeoutError:
            raise self._refuse(
                "deadline", f"Too much {self.name} work: no turn came in time; retry after Retry-After."
            ) from None
        finally:
            self.waiting -= 1
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        self._semaphore.release()


class Budget:
    """Bytes a process may hold for one purpose at once (request bodies being read, answers
    being written): a holder takes its share before it reads or makes the bytes, so that
    more than the budget is shed, never buffered."""

    __slots__ = ("_freed", "_waiting", "capacity", "held", "name", "shed", "what", "work")

    def __init__(self, name: str, *, what: str, work: str, capacity: int) -> None:
        self.name = name  # its label in the metrics
        self.what = what  # what it holds, in words
        self.work = work  # the class of work whose requests hold it
        self.capacity = capacity
        self.held = 0
        self._waiting = 0
        self._freed = asyncio.Event()
        # Shares refused, for the metrics.
        self.shed = 0

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.capacity

    async def take(self, size: int, wait: float) -> None:
        """Hold `size` bytes of the budget; raises `Overloaded` if they do not come free
        within `wait` seconds (0: at once)."""
        if not self._fits(size):
            if wait <= 0:
                raise self._refuse()
            self._waiting += 1
            try:
                async with asyncio.timeout(wait):
                    while not self._fits(size):
                        self._freed.clear()
                        await self._freed.wait()
            except TimeoutError:
                raise self._refuse() from None
            finally:
                self._waiting -= 1
        self.held += size

    def give(self, size: int) -> None:
        """Give back `size` bytes of a share."""
        self.held -= size
        if self._waiting:
            self._freed.set()

    def _refuse(self) -> Overloaded:
        self.shed += 1
        return Overloaded(
            f"This process holds as many {self.what} as its memory budget allows; retry after Retry-After."
        )
