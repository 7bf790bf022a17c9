"""What the handlers are given: the settings and the storage of a running service, and how
it asks its own process to stop. `running()` opens and closes them in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .config import Settings
from .embedded import embedded_tarantool
from .feed import Feed
from .metrics import METRICS
from .overload import BULK, CHECK, FEED, Budget, Gate
from .storage import Storage
from .webhooks import Webhooks

__all__ = ["Service", "Shutdown", "running"]

log = logging.getLogger(__name__)


class Shutdown:
    """How a part of the service asks the process to stop, and with which exit code."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.exit_code = 0

    def request(self, exit_code: int) -> None:
        self.exit_code = max(self.exit_code, exit_code)
        self.requested.set()


@dataclass(frozen=True, slots=True)
class Service:
    settings: Settings
    storage: Storage
    shutdown: Shutdown = field(default_factory=Shutdown)
    # Admission by class of work (overload.py): the check path, and listings and bulk deletes.
    critical: Gate = field(init=False)
    bulk: Gate = field(init=False)
    pages: Gate = field(init=False)  # of the event feed
    # Memory a client can make the process hold (overload.py): listing answers until written,
    # request bodies until their request is done.
    answers: Budget = field(init=False)
    bodies: Budget = field(init=False)
    # The process' one wait on the event feed, which long polls share (feed.py).
    feed: Feed = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        critical = Gate(CHECK, concurrency=settings.max_in_flight, queue=0)
        bulk = Gate(BULK, concurrency=settings.bulk_concurrency, queue=settings.bulk_queue)
        pages = Gate(FEED, concurrency=settings.bulk_concurrency, queue=settings.max_in_flight)
        answers = Budget("answers", what="answers of listings", work=BULK, capacity=settings.answer_budget)
        bodies = Budget("bodies", what="request bodies", work=CHECK, capacity=settings.body_budget)
        feed = Feed(self.storage, self.shutdown.requested)
        for name, value in (
            ("critical", critical),
            ("bulk", bulk),
            ("pages", pages),
            ("answers", answers),
            ("bodies", bodies),
            ("feed", feed),
        ):
            object.__setattr__(self, name, value)
        METRICS.gates = (critical, bulk, pages)
        METRICS.budgets = (answers, bodies)


@contextlib.asynccontextmanager
async def running(settings: Settings, shutdown: Shutdown | None = None) -> AsyncIterator[Service]:
    """The storage connected (to an embedded Tarantool started here, if so configured) until
    the block ends; then the storage closes first and the embedded Tarantool stops after it."""
    shutdown = shutdown or Shutdown()
    password = settings.service_password()
    async with contextlib.AsyncExitStack() as stack:
        if settings.embedded:
            embedded = await stack.enter_async_context(
                embedded_tarantool(settings, password=password, on_fatal=lambda: shutdown.request(1))
            )
            addresses = [embedded.address]
        else:
            addresses = settings.tarantool_addresses
        storage = Storage(addresses, settings, password=password)
        # Closed before the embedded Tarantool stops (exit stacks unwind in reverse).
        stack.push_async_callback(storage.close)
        try:
            await asyncio.wait_for(storage.connect(), settings.startup_timeout)
        except TimeoutError:
            raise RuntimeError(
                f"Tarantool at {settings.tarantool} did not answer in {settings.startup_timeout:.0f}s"
            ) from None
        service = Service(settings, storage, shutdown)
        # Long polls answer at once when the process stops, before the storage closes.
        stack.push_async_callback(service.feed.close)
        if settings.webhook_url is not None:
            webhooks = Webhooks(settings, storage, service.feed)
            webhooks.start()
            stack.push_async_callback(webhooks.stop)
        yield service
