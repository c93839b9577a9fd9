"""`python -m bot simulate`: chat with the bot in a terminal, or pipe one message per line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading

from bot.settings import Settings
from bot.sim.braze_standin import Delivered
from bot.sim.session import SimUser, format_delivery, simulation

HELP = """Type a message and press Enter. Commands:
  /user ID [PHONE]   talk as another customer (ID "-" for one known only by phone)
  /status            show the conversation's status
  /quit              leave (Ctrl-D works too)"""


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    """Lines of standard input, "" at its end. A daemon thread reads them, so a Ctrl-C never waits
    for a blocked read before the simulator can shut down."""
    lines: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return lines


async def _next_line(lines: asyncio.Queue[str], stop: asyncio.Event) -> str:
    """The next line, or "" once Ctrl-C asked to stop."""
    reading = asyncio.ensure_future(lines.get())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if reading.done():
        return reading.result()
    reading.cancel()
    return ""


async def run_terminal(settings: Settings) -> int:
    interactive = sys.stdin.isatty()
    user = SimUser(user_id="sim-user-1", phone="+15550000001", name="Sim")
    async with simulation(settings) as sim:

        def show(item: Delivered) -> None:
            if interactive and item.user != user.address:
                print(f"\n[to {item.user}] {format_delivery(item)}", flush=True)
                return
            print(format_delivery(item), flush=True)

        sim.standin.on_delivery(show)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, stop.set)
        lines = _stdin_lines(loop)
        if interactive:
            print(f"Chatting with the bot as {user.user_id} ({settings.backend} backend). {HELP}", flush=True)
            print(
                f"Answer as a human agent at {sim.broker_url}/agent (sign in with token {sim.agent_token})",
                flush=True,
            )
        while True:
            line = await _next_line(lines, stop)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if interactive and text.startswith("/"):
                command, *args = text.split()
                if command == "/quit":
                    break
                if command == "/user" and args:
                    user = SimUser(
                        "" if args[0] == "-" else args[0], args[1] if len(args) > 1 else user.phone
                    )
                    print(f"now talking as {user.address}", flush=True)
                elif command == "/status":
                    state = await sim.runtime.store.state(user.user_id or user.phone)
                    print(f"status: {state.status if state else 'new'}", flush=True)
                else:
                    print(HELP, flush=True)
                continue
            answer = await sim.send(user, text)
            if answer["http_status"] >= 400:
                print(f"error: {answer.get('error', answer)}", file=sys.stderr, flush=True)
                continue
            # Piped input reads like a person who waits for the answer before typing on.
            if not interactive and not await sim.wait_idle():
                print("error: the bot did not finish answering in time", file=sys.stderr)
                return 1
        if stop.is_set():
            print("", flush=True)
            return 0
        if not await sim.wait_idle():
            print("error: the bot did not finish answering in time", file=sys.stderr)
            return 1
    return 0
