"""A network link between two local Tarantool instances that a test can cut and heal: a
relay from a Unix socket of its own to an instance's socket, run on a thread of its own so
that blocking calls of the test (consoles, `promote`) never stall it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path


class Link:
    """Connections to `listen` reach `target` while the link is up. `cut()` closes every
    connection through it and refuses new ones (each is closed at once, as a peer across a
    dead network is never reached); `heal()` lets them through again. `cut(silent=True)`
    leaves every connection open but carries nothing on it ever again, and holds new ones
    open without a word until the link heals: a peer that left the network without closing
    anything and comes back at another address (a container disconnected and reconnected)."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.listen = listen
        self.target = target
        self.address = f"unix/:{listen}"
        self._up = True
        self._silent = False
        # Connections a silent cut left open, which carry nothing from then on.
        self._dead: set[asyncio.StreamWriter] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"link-{listen.name}", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> Link:
        self._thread.start()
        assert self._ready.wait(10), "the link did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self, *, silent: bool = False) -> None:
        asyncio.run_coroutine_threadsafe(self._set(up=False, silent=silent), self._loop).result(10)

    def heal(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(up=True), self._loop).result(10)

    async def _set(self, *, up: bool, silent: bool = False) -> None:
        self._up, self._silent = up, silent
        if silent:
            self._dead |= self._writers
        elif not up:
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_unix_server(self._serve, path=self.listen))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for writer in self._writers:
                writer.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up and self._silent:
            self._dead.add(writer)
            while await reader.read(65536):
                pass
            return
        if not self._up:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pump(
            source: asyncio.StreamReader, source_writer: asyncio.StreamWriter, sink: asyncio.StreamWriter
        ) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while chunk := await source.read(65536):
                    if sink in self._dead or source_writer in self._dead:
                        continue
                    if not self._up:
                        break
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(
            pump(reader, writer, upstream_writer), pump(upstream_reader, upstream_writer, writer)
        )
        self._writers -= {writer, upstream_writer}
