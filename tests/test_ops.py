"""Operational endpoints, request ids, logs and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST

from sessions.api import METHODS
from sessions.metrics import ELECTION_FAMILIES

from .conftest import call, new_session, settings_for
from .service import Service, free_port


async def test_health_and_ready(client):
    assert await call(client, "/health") == (200, {"status": "success", "data": {"alive": True}})
    status, body = await call(client, "/ready")
    assert status == 200 and body["data"]["ready"] is True


async def test_ready_is_503_without_tarantool_while_health_stays_200(serve, fresh_tarantool):
    client = await serve(settings_for(fresh_tarantool))
    await fresh_tarantool.stop()
    assert (await call(client, "/health"))[0] == 200
    status, body = await call(client, "/ready")
    assert (status, body["code"]) == (503, "storage_unavailable")


async def test_probes_stay_open_with_api_keys(serve, tarantool):
    client = await serve(settings_for(tarantool, api_keys="a-test-key-8d1f0c2e"))
    assert (await call(client, "/health"))[0] == 200
    assert (await call(client, "/user?id=1"))[0] == 401
    closed = await serve(settings_for(tarantool, api_keys="a-test-key-8d1f0c2e", open_probes=False))
    assert (await call(closed, "/health"))[0] == 401


async def test_ops_can_be_switched_off(serve, tarantool):
    client = await serve(settings_for(tarantool, ops_enabled=False))
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        assert (await call(client, path))[0] == 404


async def test_metrics(client, user_id):
    session = await new_session(client, user_id, "198.51.100.77")
    await call(client, "/get", params={"token": session["token"]})
    await call(client, "/get", params={"token": "nope"})
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert re.search(r'sessions_requests_total\{code="success",method="get"\} [1-9]', text)
    assert re.search(r'sessions_requests_total\{code="token_not_found",method="get"\} [1-9]', text)
    assert 'sessions_request_duration_seconds_bucket{le="0.005",method="get"}' in text
    assert re.search(r"^sessions_stored [1-9]", text, re.M)
    assert "sessions_tarantool_up 1.0" in text
    assert "sessions_purged_total" in text
    # Bounded labels: no tokens, ids or addresses ever become label values.
    for secret in (session["token"], str(user_id), "198.51.100.77"):
        assert secret not in text
    methods = set(re.findall(r'method="([^"]+)"', text))
    assert methods <= {method.name for method in METHODS} | {"ops", "other"}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("bad id", False),
        ("a\tb", False),
        ("", False),
    ],
)
async def test_request_id_is_echoed_or_made(client, given, kept):
    response = await client.get("/user?id=1", headers={"X-Request-Id": given})
    echoed = response.headers["X-Request-Id"]
    if kept:
        assert echoed == given
    else:
        assert echoed != given and re.fullmatch(r"[0-9a-f]{16}", echoed)


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


def test_json_logs_carry_the_request_id_and_a_masked_configuration(tmp_path):
    service = Service(
        tmp_path / "data",
        SESSIONS_LOG_FORMAT="json",
        SESSIONS_ACCESS_LOG="true",
        SESSIONS_TARANTOOL_PASSWORD="pw-in-config-8d1f0c2e",
    )
    try:
        status, _ = service.request("/user?id=1")
        assert status == 200
    finally:
        service.stop(signal.SIGTERM)
    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "sessions.access"]
    assert access and re.fullmatch(r"[0-9a-f]{16}", access[0]["request_id"])
    # The configuration as a JSON field of its own, not JSON inside the message.
    config = next(line for line in lines if line["message"] == "configuration")
    assert config["configuration"]["tarantool_password"] == "**********"
    assert config["configuration"]["port"] == service.port
    assert "pw-in-config-8d1f0c2e" not in service.output()
    # ISO 8601 with milliseconds and the zone.
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", line["time"]) for line in lines
    )


def test_text_logs_carry_iso_times(tmp_path):
    service = Service(tmp_path / "data")
    service.stop(signal.SIGTERM)
    first = service.output().splitlines()[0]
    assert ISO_TIME.match(first) and first.split(" ")[1] == "INFO", first


def test_ops_on_a_port_of_their_own(tmp_path):
    ops_port = free_port()
    service = Service(tmp_path / "data", SESSIONS_OPS_PORT=str(ops_port))
    try:
        assert service.request("/health")[0] == 404
        assert service.request("/new?user_id=1&ip=192.0.2.1")[0] == 200
        service_port, service.port = service.port, ops_port
        assert service.request("/health")[0] == 200
        service.port = service_port
    finally:
        service.stop(signal.SIGTERM)


CLOSED = {"SESSIONS_API_KEYS": "health-key-8d1f0c2e", "SESSIONS_OPEN_PROBES": "false"}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SESSIONS_OPS_PORT": "free"},
        {"SESSIONS_API_KEYS": "health-key-8d1f0c2e", "SESSIONS_OPEN_PROBES": "false"},
        {
            "SESSIONS_API_KEYS": "health-key-8d1f0c2e",
            "SESSIONS_OPEN_PROBES": "false",
            "SESSIONS_OPS_PORT": "free",
        },
        {"SESSIONS_OPS_ENABLED": "false"},
    ],
    ids=["plain", "ops-port", "closed-probes", "closed-probes-ops-port", "no-ops"],
)
def test_the_healthcheck_command_finds_the_service_as_configured(tmp_path, env):
    """`sessions health` (the containers' healthcheck) probes where the settings serve, with a
    key where probes are closed: healthy while the service serves, unhealthy once it stops."""
    env = {name: str(free_port()) if value == "free" else value for name, value in env.items()}
    service = Service(tmp_path / "data", **env)
    probe_env = {**os.environ, **env, "SESSIONS_PORT": str(service.port)}

    def health() -> int:
        return subprocess.run(
            [sys.executable, "-m", "sessions", "health"], env=probe_env, capture_output=True, timeout=30
        ).returncode

    try:
        assert health() == 0
    finally:
        service.stop(signal.SIGTERM)
    assert health() == 1


def test_with_workers_every_scrape_sees_the_whole_service(tmp_path):
    """SESSIONS_WORKERS=2: whichever worker answers a scrape reports every worker's counts,
    one series each (label `worker`): no series ever goes backwards from one scrape to the
    next, even within the second after the requests, and once every worker has shared, every
    scrape sums to the whole."""
    service = Service(tmp_path / "data", SESSIONS_WORKERS="2")
    try:
        # A worker shares its counts once it listens: until both do.
        deadline = time.monotonic() + 10
        while len({labels["worker"] for labels, _ in _samples(_scrape(service), "sessions_in_progress")}) < 2:
            assert time.monotonic() < deadline, "the second worker never listened"
            time.sleep(0.05)
        for i in range(40):
            status, _ = service.request(f"/new?user_id={i + 1}&ip=192.0.2.1")
            assert status == 200

        def counted() -> list[tuple[str, float]]:
            return [
                (labels["worker"], float(value))
                for labels, value in _samples(_scrape(service), "sessions_requests_total")
                if labels["method"] == "new" and labels["code"] == "success"
            ]

        # Each worker shares its counts once a second, and when it answers a scrape: until a
        # scrape sees them all, every series only ever grows.
        deadline, highest = time.monotonic() + 10, dict[str, float]()
        while sum(highest.values()) < 40:
            assert time.monotonic() < deadline, highest
            for worker, value in counted():
                assert value >= highest.get(worker, 0), (worker, value, highest)
                highest[worker] = value
        totals, workers = [], set()
        for _ in range(8):
            found = counted()
            workers |= {worker for worker, _ in found}
            totals.append(sum(value for _, value in found))
        assert totals == [40.0] * 8
        assert len(workers) == 2, (highest, totals)  # both took requests, through SO_REUSEPORT
    finally:
        service.stop(signal.SIGTERM)


def _samples(text: str, name: str) -> list[tuple[dict[str, str], str]]:
    """The samples of one metric in an exposition, each as (labels, value)."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].rpartition("} ")
            found.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), value))
    return found


def _scrape(service: Service) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=5) as answer:
        return answer.read().decode()


async def test_version_and_build_info_say_what_runs(serve, settings):
    import sessions

    client = await serve(settings.model_copy(update={"revision": "abc123def456"}))
    status, body = await call(client, "/version")
    assert (status, body["data"]) == (200, {"version": sessions.__version__, "revision": "abc123def456"})
    response = await client.get("/metrics")
    # The exposition format's version, as Prometheus negotiates it.
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST and "version=" in CONTENT_TYPE_LATEST
    text = await response.text()
    assert f'sessions_build_info{{revision="abc123def456",version="{sessions.__version__}"}} 1.0' in text


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    command = ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"]
    done = subprocess.run(command, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


async def test_a_checkout_reports_its_git_revision(client):
    expected = await asyncio.to_thread(_git_revision)
    assert (await call(client, "/version"))[1]["data"]["revision"] == expected


def _monitoring_expressions() -> list[str]:
    ops = Path(__file__).resolve().parent.parent / "ops"
    rules = yaml.safe_load((ops / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ops / "grafana" / "sessions.json").read_text())
    return expressions + [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


async def test_the_alerts_and_the_dashboard_use_only_metrics_the_service_exports(client, user_id):
    """ops/prometheus/alerts.yml and ops/grafana/sessions.json (promtool checks the rules in
    `make lint`) name no metric the service does not export."""
    await new_session(client, user_id)
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in (await (await client.get("/metrics")).text()).splitlines()
        if line and not line.startswith("#")
    }
    # Those of elections only where there are elections (tests/test_election.py scrapes them).
    exported |= ELECTION_FAMILIES
    expressions = _monitoring_expressions()
    named = {name for expr in expressions for name in re.findall(r"\b(?:sessions|process)_[a-z_]+", expr)}
    assert named and named <= exported, named - exported
