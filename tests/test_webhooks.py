"""Webhooks (SESSIONS_WEBHOOK_URL): a real HTTP receiver in the test that is down, then
failing, then slow, then up receives every event once, in feed order (so in order for each
user), signed as Standard Webhooks sign; one delivery worker however many processes; a
repeat only across a crash, with the same webhook-id."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from sessions.metrics import METRICS

from .conftest import call, new_session, settings_for
from .service import Service, free_port, wait_gone

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
# A path no log may show.
HOOK_PATH = "/hook-" + os.urandom(6).hex()


class Receiver:
    """A webhook receiver: `mode` is up, failing (500) or slow (answers after `delay`); it
    checks each signature and records what it acknowledged, by webhook-id."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}{HOOK_PATH}"
        self.mode = "up"
        self.delay = 0.3
        self.acknowledged: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.attempts = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            message_id = request.headers["webhook-id"]
            stamp = request.headers["webhook-timestamp"]
            signed = f"{message_id}.{stamp}.".encode() + body
            expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
            assert request.headers["webhook-signature"] == expected
            assert abs(int(stamp) - time.time()) < 60
            if self.mode == "failing":
                return web.Response(status=500)
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            message = orjson.loads(body)
            assert message["type"] == "session." + message["data"]["kind"]
            assert message_id == f"msg_{message['data']['seq']}"
            self.acknowledged.append(message["data"])
            self.ids.append(message_id)
            return web.Response(status=204)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(HOOK_PATH, self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver(free_port())
    yield made
    await made.stop()


async def _until(condition: Any, within: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def _settings(instance: Any, receiver: Receiver) -> Any:
    return settings_for(
        instance,
        events=True,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_timeout=2,
        webhook_backoff=0.05,
        webhook_backoff_max=0.2,
    )


@pytest.mark.each_release
async def test_a_receiver_down_then_failing_then_slow_then_up_gets_every_event_once_in_order(
    serve, fresh_tarantool, receiver, user_id, caplog
):
    client = await serve(_settings(fresh_tarantool, receiver))
    stats = METRICS.webhooks
    assert stats is not None
    await _until(lambda: stats.worker == 1, what="the worker took the lease")
    start = (await call(client, "/events"))[1]["data"]["next"]

    async def changes(users: range) -> None:
        for user in users:
            made = await new_session(client, user_id + user)
            await call(client, "/get", params={"token": made["token"], "ip": f"192.0.2.{user + 100}"})
            await call(client, "/del", params={"token": made["token"]})

    # Down: nothing listens.
    await changes(range(0, 3))
    await _until(lambda: stats.failures >= 3, what="failures while down")
    await receiver.start()
    receiver.mode = "failing"
    await changes(range(3, 5))
    await _until(lambda: receiver.attempts >= 3, what="attempts while failing")
    retries = stats.retries
    receiver.mode = "slow"
    await _until(lambda: len(receiver.acknowledged) >= 2, what="deliveries while slow")
    receiver.mode = "up"
    await changes(range(5, 8))

    page = (await call(client, "/events", params={"after": str(start)}))[1]["data"]["events"]
    assert len(page) == 24
    await _until(lambda: len(receiver.acknowledged) >= len(page), what="every event delivered")
    await asyncio.sleep(0.3)  # nothing more comes
    assert receiver.acknowledged == page, "each event once, in feed order"
    assert len(set(receiver.ids)) == len(receiver.ids)
    assert receiver.most_in_flight == 1
    assert stats.retries > retries and stats.failures >= 5 and stats.deliveries == len(page)
    assert stats.lag_seconds == 0
    for user in range(8):
        kinds = [event["kind"] for event in receiver.acknowledged if event["user_id"] == user_id + user]
        assert kinds == ["opened", "moved", "ended"]
    # The URL and the secret reach no log.
    logged = caplog.text
    assert HOOK_PATH not in logged and SECRET not in logged and "webhook" in logged
    metrics = await (await client.get("/metrics")).text()
    for name in ("sessions_webhook_deliveries", "sessions_webhook_failures", "sessions_webhook_retries"):
        assert f"\n{name}_total " in metrics, name
    assert "\nsessions_webhook_lag_seconds 0.0" in metrics


@pytest.mark.each_release
async def test_delivery_goes_on_from_where_it_stopped_after_a_restart(
    serve, fresh_tarantool, receiver, user_id
):
    await receiver.start()
    first = await serve(_settings(fresh_tarantool, receiver))
    await _until(lambda: METRICS.webhooks is not None and METRICS.webhooks.worker == 1)
    start = (await call(first, "/events"))[1]["data"]["next"]
    await new_session(first, user_id)
    await _until(lambda: len(receiver.acknowledged) == 1)
    started = time.monotonic()
    await first.close()
    # A stopping process hands the lease over; the next one goes on from the progress
    # stored in Tarantool, at once.
    second = await serve(_settings(fresh_tarantool, receiver))
    await new_session(second, user_id + 1)
    await _until(lambda: len(receiver.acknowledged) == 2)
    assert time.monotonic() - started < 5
    page = (await call(second, "/events", params={"after": str(start)}))[1]["data"]["events"]
    assert receiver.acknowledged == page


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


@pytest.mark.timeout(180)
def test_one_worker_among_processes_and_a_repeat_only_across_a_kill_9(tmp_path):
    """Two processes, one delivering; the whole service killed with -9 while events flow,
    started again: every event arrives, in order, and any repeat carries the webhook-id (and
    body) it came with the first time."""

    async def scenario() -> None:
        receiver = Receiver(free_port())
        receiver.mode = "slow"
        receiver.delay = 0.02
        await receiver.start()
        env = {
            "SESSIONS_WORKERS": "2",
            "SESSIONS_EVENTS": "on",
            "SESSIONS_WEBHOOK_URL": receiver.url,
            "SESSIONS_WEBHOOK_SECRET": SECRET,
            "SESSIONS_WEBHOOK_BACKOFF": "0.05",
            "SESSIONS_WEBHOOK_BACKOFF_MAX": "0.2",
        }
        try:
            service = Service(tmp_path / "data", **env)
            await asyncio.sleep(1)  # both workers up, one holding the lease
            start = service.request("/events")[1]["data"]["next"]
            for user in range(40):
                service.request(f"/new?user_id={user + 1}&ip=192.0.2.1")
            await _until(lambda: len(receiver.acknowledged) >= 10, what="deliveries before the kill")
            tarantool = service.tarantool_pid
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
            # Its workers and Tarantool die with it (PR_SET_PDEATHSIG), not at once: the next
            # start waits for the data dir's Tarantool, and takes a port of its own.
            wait_gone(tarantool)
            service = Service(tmp_path / "data", **env)
            try:
                # More after the restart: delivered once the dead holder's lease runs out.
                for user in range(40, 50):
                    service.request(f"/new?user_id={user + 1}&ip=192.0.2.1")
                await _until(lambda: len(set(receiver.ids)) >= 50, within=60, what="every event delivered")
                page = service.request(f"/events?after={start}")[1]["data"]["events"]
                # Each worker shares its figures once a second: until the holder's are there.
                deadline = time.monotonic() + 10
                while True:
                    metrics = await asyncio.to_thread(_metrics, service.port)
                    holders = [
                        line for line in metrics.splitlines() if line.startswith("sessions_webhook_worker{")
                    ]
                    held = sum(float(line.split()[-1]) for line in holders)
                    assert held <= 1, holders
                    if held == 1 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            finally:
                service.stop(signal.SIGTERM)
        finally:
            await receiver.stop()
        assert receiver.most_in_flight == 1, "one delivery at a time, whichever process"
        first: dict[str, dict[str, Any]] = {}
        for message_id, event in zip(receiver.ids, receiver.acknowledged, strict=True):
            assert first.setdefault(message_id, event) == event, "a repeat carries what it first did"
        delivered = list(first.values())
        assert delivered == page, "every event, in feed order"
        repeats = len(receiver.ids) - len(first)
        assert repeats <= 1, "at most the one in flight at the kill"
        assert len(holders) == 2 and held == 1, holders

    asyncio.run(scenario())
