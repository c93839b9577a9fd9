"""Run a Python script on uvloop, the event loop the broker's CLI uses, so both sides compare alike.

python benchmarks/uvloop_run.py SCRIPT [ARGS...]
"""

from __future__ import annotations

import asyncio
import contextlib
import runpy
import sys

with contextlib.suppress(ImportError):
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
