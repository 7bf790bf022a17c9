"""Debian's headless Chromium driven over the DevTools protocol (aiohttp's WebSocket client),
for tests that use a page as a person would: no driver or browser download needed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,4000",
]


class Page:
    """One tab: evaluate JavaScript in it and wait for what it returns."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._socket.send_str(json.dumps({"id": number, "method": method, "params": params}))
        async for message in self._socket:
            data = json.loads(message.data)
            if data.get("id") == number:
                if "error" in data:
                    raise RuntimeError(data["error"])
                result: dict[str, Any] = data["result"]
                return result
        raise RuntimeError("the browser closed the connection")

    async def evaluate(self, script: str, *, within: float = 60) -> Any:
        """What `script` gives, awaited if it is a promise, within `within` seconds."""
        async with asyncio.timeout(within):
            answer = await self.send(
                "Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True
            )
        if "exceptionDetails" in answer:
            raise RuntimeError(answer["exceptionDetails"])
        return answer["result"].get("value")


async def _loaded(page: Page, url: str, within: float = 60) -> None:
    """Wait until the tab shows `url`, loaded (a script run before would be thrown away)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        with contextlib.suppress(RuntimeError, TimeoutError):
            if (
                await page.evaluate("location.href + ' ' + document.readyState", within=5)
                == f"{url} complete"
            ):
                return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"{url} did not load")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def browser_page(url: str, profile: Path) -> AsyncIterator[Page]:
    """A Chromium of its own (profile in `profile`) showing `url`; stopped afterwards."""
    process = await asyncio.create_subprocess_exec(
        "chromium",
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        endpoint = None
        async with asyncio.timeout(60):
            while endpoint is None:
                line = (await process.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("chromium exited before it listened")
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                endpoint = found and found.group(1)
        port = int(endpoint.split(":")[2].split("/")[0])
        async with aiohttp.ClientSession() as http:
            async with http.put(f"http://127.0.0.1:{port}/json/new?{url}") as answer:
                target = await answer.json(content_type=None)
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                page = Page(socket)
                await page.send("Runtime.enable")
                await _loaded(page, url)
                yield page
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
