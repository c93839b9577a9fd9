"""`simulate` entry: terminal chat, web page (`--web`) or a conversation script (`--script`)."""

from __future__ import annotations

import argparse
import asyncio

from bot.settings import Settings


def run_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Every simulation starts from an empty private Redis (unless REDIS_URL is set)."""
    if args.script:
        from bot.sim.script import run_script

        return asyncio.run(run_script(settings, args.script, llm=args.llm))
    if args.web:
        from bot.sim.web import run_web

        return asyncio.run(run_web(settings, args.port))
    from bot.sim.terminal import run_terminal

    return asyncio.run(run_terminal(settings))
