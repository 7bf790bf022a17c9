"""Typed keys of the objects the application holds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .auth import ApiKeys
from .config import Settings
from .storage import Storage

__all__ = ["AUTH", "OPS_APP", "SETTINGS", "SHUTDOWN", "STORAGE", "Shutdown"]


class Shutdown:
    """How a part of the app asks the process to stop, and with which exit code."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.exit_code = 0

    def request(self, exit_code: int) -> None:
        self.exit_code = max(self.exit_code, exit_code)
        self.requested.set()


SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
# None: no API keys are configured, every request is let in.
AUTH: web.AppKey[ApiKeys | None] = web.AppKey("auth")
# The application serving the operational endpoints on SESSIONS_OPS_PORT, if one is set.
OPS_APP: web.AppKey[web.Application | None] = web.AppKey("ops_app")
SHUTDOWN = web.AppKey("shutdown", Shutdown)
