"""Typed keys of the objects the application holds."""

from __future__ import annotations

from aiohttp import web

from .config import Settings
from .storage import Storage

__all__ = ["SETTINGS", "STORAGE"]

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
