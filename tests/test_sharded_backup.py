"""A sharded cluster's backup and restore (`sessions cluster-backup`, `cluster-restore`): one
archive per replica set from its master and a cluster manifest, taken while the service
writes and the rebalancer moves buckets; every storage wiped and restored. Real processes
(tests/sharded.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sessions import cluster as cluster_module
from sessions.admin import ROLE_FILE, AdminError
from sessions.cluster import CLUSTER_MANIFEST, cluster_backup, cluster_restore
from sessions.config import Settings

from .conftest import call
from .sharded import Cluster, running

pytestmark = pytest.mark.each_release

# The rebalancer's pace: one round moves all a set should get, one bucket at a time, so that
# its routes are still being applied when the backup starts (seconds, not milliseconds).
_FAST = {"rebalancer_max_receiving": 4096, "rebalancer_max_sending": 1}
# Buckets sent by hand from set 1 to set 2 before the backup, which the rebalancer then
# sends back while the backup starts.
_UNBALANCE = 400


@pytest.fixture
async def cluster(tmp_path: Path, tarantool_bin: str) -> AsyncIterator[Cluster]:
    async with running(Cluster(tmp_path / "cluster", tarantool_bin, vshard=dict(_FAST))) as started:
        yield started


async def _restart(cluster: Cluster) -> None:
    """The cluster's processes started again on their data dirs (the router last)."""
    for storage in cluster.storages:
        storage.console = None
        await storage.process.start()
    assert cluster.router is not None
    cluster._router_console = None
    await cluster.router.start()
    cluster.bootstrap()


def _files(data_dir: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file() and p.suffix in (".snap", ".xlog")
    }


def _moving(cluster: Cluster) -> list[Any]:
    return [s.eval("return require('sessions.sharded').moving()") for s in cluster.storages]


def _unbalance(cluster: Cluster) -> None:
    """Send _UNBALANCE of set 1's buckets to set 2 by hand, and wake the rebalancer until it
    is sending them back."""
    first, second = cluster.storages
    sent = first.eval(
        f"local n = 0 for _, b in box.space._bucket.index.status:pairs({{'active'}}) do "
        f"if n == {_UNBALANCE} then break end "
        f"local ok = vshard.storage.bucket_send(b.id, '{second.replicaset}', {{timeout = 10}}) "
        "if ok then n = n + 1 end end return n"
    )
    assert sent == _UNBALANCE
    deadline = time.monotonic() + 30
    # The rebalancer plans only once no bucket is garbage anywhere: it is woken until its
    # routes are being applied on set 2.
    while _moving(cluster)[1] != "the rebalancer is sending buckets":
        assert time.monotonic() < deadline, f"the rebalancer did not start: {_moving(cluster)}"
        for storage in cluster.storages:
            storage.eval("vshard.storage.rebalancer_wakeup()")
        time.sleep(0.02)


_FOUND = (
    "local found = {{}} for _, t in ipairs({tokens}) do "
    "if box.space.sessions:get(require('uuid').fromstr(t)) then found[#found + 1] = t end end return found"
)


def _stored(cluster: Cluster, tokens: list[str]) -> list[list[str]]:
    """Which of `tokens` each storage holds."""
    listed = "{" + ",".join(f"'{t}'" for t in tokens) + "}"
    return [storage.eval(_FOUND.format(tokens=listed)) or [] for storage in cluster.storages]


async def _write(
    client: TestClient, first_user: int, acknowledged: list[tuple[float, str]], stop: asyncio.Event
) -> None:
    user = first_user
    while not stop.is_set():
        user += 1
        status, body = await call(client, "/new", params={"user_id": str(user), "ip": "192.0.2.40"})
        assert status == 200, body
        acknowledged.append((time.monotonic(), body["data"]["token"]))


def _restore_cli(backup: Path, data_dir: Path, which: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessions", "cluster-restore", str(backup), which],
        env={"SESSIONS_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_cluster_backup_under_writes_and_moves_restores_every_session_once(cluster, serve, tmp_path):
    client = await serve(cluster.service_settings())
    acknowledged: list[tuple[float, str]] = []
    stop = asyncio.Event()
    writers = [
        asyncio.create_task(_write(client, 8_000_000 + 100_000 * i, acknowledged, stop)) for i in range(3)
    ]
    while len(acknowledged) < 300:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.to_thread(_unbalance, cluster)
    active = cluster.active_buckets()
    backup = tmp_path / "backup"
    began = time.monotonic()
    manifest = await asyncio.to_thread(cluster_backup, backup, [s.process.data_dir for s in cluster.storages])
    # The rebalancer had routes to apply: they were finished before the checkpoints, and it
    # runs again after the backup.
    assert cluster.active_buckets() != active
    assert [s.eval("return vshard.storage.internal.is_rebalancer_active") for s in cluster.storages] == [
        True
    ] * 2
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*writers)
    before = [token for at, token in acknowledged if at < began]

    assert sorted(p.name for p in backup.iterdir()) == [CLUSTER_MANIFEST, "set-1.tar.gz", "set-2.tar.gz"]
    assert {oct(p.stat().st_mode & 0o777) for p in backup.iterdir()} == {"0o600"}
    assert json.loads((backup / CLUSTER_MANIFEST).read_text()) == manifest
    sets = sorted(manifest["replicasets"].values(), key=lambda entry: entry["number"])
    assert [entry["archive"] for entry in sets] == ["set-1.tar.gz", "set-2.tar.gz"]
    held = [sum(last - first + 1 for first, last in entry["buckets"]) for entry in sets]
    assert sum(held) == manifest["bucket_count"] == 4096
    assert manifest["sessions"] == sum(entry["sessions"] for entry in sets) >= len(before)
    assert manifest["numbers"] == {s.replicaset: n for n, s in enumerate(cluster.storages, 1)}

    await cluster.stop()
    data_dirs = [s.process.data_dir for s in cluster.storages]
    untouched = [_files(d) for d in data_dirs]

    # Refused, on every set, with nothing touched: a damaged or missing archive of any set,
    # a manifest whose buckets are not each in one set, a manifest that is not one.
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    data = bytearray((damaged / "set-2.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "set-2.tar.gz").write_bytes(bytes(data))
    missing = tmp_path / "missing"
    shutil.copytree(backup, missing)
    (missing / "set-1.tar.gz").unlink()
    refusals: dict[Path, str] = {damaged: "damaged", missing: "missing"}
    for name, change in {
        "short": lambda runs: [*runs[:-1], [runs[-1][0], runs[-1][1] - 1]],
        "twice": lambda runs: (
            [*runs, [1, 1]] if all(first > 1 for first, _ in runs) else [*runs, [4096, 4096]]
        ),
    }.items():
        edited = tmp_path / name
        shutil.copytree(backup, edited)
        bad = json.loads((edited / CLUSTER_MANIFEST).read_text())
        first_set = next(iter(bad["replicasets"].values()))
        first_set["buckets"] = change(first_set["buckets"])
        (edited / CLUSTER_MANIFEST).write_text(json.dumps(bad))
        refusals[edited] = "not each in one replica set"
    garbage = tmp_path / "garbage"
    shutil.copytree(backup, garbage)
    (garbage / CLUSTER_MANIFEST).write_text('{"format": 1, "replicasets": []}')
    refusals[garbage] = "not a manifest"
    for source, reason in refusals.items():
        for number, data_dir in enumerate(data_dirs, 1):
            with pytest.raises(AdminError, match=reason):
                cluster_restore(Settings(data_dir=data_dir), source, str(number))
    result = await asyncio.to_thread(_restore_cli, damaged, data_dirs[0], "1")
    assert result.returncode == 1, result
    assert result.stderr.startswith("sessions cluster-restore:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert [_files(d) for d in data_dirs] == untouched

    # Every storage wiped, then each set restored from the backup (the second by its uuid).
    for data_dir in data_dirs:
        shutil.rmtree(data_dir)
    # Set 1's instance a replica by its role file (a failover swapped back since the backup):
    # restored, it is its set's primary.
    data_dirs[0].mkdir()
    role_file = data_dirs[0] / ROLE_FILE
    role_file.write_text(json.dumps({"role": "replica", "primary_at": "elsewhere:3301", "generation": 3}))
    restored = [
        cluster_restore(Settings(data_dir=data_dirs[0]), backup, "1"),
        cluster_restore(
            Settings(data_dir=data_dirs[1]), backup / CLUSTER_MANIFEST, cluster.storages[1].replicaset
        ),
    ]
    assert [r["sessions"] for r in restored] == [entry["sessions"] for entry in sets]
    assert json.loads(role_file.read_text()) == {"role": "primary", "generation": 4}
    assert json.loads((data_dirs[1] / ROLE_FILE).read_text())["role"] == "primary"
    await _restart(cluster)

    # Each set holds what its archive says: its buckets and its sessions.
    for storage, entry in zip(cluster.storages, sets, strict=True):
        ids = storage.eval(
            "local ids = {} for _, b in box.space._bucket.index.status:pairs({'active'}) do "
            "ids[#ids + 1] = b.id end return ids"
        )
        assert sum(last - first + 1 for first, last in entry["buckets"]) == len(ids)
        assert all(any(first <= b <= last for first, last in entry["buckets"]) for b in ids)
        assert storage.eval("return box.space.sessions:len()") == entry["sessions"]
    # Every session acknowledged before the backup began is on exactly one storage, and
    # the service reads it through the router.
    stored = _stored(cluster, before)
    assert sorted(stored[0] + stored[1]) == sorted(before)
    reader = await serve(cluster.service_settings())
    answers = [(await call(reader, "/get", params={"token": token}))[0] for token in before]
    assert answers == [200] * len(before)


async def test_a_backup_lacking_a_sets_master_is_refused_and_the_hold_lapses_by_itself(cluster, tmp_path):
    data_dirs = [s.process.data_dir for s in cluster.storages]
    with pytest.raises(AdminError, match="no writable storage of replica set"):
        await asyncio.to_thread(cluster_backup, tmp_path / "half", data_dirs[:1])
    assert not (tmp_path / "half").exists()
    with pytest.raises(AdminError, match="no running Tarantool"):
        await asyncio.to_thread(cluster_backup, tmp_path / "none", [tmp_path / "nowhere", *data_dirs])
    assert not (tmp_path / "none").exists()

    # A backup's process gone while it holds the buckets: the rebalancer runs again once the
    # lease is out; one an operator disabled stays disabled after a backup.
    first, second = cluster.storages
    active = "return vshard.storage.internal.is_rebalancer_active"
    first.eval("require('sessions.sharded').hold_buckets(0.2)")
    assert first.eval(active) is False
    deadline = time.monotonic() + 5
    while first.eval(active) is not True:
        assert time.monotonic() < deadline, "the hold did not lapse"
        await asyncio.sleep(0.05)
    second.eval("vshard.storage.rebalancer_disable()")
    await asyncio.to_thread(cluster_backup, tmp_path / "backup", data_dirs)
    assert [first.eval(active), second.eval(active)] == [True, False]


def _send(bucket: int, to: str) -> str:
    return (
        f"local ok, err = vshard.storage.bucket_send({bucket}, '{to}', {{timeout = 10}}) "
        "return ok == true or tostring(err)"
    )


_FIRST_ACTIVE = "return box.space._bucket.index.status:min({'active'}).id"
_HOLD_GC = "vshard.storage.internal.errinj.ERRINJ_BUCKET_GC_PAUSE = {}"


async def test_a_backup_is_refused_while_buckets_move_or_when_a_checkpoint_holds_one_moving(
    cluster, tmp_path, monkeypatch
):
    first, second = cluster.storages
    data_dirs = [s.process.data_dir for s in cluster.storages]
    # A bucket sent while vshard's garbage collector is held stays `sent` on its old set: the
    # backup waits for it, then gives up.
    first.eval(_HOLD_GC.format("true"))
    try:
        assert first.eval(_send(first.eval(_FIRST_ACTIVE), second.replicaset)) is True
        with pytest.raises(
            AdminError, match=r"buckets still moving after 1 s \(replica set 1: 1 buckets are sent"
        ):
            await asyncio.to_thread(cluster_backup, tmp_path / "moving", data_dirs, settle_within=1)
        assert not (tmp_path / "moving").exists()
    finally:
        first.eval(_HOLD_GC.format("false"))
    deadline = time.monotonic() + 10
    while any(_moving(cluster)):
        assert time.monotonic() < deadline, _moving(cluster)
        await asyncio.sleep(0.05)

    # A bucket sent by hand after the wait, before the checkpoints (the rebalancer's hold
    # does not stop a manual send): its old set's checkpoint holds it as sent, refused.
    bucket = second.eval(_FIRST_ACTIVE)
    settle = cluster_module._settle

    def then_send(masters: Any, within: float) -> None:
        settle(masters, within)
        second.eval(_HOLD_GC.format("true"))
        assert second.eval(_send(bucket, first.replicaset)) is True

    monkeypatch.setattr(cluster_module, "_settle", then_send)
    try:
        with pytest.raises(
            AdminError, match=f"bucket {bucket} was (sent|garbage) in replica set 2's checkpoint"
        ):
            await asyncio.to_thread(cluster_backup, tmp_path / "moved", data_dirs)
    finally:
        second.eval(_HOLD_GC.format("false"))
    assert not (tmp_path / "moved").exists()
    assert [s.eval("return vshard.storage.internal.is_rebalancer_active") for s in cluster.storages] == [
        True
    ] * 2
