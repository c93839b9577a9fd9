"""(A copy of ../shared/bench/reference_ack.py, used by benchmarks/run.py when ../shared is absent.)

The ceiling for the webhook's ack path on this machine: the least an aiohttp service can do
to accept a Braze webhook durably (parse JSON, one pipelined Redis round trip: SET NX + XADD).

A benchmark drives this and the broker with the same load generator in the same run and reports
broker / reference, so the figure holds on a noisy shared machine.

    python reference_ack.py --port 8199 --redis-url redis://127.0.0.1:6379/15
    POST http://127.0.0.1:8199/webhooks/braze/whatsapp  (any body of the contract's shape)
"""

import argparse
import hashlib

import redis.asyncio as redis
from aiohttp import web

REDIS: web.AppKey[redis.Redis] = web.AppKey("redis", redis.Redis)


async def accept(request: web.Request) -> web.Response:
    raw = await request.read()
    body = await request.json()
    conv = body.get("user_id") or body["phone_number"]
    digest = hashlib.sha256(raw).hexdigest()
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        pipe.set(f"ref:dedupe:{conv}:{digest}", 1, nx=True, ex=1800)
        pipe.xadd("ref:inbound", {"conv": conv, "raw": raw})
        fresh, _ = await pipe.execute()
    if not fresh:
        return web.json_response({"status": "duplicate"})
    return web.json_response({"status": "accepted"}, status=202)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    async def redis_ctx(app: web.Application):
        app[REDIS] = redis.Redis.from_url(args.redis_url)
        yield
        await app[REDIS].aclose()

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/webhooks/braze/whatsapp", accept)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
