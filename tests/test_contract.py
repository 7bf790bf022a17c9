"""The wire contract between the service and its Lua (sessions/contract.py, and the
declarations of tarantool/sessions/ that `sessions.describe()` reports): the two sides agree,
and a service refuses a Lua that speaks another one, naming each difference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sessions.console import Console
from sessions.contract import (
    BUCKETS,
    CONTEXT,
    ERROR_ITEM,
    ERRORS,
    EVENT_FIELDS,
    FIELDS,
    IDEM,
    INFO_FIELDS,
    KINDS,
    NEW,
    OPERATIONS,
    PROCEDURES,
    RULES,
    differences,
)
from sessions.models import SessionObject

from .service import free_port

ROOT = Path(__file__).resolve().parent.parent


def _described() -> dict[str, object]:
    """A `describe()` answer as the Lua of this release gives it (checked against the real one
    by test_the_lua_and_the_service_agree)."""
    return {
        "procedures": [name.removeprefix("sessions.") for name in PROCEDURES],
        "context": list(CONTEXT),
        "rules": list(RULES),
        "errors": list(ERRORS),
        "error_item": list(ERROR_ITEM),
        "kinds": list(KINDS),
        "info": list(INFO_FIELDS),
        "idem": list(IDEM),
        "events": list(EVENT_FIELDS),
        "buckets": BUCKETS.wire(),
        "fields": [*FIELDS, "expires", "ttl", "seq"],
        "operations": {
            op.name: {"args": list(op.args), "reply": list(op.reply), "batch": op.batch, "bulk": op.bulk}
            for op in OPERATIONS
        },
    }


@pytest.mark.each_release
def test_the_lua_and_the_service_agree(tarantool):
    with Console(tarantool.console_path) as console:
        described = console.eval("return sessions.describe()")
    assert differences(described) == []
    assert [f"sessions.{name}" for name in described["procedures"]] == sorted(PROCEDURES)


def test_the_session_fields_begin_with_the_session_objects():
    # The six of the original design first; `id`, shown when asked (`with=id`), among the rest.
    six = [name for name in SessionObject.model_fields if name != "id"]
    assert sorted(FIELDS[: len(six)]) == sorted(six)
    assert "id" in FIELDS


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["operations"].pop("rotate"), "operation rotate: the Lua has no such operation"),
        (lambda d: d["operations"]["new"]["args"].remove("ttl"), "operation new arguments"),
        (lambda d: d["operations"]["get"]["reply"].append("flag"), "operation get reply"),
        (lambda d: d["operations"]["list"].update(bulk=False), "operation list: bulk is True here"),
        (lambda d: d["operations"]["delete"].update(batch=False), "operation delete: batch is True here"),
        (lambda d: d["procedures"].remove("describe"), "procedures"),
        (lambda d: d["context"].append("tenant"), "call context"),
        (lambda d: d["rules"].remove("cap"), "liveness rules"),
        (lambda d: d["errors"].remove("Overloaded"), "error types"),
        (lambda d: d["fields"].reverse(), "session fields"),
        (lambda d: d["kinds"].append("device"), "kinds of key"),
        (lambda d: d["info"].remove("term"), "info fields"),
        (lambda d: d["error_item"].reverse(), "error item"),
        (lambda d: d["idem"].remove("window"), "idem fields"),
        (lambda d: d["buckets"].update(count=3000), "token buckets"),
    ],
)
def test_every_difference_is_named(change, named):
    described = _described()
    assert differences(described) == []
    change(described)
    found = differences(described)
    assert len(found) == 1 and found[0].startswith(named), found


def test_an_operation_this_side_calls_differently_is_named():
    moved = replace(NEW, args=(*NEW.args, "tenant"))
    assert differences(_described(), [moved]) == [
        "operation new arguments: this service has ['idem', 'ip', 'patch', 'tenant', 'token', 'ttl', "
        "'user_id'], the Lua ['idem', 'ip', 'patch', 'token', 'ttl', 'user_id']"
    ]


@pytest.mark.parametrize(
    ("module", "declared", "changed", "named"),
    [
        (
            "operations/new.lua",
            "args = {'token', 'user_id', 'ip', 'patch', 'ttl', 'idem'}",
            "args = {'token', 'user_id', 'ip', 'patch', 'own_ttl', 'idem'}",
            "runs procedures of another release: operation new arguments",
        ),
        # A release from before the contract had no `describe` at all.
        (
            "procedures.lua",
            "function procedures.describe()",
            "function procedures.portray()",
            "has no sessions.describe",
        ),
    ],
    ids=["an argument renamed", "no describe"],
)
@pytest.mark.each_release
def test_a_service_refuses_to_start_on_lua_of_another_contract(tmp_path, module, declared, changed, named):
    """The Lua of another release: `serve` exits 1 with one line naming the difference, before
    it serves anything."""
    scripts = tmp_path / "tarantool"
    shutil.copytree(ROOT / "tarantool", scripts)
    changing = scripts / "sessions" / module
    text = changing.read_text()
    assert declared in text
    changing.write_text(text.replace(declared, changed))
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "sessions", "serve"],
        env={
            **os.environ,
            "SESSIONS_PORT": port,
            "SESSIONS_DATA_DIR": str(tmp_path / "data"),
            "SESSIONS_TARANTOOL_SCRIPTS": str(scripts),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("operations", [[], {"new": []}, {"new": "x"}])
def test_a_describe_answer_of_the_wrong_shape_is_a_named_difference(operations):
    described = {**_described(), "operations": operations}
    assert "operation new: the Lua has no such operation" in differences(described, [NEW])
