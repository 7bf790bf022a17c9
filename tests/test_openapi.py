"""The OpenAPI description: valid, in the repo as built, true to the running service."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from sessions.errors import BY_CODE
from sessions.openapi import build_spec

from .browser import browser_page
from .conftest import FUZZ_EXAMPLES, call, new_session, settings_for
from .service import Service

SPEC = build_spec()
ROOT = Path(__file__).resolve().parent.parent


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    # The response schemas refer to #/components/...: resolve them against the whole document.
    return Draft202012Validator({**schema, "components": SPEC["components"]})


def test_the_document_is_valid_openapi_3_1():
    validate(SPEC)


def test_the_copy_in_the_repo_is_current():
    # Built here rather than taken from SPEC, so that mutation testing sees this test use it.
    assert json.loads((ROOT / "openapi.json").read_text()) == build_spec(), (
        "run: python -m sessions openapi > openapi.json"
    )


def test_each_error_code_says_its_family_and_when_a_client_may_retry():
    """What the clients need to act on an answer, in the document they are checked against:
    `x-family` (what the caller does) and `x-retry` (whether to repeat the call) of each
    code, and `x-retry-safe` on each operation (whether repeating it may do its work twice)."""
    code = SPEC["components"]["schemas"]["Error"]["properties"]["code"]
    assert list(code["x-family"]) == list(code["x-retry"]) == code["enum"]
    for name, family in code["x-family"].items():
        # Only this code says the session is not there; a request that was wrong is 4xx;
        # whatever else says the service cannot answer now, not "no session".
        status = BY_CODE[name].status
        expected = (
            "not_found" if name == "token_not_found" else "invalid_input" if status < 500 else "unavailable"
        )
        assert family == expected, name
    rules = {
        rule: {name for name, given in code["x-retry"].items() if given == rule}
        for rule in code["x-retry"].values()
    }
    assert rules["always"] == {"overloaded"}  # shed before any of its work was done
    assert rules["if_safe"] == {"storage_unavailable", "storage_full", "storage_write_failed"}
    assert "internal_error" in rules["never"] and set(rules) == {"always", "if_safe", "never"}
    for path, item in SPEC["paths"].items():
        safe = {operation["x-retry-safe"] for operation in item.values()}
        safe_paths = ("/get", "/user", "/ip", "/user/count", "/ip/count", "/session", "/events")
        assert safe == {path in safe_paths}, path
        with_key = {operation.get("x-retry-safe-with") for operation in item.values()}
        assert with_key == {"Idempotency-Key" if path == "/new" else None}, path


async def test_served_at_openapi_json(client):
    response = await client.get("/openapi.json")
    assert response.status == 200 and await response.json() == SPEC


def test_every_route_is_documented_and_every_documented_route_answers(client):
    router = client.server.runner.server.request_handler
    api_paths = {route.path for route in router.routes if "POST" in route.methods}
    assert api_paths == set(SPEC["paths"])


@pytest.mark.parametrize("path", sorted(SPEC["paths"]))
@pytest.mark.parametrize("method", ["get", "post"])
async def test_documented_operations_answer_and_match_their_schemas(client, user_id, path, method):
    session = await new_session(client, user_id)
    # A good value for each parameter, by name: a new method with known parameters needs none.
    good = {"user_id": str(user_id), "id": str(user_id), "ip": "192.0.2.1", "token": session["token"]}
    good["except"] = session["token"]
    documented = SPEC["paths"][path][method]["parameters"]
    params = {p["name"]: good[p["name"]] for p in documented if p["in"] == "query" and p["required"]}
    params.update({p["name"]: good[p["name"]] for p in documented if p["name"] == "except"})
    if path in ("/get", "/del", "/rotate"):
        params["token"] = session["token"]  # required one way or another: here in the query
    if path in ("/session", "/session/del"):
        opened = await call(client, "/new", params={"user_id": str(user_id), "ip": "192.0.2.1", "with": "id"})
        params["id"] = opened[1]["data"]["id"]
    responses = SPEC["paths"][path][method]["responses"]
    for query in (params, {"token": "x", "user_id": "0", "id": "-1", "ip": "no"}):
        status, body = await call(client, path, method.upper(), params=query)
        assert str(status) in responses, (path, status)
        validator(responses[str(status)]["content"]["application/json"]["schema"]).validate(body)


def test_examples_match_their_schemas():
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response["content"]["application/json"]
                check = validator(content["schema"])
                examples = [content["example"]] if "example" in content else []
                examples += [e["value"] for e in content.get("examples", {}).values()]
                assert examples, (path, method, status)
                for example in examples:
                    check.validate(example)


def test_examples_of_sessions_by_id_have_their_id_and_no_token_and_listings_show_both_kinds():
    def shown(path: str) -> list[object]:
        content = SPEC["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        found = [content["example"]] if "example" in content else []
        return found + [e["value"] for e in content.get("examples", {}).values()]

    for path in ("/session", "/session/del"):
        assert [("id" in e["data"], "token" in e["data"]) for e in shown(path)] == [(True, False)], path
    for path in ("/user", "/ip"):
        kinds = {tuple(sorted({"id", "token"} & set(e["data"][0]))) for e in shown(path)}
        assert kinds == {("token",), ("id",)}, path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("openapi") / "data")
    yield running
    running.stop(signal.SIGTERM)


DOCS_KEY = "docs-test-key-8d1f"
# What a person types into the fields "Try it out" leaves empty (the rest are examples); the
# token of a session of its own goes in X-Session-Token on /get, /del and /rotate (another
# user's and address's, which /user/del and /ip/del leave alone).
TYPED = {"user_id": "1", "id": "1", "ip": "192.0.2.1"}
TOKEN_BASED = ("get", "del", "rotate")
ID_BASED = ("session", "session/del")


def _operation_id(block: str) -> str:
    """The operationId of an operation's block on the page (its id, with `/` escaped)."""
    return block.removeprefix("operations-default-").replace("\\", "")


@pytest.fixture
def keyed_service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "keyed", SESSIONS_API_KEYS=DOCS_KEY, SESSIONS_EVENTS="on")
    yield running
    running.stop(signal.SIGTERM)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
@pytest.mark.timeout(300)
async def test_try_it_out_works_on_every_operation_in_a_real_browser(keyed_service, tmp_path):
    """/docs in Debian's Chromium as a person uses it, with API keys on: the page loads without
    a key, shows the padlock on every operation, Authorize takes one, and "Try it out" then
    "Execute" answers every operation (GET and POST) with its envelope: no body refused on a
    GET, no 401, no fetch error. No token is filled in for a person: on /get, /del and /rotate
    the token typed into the X-Session-Token header alone is the one used."""
    headers = {"Authorization": f"Bearer {DOCS_KEY}"}
    base = f"http://127.0.0.1:{keyed_service.port}"
    async with aiohttp.ClientSession(headers=headers) as http:
        tokens, ids = [], []
        for _ in range(2 * len(TOKEN_BASED)):
            async with http.post(f"{base}/new", params={"user_id": "2", "ip": "192.0.2.2"}) as made:
                tokens.append((await made.json())["data"]["token"])
        for _ in range(2 * len(ID_BASED)):
            async with http.post(
                f"{base}/new", params={"user_id": "2", "ip": "192.0.2.2", "with": "id"}
            ) as made:
                ids.append((await made.json())["data"]["id"])
    script = (Path(__file__).parent / "docs_page.js").read_text()
    async with browser_page(f"{base}/docs", tmp_path / "profile") as page:
        await page.evaluate(script)
        count = await page.evaluate("docsTest.operations()")
        assert await page.evaluate("docsTest.padlocks()") == count
        await page.evaluate("docsTest.openAuthorize()")
        await page.send("Input.insertText", text=DOCS_KEY)
        assert "locked" in await page.evaluate("docsTest.closeAuthorize()")
        answers, sent = {}, {}
        for i in range(count):
            operation = _operation_id(await page.evaluate(f"docsTest.id({i})"))
            empty = await page.evaluate(f"docsTest.tryOut({i})")
            typed = dict(TYPED)
            if operation.split("_")[0] in TOKEN_BASED:
                assert "token" in empty, operation  # the query's field is not pre-filled
                typed["X-Session-Token"] = sent[operation] = tokens.pop()
            if operation.split("_")[0] in ID_BASED:
                typed["id"] = ids.pop()  # a session's own id: a user id is not one
            for name in empty:
                if name in typed:
                    await page.evaluate(f"docsTest.focus({i}, {json.dumps(name)})")
                    await page.send("Input.insertText", text=typed[name])
        await page.evaluate("docsTest.settle()")
        for i in range(count):
            operation, status, body = await page.evaluate(f"docsTest.execute({i})")
            answers[_operation_id(operation)] = (status, json.loads(body))
    documented = {f"{path.strip('/')}_{method}" for path, item in SPEC["paths"].items() for method in item}
    assert set(answers) == documented
    for operation, (status, body) in answers.items():
        assert (status, body["status"]) == ("200", "success"), (operation, body)
        if operation in sent and not operation.startswith("rotate"):
            assert body["data"]["token"] == sent[operation], operation


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
@pytest.mark.timeout(120)
async def test_without_api_keys_the_docs_page_shows_no_padlock(service, tmp_path):
    """A service that takes no key documents no security: Swagger UI shows no padlock on any
    operation and no Authorize button."""
    script = (Path(__file__).parent / "docs_page.js").read_text()
    async with browser_page(f"http://127.0.0.1:{service.port}/docs", tmp_path / "profile") as page:
        await page.evaluate(script)
        assert await page.evaluate("docsTest.operations()") == 2 * len(SPEC["paths"])
        assert await page.evaluate("docsTest.padlocks()") == 0
        assert await page.evaluate("docsTest.authorizeButton()") is False


def test_the_document_says_api_keys_only_where_the_service_takes_them():
    """Security, its scheme and the 401 answer are in the document of a service with API keys
    only; and no token parameter carries an example Swagger UI would pre-fill."""
    keyed = build_spec(keys=True)
    assert "security" not in SPEC and "securitySchemes" not in SPEC["components"]
    assert (
        keyed["security"] == [{"bearerAuth": []}] and "bearerAuth" in keyed["components"]["securitySchemes"]
    )
    validate(keyed)
    for spec, answered in ((SPEC, False), (keyed, True)):
        for item in spec["paths"].values():
            for operation in item.values():
                assert ("401" in operation["responses"]) is answered
                for param in operation["parameters"]:
                    if param["name"] in ("token", "except", "X-Session-Token"):
                        assert "example" not in param and "examples" not in param, param
                        assert "example" not in param["schema"] and "default" not in param["schema"]


async def test_the_served_document_is_the_configurations(serve, tarantool):
    keyed = await serve(settings_for(tarantool, api_keys="docs-test-key-8d1f0c2e9a"))
    served = await (await keyed.get("/openapi.json")).json()
    assert served == build_spec(keys=True)


fuzz = schemathesis.openapi.from_dict(SPEC)
# One test per operation by plain pytest parametrization (not schemathesis' own collector, whose
# cases pytest-xdist does not expand), each drawing its cases with hypothesis.
OPERATIONS = sorted((path, method.upper()) for path, item in SPEC["paths"].items() for method in item)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_schemathesis(path, method, service):
    base_url = f"http://127.0.0.1:{service.port}"

    @given(case=fuzz[path][method].as_strategy())
    @settings(max_examples=FUZZ_EXAMPLES // 16, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # Three things no schema can say make a schema-valid request rightly refused: a cursor
        # is opaque (only those the service hands out are valid), a token sent both in the
        # query and in X-Session-Token must be the same one, and /user/del keeps one session,
        # named by a token or by an id.
        query, headers = case.query or {}, case.headers or {}
        both_ways = ("token" in query or "except" in query) and "X-Session-Token" in headers
        two_kept = "except_id" in query and ("except" in query or "X-Session-Token" in headers)
        ambiguous = "after" in query or both_ways or two_kept
        excluded = [positive_data_acceptance] if ambiguous else []
        case.call_and_validate(base_url=base_url, excluded_checks=excluded)

    check()
