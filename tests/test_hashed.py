"""Tokens kept only as hashes (SESSIONS_TOKEN_STORAGE=hash), with real processes: no token in
the data dir (snapshot, WAL, logs) nor in a backup; a store of plain tokens refused in that
mode with one line naming the command that converts it, and a hashed one refused without it;
the conversion of a copy with sessions in it, after which every token still works."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from sessions.console import Console
from sessions.storage import token_key

from .conftest import call, settings_for
from .service import Service, free_port

HASH = {"SESSIONS_TOKEN_STORAGE": "hash"}


def _run(data_dir: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessions", *command],
        env={**os.environ, "SESSIONS_DATA_DIR": str(data_dir), "SESSIONS_PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _issue(service: Service, user_id: int, count: int) -> list[str]:
    """Tokens of `count` sessions, through every answer that makes one: new (one with an
    Idempotency-Key) and rotate; each used by get and a listing read meanwhile."""
    tokens = []
    for i in range(count):
        status, body = service.request(f"/new?user_id={user_id}&ip=192.0.2.{i + 1}")
        assert status == 200, body
        tokens.append(body["data"]["token"])
    status, body = service.request(f"/rotate?token={tokens[0]}")
    assert status == 200 and body["data"]["token"] != tokens[0]
    tokens.append(body["data"]["token"])
    assert service.request(f"/get?token={tokens[-1]}")[0] == 200
    assert service.request(f"/user?id={user_id}")[0] == 200
    return tokens


def _forms(token: str) -> list[bytes]:
    """How a token could sit in a file: as text, either case, and as its 16 bytes."""
    return [token.encode(), token.upper().encode(), uuid.UUID(token).bytes]


def _found(tokens: list[str], blobs: dict[str, bytes]) -> dict[str, list[str]]:
    return {
        token: [name for name, blob in blobs.items() if any(form in blob for form in _forms(token))]
        for token in tokens
        if any(form in blob for blob in blobs.values() for form in _forms(token))
    }


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def _archive(path: Path) -> dict[str, bytes]:
    blobs = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            assert extracted is not None
            blobs[f"{path}:{member.name}"] = extracted.read()
    return blobs


@pytest.mark.parametrize("storage", ["plain", "hash"])
def test_no_token_in_the_data_dir_or_a_backup_of_a_hashed_store(tmp_path, storage):
    """The plain store is the control: the same search finds every token there."""
    data = tmp_path / "data"
    service = Service(data, SESSIONS_TOKEN_STORAGE=storage)
    try:
        tokens = _issue(service, 7, 20)
        # Every token still works, each session with its id and without a token in listings.
        assert all(service.request(f"/get?token={token}")[0] == 200 for token in tokens[1:])
        status, listed = service.request("/user?id=7")
        assert status == 200 and ("token" in listed["data"][0]) is (storage == "plain")
        with Console(data / "tarantool.control") as console:
            console.eval("box.snapshot()")
        done = _run(data, "backup", str(tmp_path / "backup.tar.gz"))
        assert done.returncode == 0, done.stderr
        blobs = {**_files(data), **_archive(tmp_path / "backup.tar.gz")}
        assert any(name.endswith(".snap") for name in blobs) and any(name.endswith(".xlog") for name in blobs)
        found = _found(tokens, blobs)
        if storage == "hash":
            assert found == {}
        else:
            assert set(found) == set(tokens)  # the search works: a plain store holds them all
    finally:
        service.stop(signal.SIGTERM)
    assert service.output().count("Traceback") == 0


def test_a_retried_new_in_a_hashed_store_is_a_conflict_not_a_second_token(tmp_path):
    service = Service(tmp_path / "data", **HASH)
    try:
        first = service.request("/new?user_id=1&ip=192.0.2.1", headers={"Idempotency-Key": "k-1"})
        assert first[0] == 200
        again = service.request("/new?user_id=1&ip=192.0.2.1", headers={"Idempotency-Key": "k-1"})
        assert (again[0], again[1]["code"]) == (409, "idempotency_conflict")
        assert "hashes" in again[1]["message"]
    finally:
        service.stop(signal.SIGTERM)


@pytest.mark.each_release
def test_a_plain_store_is_refused_in_hash_mode_until_converted_and_then_only_in_hash_mode(tmp_path):
    original = tmp_path / "original"
    service = Service(original)
    try:
        tokens = _issue(service, 9, 5)
        body = service.request("/new?user_id=9&ip=192.0.2.9&with=id")[1]
        kept_id = body["data"]["id"]
        tokens.append(body["data"]["token"])
    finally:
        service.stop(signal.SIGTERM)

    refused = _run(original, "serve", **HASH)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if "convert-tokens" in line]
    assert len(lines) == 1 and "sessions convert-tokens" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr

    copy = tmp_path / "copy"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("*.sock", "*.control", "*.pid"))
    # Files a restore moved aside: the conversion leaves them, and says they hold plain tokens.
    aside = copy / "pre-restore-20261201-000000"
    shutil.copytree(copy, aside, ignore=shutil.ignore_patterns("*.sock", "*.control", "*.pid", "*.lock"))
    converted = _run(copy, "convert-tokens")
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout.startswith(f"{len(tokens) - 1} sessions")  # the rotated one is gone
    assert f"{aside}" in converted.stdout and "plain tokens" in converted.stdout, converted.stdout
    assert aside.is_dir()
    shutil.rmtree(aside)
    # The older snapshot and WAL files, which held the tokens, are gone with the conversion.
    assert _found(tokens, _files(copy)) == {}
    assert _run(copy, "convert-tokens").returncode == 0  # a second run changes nothing

    refused = _run(copy, "serve")
    assert refused.returncode == 1 and "SESSIONS_TOKEN_STORAGE=hash" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    service = Service(copy, **HASH)
    try:
        assert service.request(f"/get?token={tokens[0]}")[0] == 404  # rotated away before
        for token in tokens[1:]:
            status, body = service.request(f"/get?token={token}")
            assert (status, body["data"]["token"]) == (200, token)
        status, body = service.request(f"/session?id={kept_id}")
        assert status == 200 and body["data"]["id"] == kept_id
        status, body = service.request(f"/rotate?token={tokens[-1]}")
        assert status == 200 and service.request(f"/get?token={body['data']['token']}")[0] == 200
        status, body = service.request(f"/user/del?id=9&except={tokens[1]}")
        assert (status, body["data"]) == (200, {"deleted": len(tokens) - 2})
    finally:
        service.stop(signal.SIGTERM)
    # The original is untouched: still a plain store, served as one.
    service = Service(original)
    try:
        assert service.request(f"/get?token={tokens[1]}")[0] == 200
    finally:
        service.stop(signal.SIGTERM)


@pytest.mark.each_release
def test_the_key_is_the_same_in_python_and_in_lua(tmp_path):
    token = "61494096-9af7-49ba-9fb4-e89c0811e6d3"
    key = token_key(token)
    assert key != token and uuid.UUID(key).variant == uuid.RFC_4122
    assert token_key(token.upper()) == key
    service = Service(tmp_path / "data")
    try:
        with Console(tmp_path / "data" / "tarantool.control") as console:
            lua = console.eval(
                f"return require('sessions.hashing').key_of(require('uuid').fromstr('{token}')):str()"
            )
        assert lua == key
    finally:
        service.stop(signal.SIGTERM)


def test_a_new_store_a_hashing_service_started_on_is_refused_to_a_plain_one(tmp_path):
    data = tmp_path / "data"
    service = Service(data, **HASH)  # empty: it becomes a hashed store
    service.stop(signal.SIGTERM)
    refused = _run(data, "serve")
    assert refused.returncode == 1 and "SESSIONS_TOKEN_STORAGE=hash" in refused.stderr, refused.stderr
    assert len([line for line in refused.stderr.splitlines() if "hashes" in line]) == 1


@pytest.mark.each_release
def test_a_conversion_under_a_running_service_is_refused_and_its_every_call_after_one(tmp_path):
    data = tmp_path / "data"
    service = Service(data)
    try:
        tokens = _issue(service, 7, 3)
        # The service is connected: the command refuses, in one line, and changes nothing.
        refused = _run(data, "convert-tokens")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "stop it" in refused.stderr, refused.stderr
        assert all(service.request(f"/get?token={token}")[0] == 200 for token in tokens[1:])

        # Converted all the same (as a connection the command could not see would let it):
        # every call of the plain service is refused from then on, a stored key no token.
        with Console(data / "tarantool.control") as console:
            console.eval("package.loaded['sessions.connected'].count = function() return 0 end")
            assert console.eval("return require('sessions.hashing').convert()") == len(tokens) - 1
        answers = [
            service.request(f"/get?token={tokens[1]}"),
            service.request("/get", headers={"X-Session-Token": token_key(tokens[1])}),
            service.request("/new?user_id=7&ip=192.0.2.1"),
            service.request("/user?id=7"),
            service.request("/user/count?id=7"),
        ]
        for status, body in answers:
            assert (status, body["code"]) == (503, "storage_unavailable"), body
            assert "SESSIONS_TOKEN_STORAGE=hash" in body["message"], body
            assert not any(token in body["message"] for token in tokens), body
    finally:
        service.stop(signal.SIGTERM)
    output = service.output()
    assert "Traceback" not in output and not _found(tokens, {"log": output.encode()})
    assert len([line for line in output.splitlines() if "refused the call" in line]) == 1, output

    # Restarted in hash mode on the converted store: nobody was signed out.
    service = Service(data, **HASH)
    # A converted store under its running service is refused all the same.
    refused = _run(data, "convert-tokens")
    assert refused.returncode == 1 and "stop it" in refused.stderr, refused.stderr
    try:
        for token in tokens[1:]:
            assert service.request(f"/get?token={token}")[0] == 200
    finally:
        service.stop(signal.SIGTERM)
    # The configuration it logs says what it does: listings of ids, which hash mode forces.
    assert '"listings":"ids"' in service.output() and '"listings":"tokens"' not in service.output()


async def test_a_plain_service_on_an_empty_store_is_refused_once_a_hashing_one_claims_it(
    serve, fresh_tarantool
):
    """Two services sharing one external store, each started on it while it was empty."""
    plain = await serve(settings_for(fresh_tarantool))
    hashing = await serve(settings_for(fresh_tarantool, token_storage="hash"))  # marks it
    status, body = await call(plain, "/new", params={"user_id": "3", "ip": "192.0.2.1"})
    assert (status, body["code"]) == (503, "storage_unavailable"), body
    assert "SESSIONS_TOKEN_STORAGE=hash" in body["message"]
    assert (await call(hashing, "/new", params={"user_id": "3", "ip": "192.0.2.1"}))[0] == 200
