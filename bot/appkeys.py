"""Typed application keys, all in one module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
