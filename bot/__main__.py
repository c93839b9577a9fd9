"""The command line: `serve`, `worker`, `simulate` (also installed as `whatsapp-broker`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from bot import logs
from bot.errors import ConfigError
from bot.settings import Settings, load_settings
from bot.store.connection import EmbeddedRedis

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whatsapp-broker", description="WhatsApp conversation broker for Braze"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="HTTP service plus in-process workers")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--env-file", default=".env")
    serve.add_argument("--no-worker", action="store_true", help="HTTP only")
    worker = sub.add_parser("worker", help="workers only (needs REDIS_URL)")
    worker.add_argument("--env-file", default=".env")
    worker.add_argument(
        "--health-port", type=int, default=0, help="serve /healthz, /readyz and /metrics on this port"
    )
    simulate = sub.add_parser("simulate", help="chat with the bot locally against a stand-in for Braze")
    simulate.add_argument("--web", action="store_true", help="open the chat in a browser page")
    simulate.add_argument("--script", type=Path, help="run a conversation script and check its expectations")
    simulate.add_argument("--port", type=int, default=0, help="port of the web simulator (default: any free)")
    simulate.add_argument(
        "--llm",
        choices=["faq", "scripted", "env"],
        help="with --script: which model answers, overriding the script's `llm:` (env = OPENAI_* settings)",
    )
    simulate.add_argument("--env-file", default=".env")
    from bot.deadletters import add_cli

    add_cli(sub)
    return parser


def _settings(env_file: str) -> Settings:
    try:
        return load_settings(env_file if Path(env_file).exists() else None)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _refuse(lines: list[str]) -> None:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    raise SystemExit(2)


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running service.

    What exists once the service is imported (modules, the SDK's and pydantic's types) lives as
    long as the process, so it leaves the collector's generations; the youngest generation is
    collected every 50,000 allocations instead of 700. The benchmark's worker spent ~10% less CPU
    per turn this way (README "Scaling").
    """
    import bot.app  # noqa: F401  - the whole service, loaded before the freeze

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def runner_for(app: web.Application) -> web.AppRunner:
    """How `serve` serves the app (the log-capture test serves it the same way)."""
    from bot.web.common import SafeAccessLogger

    return web.AppRunner(
        app, access_log_class=SafeAccessLogger, access_log=logging.getLogger("aiohttp.access")
    )


async def _serve(settings: Settings, redis_url: str, host: str, port: int, workers: bool) -> None:
    from bot.app import create_app

    runner = runner_for(create_app(settings, redis_url, workers=workers))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    logs.event(log, "serving", host=host, port=port, workers=workers, backend=settings.backend)
    try:
        await _until_signalled()
    finally:
        logs.event(log, "stopping")
        await runner.cleanup()


async def _worker(settings: Settings, redis_url: str, health_port: int = 0) -> None:
    from bot.appkeys import RUNTIME
    from bot.runtime import open_runtime
    from bot.web import health

    async with open_runtime(settings, redis_url) as runtime:
        stop = asyncio.Event()
        loops = asyncio.create_task(runtime.run_loops(stop))
        probes = None
        if health_port:
            # Probes and metrics for orchestrators (deploy/k8s): the worker's own runtime, no webhooks.
            app = web.Application()
            app[RUNTIME] = runtime
            app.router.add_get("/healthz", health.healthz)
            app.router.add_get("/readyz", health.readyz)
            app.router.add_get("/metrics", health.metrics)
            probes = web.AppRunner(app, access_log=None)
            await probes.setup()
            await web.TCPSite(probes, "0.0.0.0", health_port).start()
        logs.event(
            log, "worker_started", owner=runtime.owner, backend=settings.backend, health_port=health_port
        )
        await _until_signalled()
        stop.set()
        await loops
        if probes is not None:
            await probes.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args.env_file)
    if args.command == "simulate":
        # Keep stdout for the conversation: only warnings reach the terminal's stderr.
        logs.configure("WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
        from bot.sim.cli import run_simulate

        _install_uvloop()
        return run_simulate(settings, args)
    logs.configure(settings.log_level)
    if args.command == "serve":
        missing = settings.missing_for_serve()
        if missing:
            _refuse(missing)
        embedded = None
        redis_url = settings.redis_url
        if not redis_url:
            embedded = EmbeddedRedis(settings.redis_data_dir).start()
            redis_url = embedded.url
            logs.event(
                log,
                "private_redis_started",
                port=embedded.port,
                data_dir=settings.redis_data_dir,
                note="REDIS_URL unset; set it in production",
            )
        _install_uvloop()
        _tune_gc()
        try:
            asyncio.run(_serve(settings, redis_url, args.host, args.port, not args.no_worker))
        finally:
            if embedded:
                embedded.stop()
        return 0
    if args.command == "dead":
        if not settings.redis_url:
            _refuse(["REDIS_URL is required for `dead` (the broker's Redis)"])
        from bot.deadletters import run_cli

        assert settings.redis_url
        return run_cli(settings.redis_url, settings.queue_partitions, args)
    if args.command == "worker":
        missing = settings.missing_for_worker()
        if not settings.redis_url:
            missing.append("REDIS_URL is required for `worker` (it must share the HTTP tier's Redis)")
        if missing:
            _refuse(missing)
        assert settings.redis_url
        _install_uvloop()
        _tune_gc()
        asyncio.run(_worker(settings, settings.redis_url, args.health_port))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
