"""The PHP and Node clients (clients/php, clients/node), each through its own test suite
(PHPUnit; node --test) against real services started here: one open, one with API keys, one
that keeps tokens only as hashes (and so lists sessions without them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import sessions

from .gateway import Gateway
from .service import Service, api_methods_not_called, requests_by_method

ROOT = Path(__file__).resolve().parent.parent
KEY = "client-test-key-0123456789"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment a client's test suite reads: where the services answer, the key, the
    open service's Tarantool (which a test pauses to make the service answer 503), and a
    gateway (tests/gateway.py) that serves the open service under `/sessions`, records what
    it gets (`SESSIONS_GATEWAY_ROOT/seen`) and answers canned errors (`.../canned/`)."""
    root = tmp_path_factory.mktemp("clients")
    # A short storage timeout: the paused Tarantool's 503 comes after half a second.
    open_service = Service(root / "open", SESSIONS_TARANTOOL_TIMEOUT="0.5", SESSIONS_EVENTS="on")
    keyed = Service(root / "keyed", SESSIONS_API_KEYS=KEY)
    hashed = Service(root / "hashed", SESSIONS_TOKEN_STORAGE="hash")
    gateway = Gateway(f"http://127.0.0.1:{open_service.port}")
    try:
        yield {
            "SESSIONS_URL": f"http://127.0.0.1:{open_service.port}",
            "SESSIONS_KEYED_URL": f"http://127.0.0.1:{keyed.port}",
            "SESSIONS_KEY": KEY,
            "SESSIONS_HASHED_URL": f"http://127.0.0.1:{hashed.port}",
            "SESSIONS_TARANTOOL_PID": str(open_service.tarantool_pid),
            "SESSIONS_GATEWAY_URL": gateway.url,
            "SESSIONS_GATEWAY_ROOT": gateway.root,
        }
    finally:
        gateway.close()
        for service in (open_service, keyed, hashed):
            service.stop(signal.SIGTERM)


def _suite(tool: str, command: list[str], directory: str, services: dict[str, str]) -> str:
    """A client's own test suite, run in its directory with the services' environment."""
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed (make test installs it)")
        pytest.skip(f"{tool} is not installed (make test installs it)")
    done = subprocess.run(
        command,
        cwd=ROOT / "clients" / directory,
        env={**os.environ, **services},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _requests(services: dict[str, str]) -> dict[str, float]:
    """Requests by API method the two services have answered, from their /metrics."""
    import urllib.request

    counts: dict[str, float] = {}
    for url, key in (
        (services["SESSIONS_URL"], None),
        (services["SESSIONS_KEYED_URL"], services["SESSIONS_KEY"]),
    ):
        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            for method, count in requests_by_method(answer.read().decode()).items():
                counts[method] = counts.get(method, 0.0) + count
    return counts


def _suite_calls_every_method(tool: str, command: list[str], directory: str, services: dict[str, str]) -> str:
    """A client's suite, and that it called each of the API's methods of the services: their
    own request counts say so, so a method missing from the client or sent to a wrong path
    fails here whatever the client's source says."""
    before = _requests(services)
    report = _suite(tool, command, directory, services)
    assert api_methods_not_called(before, _requests(services)) == [], report
    return report


def test_the_node_client_passes_its_suite(services):
    report = _suite_calls_every_method(
        "node", ["node", "--test", "--test-reporter=tap", "test/"], "node", services
    )
    assert "\n# fail 0" in report and "\n# skipped 0" in report, report


def test_the_node_clients_type_declarations_pass_tsc():
    """index.d.ts against clients/node/typecheck.ts, a program using all of it, under --strict
    (tsc: Debian's node-typescript, which make installs; no dependency of the client)."""
    if shutil.which("tsc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tsc is not installed (make test installs node-typescript)")
        pytest.skip("tsc is not installed (make test installs node-typescript)")
    done = subprocess.run(
        ["tsc", "-p", "tsconfig.json"], cwd=ROOT / "clients/node", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_php_client_passes_its_suite(services):
    report = _suite_calls_every_method(
        "phpunit", ["phpunit", "--colors=never", "--configuration", "phpunit.xml"], "php", services
    )
    assert "OK (" in report and "Skipped" not in report, report


def test_the_clients_are_versioned_with_the_service():
    node = json.loads((ROOT / "clients/node/package.json").read_text())
    php = json.loads((ROOT / "clients/php/composer.json").read_text())
    assert node["version"] == sessions.__version__
    # Composer takes a release's version from its tag; the client says its own in a constant.
    client = (ROOT / "clients/php/src/Client.php").read_text()
    assert f"public const VERSION = '{sessions.__version__}';" in client
    assert node.get("dependencies", {}) == {}
    assert set(php["require"]) == {"php", "ext-curl", "ext-json"}
