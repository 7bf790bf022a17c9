"""Webhooks: the event feed POSTed to SESSIONS_WEBHOOK_URL, one event per request, signed as
the Standard Webhooks convention signs them (https://www.standardwebhooks.com/).

Every process runs a worker, and one of them delivers: the one holding the lease kept in
Tarantool (`webhook_lease`), which also keeps the seq of the last event the receiver
acknowledged, so delivery goes on from there after a restart, a failover or another process
taking over. Events go in feed order, one at a time (so in order for each user), each until
the receiver answers 2xx, retried after a back-off that doubles up to
SESSIONS_WEBHOOK_BACKOFF_MAX: at least once. A delivery whose acknowledgement was not stored
(the process killed between the two) is sent again, with the same `webhook-id` (`msg_` and
the event's seq, never reused), which is how a receiver tells a repeat. The URL and secret
never reach a log: failures are logged by the exception's type or the status alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from .config import Settings, webhook_key
from .contract import EVENT_FIELDS, EVENTS, WEBHOOK_LEASE
from .errors import SessionsError
from .feed import Feed
from .limits import WEBHOOK_LEASE as LEASE_SECONDS
from .logs import RateLimitedLog
from .metrics import METRICS, WebhookStats
from .storage import Storage

__all__ = ["Webhooks", "payload", "signature"]

log = logging.getLogger(__name__)

# Events read from the feed at once; each is still sent on its own.
_PAGE = 100
# How often the lease is renewed while nothing is being sent.
_RENEW = LEASE_SECONDS / 3


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` and the base64 of HMAC-SHA256 over
    `{id}.{timestamp}.{body}`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(event: Mapping[str, Any]) -> bytes:
    """The body of an event's delivery: Standard Webhooks' `type`, `timestamp` and `data`."""
    when = datetime.datetime.fromtimestamp(event["time"], datetime.UTC)
    stamp = when.isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": f"session.{event['kind']}", "timestamp": stamp, "data": event})


class _LeaseLost(Exception):
    """Another process delivers now."""


class Webhooks:
    """This process' webhook worker."""

    def __init__(self, settings: Settings, storage: Storage, feed: Feed) -> None:
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        self._url = settings.webhook_url.get_secret_value()
        key = webhook_key(settings.webhook_secret)
        assert key is not None
        self._key = key
        self._timeout = settings.webhook_timeout
        self._backoff = settings.webhook_backoff
        self._backoff_max = settings.webhook_backoff_max
        # The lease outlasts the longest attempt, so that a live holder never loses it.
        self._ttl = LEASE_SECONDS + settings.webhook_timeout
        self._storage = storage
        self._feed = feed
        self._holder = f"{os.getpid()}-{secrets.token_hex(8)}"
        self._task: asyncio.Task[None] | None = None
        # A stop lets a request on its way finish (and its acknowledgement be stored), so that
        # only a crash makes a repeat, then hands the lease over at once.
        self._stopping = False
        self._sending = False
        # A receiver down fails every attempt: a line every ten seconds says so.
        self._failed_log = RateLimitedLog(log, interval=10.0)
        self.stats = METRICS.webhooks = WebhookStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is None:
            return
        if not self._sending:
            task.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), self._timeout + 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.stats.worker:
            with contextlib.suppress(SessionsError):
                await self._storage.call(WEBHOOK_LEASE, {"holder": self._holder, "ttl": 0.001})
            self.stats.worker = 0

    async def _lease(self, delivered: int | None = None) -> int:
        """Take or renew the lease (recording `delivered`); the last delivered seq."""
        args: dict[str, Any] = {"holder": self._holder, "ttl": self._ttl}
        if delivered is not None:
            args["delivered"] = delivered
        reply = await self._storage.call(WEBHOOK_LEASE, args)
        held = bool(reply["held"])
        self.stats.worker = int(held)
        if not held:
            raise _LeaseLost()
        return int(reply["delivered"])

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self._stopping:
                try:
                    await self._deliver(http)
                except _LeaseLost:
                    pass
                except SessionsError as error:
                    # Tarantool away, or refusing writes: the worker tries again.
                    self._failed_log.warning("tarantool", "webhooks: waiting for Tarantool (%s)", error.code)
                    self.stats.worker = 0
                await asyncio.sleep(_RENEW)

    async def _deliver(self, http: aiohttp.ClientSession) -> None:
        """Deliver while this process holds the lease."""
        delivered = await self._lease()
        while True:
            reply = await self._storage.call(EVENTS, {"after": delivered, "limit": _PAGE})
            if reply["missed"]:
                log.warning(
                    "webhooks: events after seq %d were removed by the retention before they were "
                    "delivered (SESSIONS_EVENTS_RETENTION, SESSIONS_EVENTS_MAX)",
                    delivered,
                )
            rows = reply["events"]
            if not rows:
                self.stats.lag_seconds = 0.0
                await self._feed.wait(delivered, _RENEW)
                delivered = await self._lease()
                continue
            for row in rows:
                event = dict(zip(EVENT_FIELDS, row, strict=False))
                self.stats.lag_seconds = max(0.0, time.time() - event["time"])
                await self._send(http, event)
                delivered = await self._lease(event["seq"])
                if self._stopping:
                    return

    async def _send(self, http: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        """POST one event until its receiver acknowledges it (2xx)."""
        body = payload(event)
        message_id = f"msg_{event['seq']}"
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            now = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(now),
                "webhook-signature": signature(self._key, message_id, now, body),
            }
            self._sending = True
            try:
                async with http.post(self._url, data=body, headers=headers, allow_redirects=False) as answer:
                    status = answer.status
                    # What it says is not ours to keep: read it off the connection, unbuffered.
                    await answer.content.readany()
                if 200 <= status < 300:
                    self.stats.deliveries += 1
                    return
                why = f"answered {status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                why = type(error).__name__
            finally:
                self._sending = False
            self.stats.failures += 1
            delay = min(self._backoff * 2**attempt, self._backoff_max)
            attempt += 1
            self._failed_log.warning(
                "delivery",
                "webhooks: delivery of event %d failed (%s); retry %d in %.1f s",
                event["seq"],
                why,
                attempt,
                delay,
            )
            if self._stopping:
                raise _LeaseLost()
            until = loop.time() + delay
            while (left := until - loop.time()) > 0:
                await asyncio.sleep(min(left, _RENEW))
                await self._lease()
            self.stats.retries += 1
