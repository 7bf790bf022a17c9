"""Admission of work by its class, so that bulk work never starves the check path.

Each class has a gate: a bounded number of requests at work at once, a bounded queue of
requests waiting for a turn, and a deadline for the wait. A request the gate cannot take
is shed at once with `Overloaded`, before any of its work is done. Plain asyncio: the
router (routing.py) decides which gate a request goes through.
"""

from __future__ import annotations

import asyncio

from .errors import Overloaded

__all__ = ["BULK", "CHECK", "Gate"]

# Classes of work, each admitted through a gate of its own: the check path that every
# backend calls on each of its own requests (get, new, del, rotate), and bulk work
# (listings and bulk deletes).
CHECK, BULK = "check", "bulk"


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
