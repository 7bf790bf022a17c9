"""The Lua unit layer: each tarantool/test/*.test.lua is a script on Tarantool's built-in
`tap` module, run by the tarantool binary alone (the procedures' tests on an in-memory
instance of their own), in well under a second each, on each Tarantool release."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LUA_TESTS = sorted((Path(__file__).resolve().parent.parent / "tarantool" / "test").glob("*.test.lua"))


pytestmark = pytest.mark.each_release


@pytest.mark.parametrize("script", LUA_TESTS, ids=lambda path: path.name)
def test_lua_module(script, tmp_path, tarantool_bin):
    done = subprocess.run(
        [tarantool_bin, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0 and "not ok" not in done.stdout, report
    planned = next(line for line in done.stdout.splitlines() if line.startswith("1.."))
    assert done.stdout.count("\nok ") == int(planned[3:]), report
