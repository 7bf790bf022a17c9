"""A conflict in replication is never skipped in silence: the replica stops following and
says so (`sessions.info`, the healthcheck, the metric), on two real instances."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sessions.console import Console

from .conftest import PASSWORD, make_pair

HEALTH = Path(__file__).resolve().parent.parent / "tarantool" / "health.lua"
ROW = (
    "box.space.sessions:insert(box.space.sessions:frommap({"
    "token = require('uuid').fromstr('%s'), user_id = 5, ip = '192.0.2.5', create = 1, activity = 1, "
    "expires = 4000000000, seq = require('sessions.schema').next_seq(), "
    "id = require('sessions.ids').make()}))"
)


def _eval(path: Path, code: str) -> Any:
    with Console(path / "tarantool.control") as console:
        return console.eval(code)


async def _until(check: Any, what: str, within: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


@pytest.mark.each_release
async def test_a_conflict_stops_the_replica_and_it_says_so(tmp_path, tarantool_bin):
    primary, replica, paths, socket = make_pair(tmp_path)
    await primary.start()
    await replica.start()
    try:
        token = "6f9619ff-8b86-4011-b42d-00cf4fc964ff"
        # The same token written on both sides: the replica has it already when the
        # primary's row arrives.
        _eval(
            paths["replica"],
            f"box.cfg{{read_only = false}} {ROW % token} box.cfg{{read_only = true}}",
        )
        _eval(paths["primary"], ROW % token)
        await _until(
            lambda: _eval(paths["replica"], "return sessions.info().replication_stopped") == 1,
            "the replica goes on after a conflict",
        )
        health = await asyncio.to_thread(
            subprocess.run,
            [tarantool_bin, str(HEALTH)],
            env={
                **os.environ,
                "SESSIONS_TT_LISTEN": socket["replica"],
                "SESSIONS_TARANTOOL_PASSWORD": PASSWORD,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert health.returncode == 1
        assert "replication from 1 peer(s) stopped on an error" in health.stdout
        assert _eval(paths["primary"], "return sessions.info().replication_stopped") == 0
    finally:
        await replica.stop()
        await primary.stop()
