"""Request metrics of this process.

Requests are counted into small slotted objects on the hot path (a few hundred nanoseconds)
and turned into Prometheus metrics with prometheus-client only when /metrics is scraped.
Labels are bounded: the method is one of the API's (api.METHODS), `ops` or `other`, the code
one of the envelope's or `client_gone`.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from .contract import Info
from .overload import Budget, Gate

__all__ = [
    "BUCKETS",
    "ELECTION_FAMILIES",
    "FAMILIES",
    "METRICS",
    "WEBHOOK_FAMILIES",
    "Family",
    "Metrics",
    "WebhookStats",
]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_KINDS: dict[str, Any] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
}


@dataclass(frozen=True, slots=True)
class Family:
    """One metric the service exports: what /metrics says of it and docs/operations.md lists."""

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...] = ()

    def make(self, extra_labels: tuple[str, ...] = ()) -> Any:
        """An empty family to add samples to; `extra_labels` come first (the worker). Any:
        each kind's `add_metric` takes its own arguments."""
        return _KINDS[self.kind](self.name, self.help, labels=[*extra_labels, *self.labels])


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "sessions_requests",
            "counter",
            "Requests answered, by API method and envelope code",
            ("method", "code"),
        ),
        Family(
            "sessions_request_duration_seconds",
            "histogram",
            "Time to answer a request, by API method",
            ("method",),
        ),
        Family(
            "sessions_shed",
            "counter",
            "Requests answered `overloaded` before any work, by class of work and reason",
            ("work", "reason"),
        ),
        Family("sessions_queued", "gauge", "Requests waiting for a turn", ("work",)),
        Family("sessions_in_progress", "gauge", "Requests at work", ("work",)),
        Family(
            "sessions_fds_exhausted",
            "counter",
            "Seconds in which a process had no file descriptor left: new connections were refused",
        ),
        Family(
            "sessions_memory_budget_bytes",
            "gauge",
            "Bytes a process may hold for answers of listings or for request bodies",
            ("budget",),
        ),
        Family(
            "sessions_memory_held_bytes",
            "gauge",
            "Bytes of a memory budget held by requests now",
            ("budget",),
        ),
        Family("sessions_connections", "gauge", "Open client connections"),
        Family("sessions_connections_max", "gauge", "Open client connections a process keeps at most"),
        Family(
            "sessions_connections_closed",
            "counter",
            "Connections the service closed to bound its memory: `idle` for a newcomer, `long_poll` "
            "(a waiting /events poll answered early for a newcomer, none being idle), `refused` "
            "(none idle to close), `slow_reader` (took no part of an answer within "
            "SESSIONS_SEND_TIMEOUT)",
            ("reason",),
        ),
        Family("sessions_tarantool_up", "gauge", "1 if Tarantool answered the last scrape"),
        Family(
            "sessions_stored",
            "gauge",
            "Sessions in Tarantool (idle ones included until the purge removes them)",
        ),
        Family("sessions_purged", "counter", "Idle sessions purged since the Tarantool instance started"),
        Family(
            "sessions_tarantool_memory_used_bytes",
            "gauge",
            "Memory used for sessions and indexes in Tarantool",
        ),
        Family("sessions_tarantool_read_only", "gauge", "1 if Tarantool is read-only"),
        Family(
            "sessions_tarantool_election_term",
            "gauge",
            "With SESSIONS_FAILOVER=election: the election term the Tarantool in use is in (it grows "
            "with each election)",
        ),
        Family(
            "sessions_tarantool_election_leader",
            "gauge",
            "With SESSIONS_FAILOVER=election: the id of the leader the Tarantool in use knows of (0: none)",
        ),
        Family(
            "sessions_tarantool_writes_confirmable",
            "gauge",
            "0 while synchronous replication has too few replicas following to confirm a write",
        ),
        Family(
            "sessions_tarantool_replication_stopped",
            "gauge",
            "Upstreams Tarantool stopped following on an error (a conflict): see its log",
        ),
        Family(
            "sessions_tarantool_sets_lost",
            "gauge",
            "Sharded mode: replica sets whose master does not answer or cannot write (their users get "
            "503 storage_unavailable; the others are served)",
        ),
        Family(
            "sessions_storage_full",
            "gauge",
            "1 if Tarantool's memory is full: no new sessions or extra data until room is made",
        ),
        Family(
            "sessions_touch_skipped",
            "counter",
            "Sessions served by get without recording their activity, memory being full",
        ),
        Family(
            "sessions_webhook_worker",
            "gauge",
            "1 in the process that holds the webhook delivery lease (one in the whole service)",
        ),
        Family("sessions_webhook_deliveries", "counter", "Events a webhook receiver acknowledged (2xx)"),
        Family(
            "sessions_webhook_failures",
            "counter",
            "Webhook attempts that failed: no answer within SESSIONS_WEBHOOK_TIMEOUT, or not 2xx",
        ),
        Family("sessions_webhook_retries", "counter", "Webhook attempts that repeated a failed one"),
        Family(
            "sessions_webhook_lag_seconds",
            "gauge",
            "Age of the event being delivered, 0 when every event is delivered",
        ),
        Family(
            "sessions_build_info",
            "gauge",
            "The running release: 1, labelled with its version and revision",
            ("version", "revision"),
        ),
    )
}


# Exported only when the Tarantool in use takes part in elections (SESSIONS_FAILOVER=election).
ELECTION_FAMILIES = frozenset({"sessions_tarantool_election_term", "sessions_tarantool_election_leader"})


# Exported by processes that run a webhook worker (SESSIONS_WEBHOOK_URL).
WEBHOOK_FAMILIES = frozenset(
    {
        "sessions_webhook_worker",
        "sessions_webhook_deliveries",
        "sessions_webhook_failures",
        "sessions_webhook_retries",
        "sessions_webhook_lag_seconds",
    }
)


class WebhookStats:
    """What a process' webhook worker counts (webhooks.py)."""

    __slots__ = ("deliveries", "failures", "lag_seconds", "retries", "worker")

    def __init__(self) -> None:
        self.worker = 0
        self.deliveries = 0
        self.failures = 0
        self.retries = 0
        self.lag_seconds = 0.0

    def snapshot(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__slots__}


class _MethodStats:
    """Counts and latencies of one API method; updated on every request, so kept minimal."""

    __slots__ = ("buckets", "codes", "total")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def record(self, code: str, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


# What one process counted, as plain data: what it writes for the other workers to report.
Snapshot = dict[str, Any]


class Metrics:
    """Request counts and latencies of this process, and the last view of Tarantool.

    With several workers (SESSIONS_WORKERS), each writes its counts to a file in a directory
    the supervisor shares, once a second and when it stops, and /metrics in any worker reports
    every worker's series, labelled `worker`: one scrape sees the whole service, `sum()` adds
    the workers up, and no counter goes backwards whichever worker answers.
    """

    def __init__(self) -> None:
        self._methods: dict[str, _MethodStats] = {}
        self.storage: Info | None = None
        # The admission gates of this process (overload.py), once it serves.
        self.gates: tuple[Gate, ...] = ()
        # Its memory budgets (overload.py), once it serves.
        self.budgets: tuple[Budget, ...] = ()
        # Samples (one a second) that found this process out of file descriptors.
        self.fds_exhausted = 0
        # Its client connections: how many are open (asked of the server), the most it keeps,
        # and those it closed by reason.
        self.connections: Callable[[], int] = lambda: 0
        self.connections_max = 0
        self.connections_closed: dict[str, int] = {}
        # The workers' shared directory, and this worker's name in it; None: one process.
        self.shared: Path | None = None
        self.worker = str(os.getpid())
        # Its webhook worker's counts, when it runs one.
        self.webhooks: WebhookStats | None = None

    def method(self, name: str) -> _MethodStats:
        """The stats a route records into; looked up once, when the route is set up."""
        return self._methods.setdefault(name, _MethodStats())

    def snapshot(self) -> Snapshot:
        return {
            "methods": {
                name: {"codes": dict(stats.codes), "buckets": list(stats.buckets), "total": stats.total}
                for name, stats in self._methods.items()
            },
            "gates": {
                gate.name: {"shed": gate.shed, "waiting": gate.waiting, "active": gate.active}
                for gate in self.gates
            },
            "budgets": {
                budget.name: {
                    "work": budget.work,
                    "shed": budget.shed,
                    "held": budget.held,
                    "capacity": budget.capacity,
                }
                for budget in self.budgets
            },
            "fds_exhausted": self.fds_exhausted,
            "connections": self.connections(),
            "connections_max": self.connections_max,
            "connections_closed": dict(self.connections_closed),
            **({"webhooks": self.webhooks.snapshot()} if self.webhooks is not None else {}),
        }

    def closed(self, reason: str) -> None:
        """Count a connection the service closed to bound its memory."""
        self.connections_closed[reason] = self.connections_closed.get(reason, 0) + 1

    def share(self, snapshot: Snapshot | None = None) -> None:
        """Write this worker's counts where the other workers read them (atomically)."""
        if self.shared is None:
            return
        path = self.shared / f"{self.worker}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(self.snapshot() if snapshot is None else snapshot))
        temporary.replace(path)

    def _views(self) -> list[tuple[list[str], Snapshot]]:
        """(worker label values, counts) of every worker: this one live, the others as shared.

        The counts this worker reports are written for the others first, so that whichever
        worker answers the next scrape reports this one's series at least as high: no
        series ever goes backwards from one scrape to the next (a worker that answered no
        scrape lately is reported as it last shared, at most a second old)."""
        if self.shared is None:
            return [([], self.snapshot())]
        own = self.snapshot()
        with contextlib.suppress(OSError):
            self.share(own)
        views = [([self.worker], own)]
        for path in sorted(self.shared.glob("*.json")):
            if path.stem != self.worker:
                with contextlib.suppress(OSError, ValueError):
                    views.append(([path.stem], orjson.loads(path.read_bytes())))
        return views

    def collect(self) -> Iterator[Any]:
        views = self._views()
        worker = ("worker",) if self.shared is not None else ()
        requests = FAMILIES["sessions_requests"].make(worker)
        latency = FAMILIES["sessions_request_duration_seconds"].make(worker)
        shed = FAMILIES["sessions_shed"].make(worker)
        waiting = FAMILIES["sessions_queued"].make(worker)
        active = FAMILIES["sessions_in_progress"].make(worker)
        exhausted = FAMILIES["sessions_fds_exhausted"].make(worker)
        capacity = FAMILIES["sessions_memory_budget_bytes"].make(worker)
        held = FAMILIES["sessions_memory_held_bytes"].make(worker)
        connections = FAMILIES["sessions_connections"].make(worker)
        connections_max = FAMILIES["sessions_connections_max"].make(worker)
        closed = FAMILIES["sessions_connections_closed"].make(worker)
        for labels, view in views:
            for method, stats in sorted(view["methods"].items()):
                for code, count in sorted(stats["codes"].items()):
                    requests.add_metric([*labels, method, code], count)
                cumulative, running = [], 0
                for bound, count in zip([*map(str, BUCKETS), "+Inf"], stats["buckets"], strict=True):
                    running += count
                    cumulative.append((bound, running))
                if running:
                    latency.add_metric([*labels, method], cumulative, sum_value=stats["total"])
            for name, gate in sorted(view["gates"].items()):
                for reason in ("queue_full", "deadline"):
                    shed.add_metric([*labels, name, reason], gate["shed"].get(reason, 0))
                waiting.add_metric([*labels, name], gate["waiting"])
                active.add_metric([*labels, name], gate["active"])
            # A worker's snapshot from an older release may lack what follows.
            for name, budget in sorted(view.get("budgets", {}).items()):
                shed.add_metric([*labels, budget["work"], "memory"], budget["shed"])
                capacity.add_metric([*labels, name], budget["capacity"])
                held.add_metric([*labels, name], budget["held"])
            exhausted.add_metric(labels, view["fds_exhausted"])
            connections.add_metric(labels, view.get("connections", 0))
            connections_max.add_metric(labels, view.get("connections_max", 0))
            for reason in ("idle", "long_poll", "refused", "slow_reader"):
                closed.add_metric([*labels, reason], view.get("connections_closed", {}).get(reason, 0))
        yield from (requests, latency, shed, waiting, active, exhausted)
        yield from (capacity, held, connections, connections_max, closed)
        hooked = [(labels, view["webhooks"]) for labels, view in views if "webhooks" in view]
        if hooked:
            for name in sorted(WEBHOOK_FAMILIES):
                family = FAMILIES[name].make(worker)
                for labels, stats in hooked:
                    family.add_metric(labels, stats[name.removeprefix("sessions_webhook_")])
                yield family
        yield _one("sessions_tarantool_up", 0 if self.storage is None else 1)
        info = self.storage
        if info is not None:
            yield _one("sessions_stored", info.sessions)
            yield _one("sessions_purged", info.purged)
            yield _one("sessions_tarantool_memory_used_bytes", info.memory_used)
            yield _one("sessions_tarantool_read_only", int(info.ro))
            yield _one("sessions_storage_full", int(info.storage_full))
            yield _one("sessions_touch_skipped", info.touch_skipped)
            yield _one("sessions_tarantool_replication_stopped", info.replication_stopped)
            yield _one("sessions_tarantool_writes_confirmable", int(info.writes_confirmable))
            yield _one("sessions_tarantool_sets_lost", info.sets_lost)
            election = info.election
            if election is not None:
                yield _one("sessions_tarantool_election_term", election.get("term", 0))
                yield _one("sessions_tarantool_election_leader", election.get("leader", 0))


def _one(name: str, value: float) -> Metric:
    """A family of one unlabelled sample."""
    family: Metric = FAMILIES[name].make()
    family.add_metric([], value)  # type: ignore[attr-defined]
    return family


# One per process, like Prometheus's own default registry: what /metrics reports.
METRICS = Metrics()
